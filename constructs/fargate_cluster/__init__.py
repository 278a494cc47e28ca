from .fargate_cluster import FargateCluster

__all__ = ["FargateCluster"]
