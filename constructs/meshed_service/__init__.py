from .adot import AdotCollector
from .appmesh import AppMeshBackend, AppMeshSettings
from .extensions import ServiceExtension
from .fault_injection import FaultInjection
from .load_balancer import LoadBalancerTarget, RollbackAlarms
from .props import MeshedServiceProps
from .service import IMAGE_PLATFORM, MeshedFargateService
from .service_connect import Rollout, ServiceConnectMesh
from .traffic_shift import CanaryTraffic, ShiftSettings, TrafficShift
from .worker import WorkerContainer

__all__ = [
    "AdotCollector", "AppMeshBackend", "AppMeshSettings", "CanaryTraffic", "FaultInjection", "IMAGE_PLATFORM", "LoadBalancerTarget",
    "MeshedFargateService", "MeshedServiceProps", "Rollout", "RollbackAlarms", "ServiceConnectMesh", "ServiceExtension", "ShiftSettings",
    "TrafficShift", "WorkerContainer",
]
