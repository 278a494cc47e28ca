from .edge import API_PATH_PATTERN, EdgeDistribution, RegionalOrigin
from .origin_facing import CloudFrontOriginFacing
from .regional import IngressRoute, RegionalIngress, RoutedTargets
from .regional_dns import RegionalDnsRecord
from .waf import EdgeWebAcl

__all__ = [
    "API_PATH_PATTERN", "CloudFrontOriginFacing", "EdgeDistribution", "EdgeWebAcl", "IngressRoute", "RegionalDnsRecord",
    "RegionalIngress", "RegionalOrigin", "RoutedTargets",
]
