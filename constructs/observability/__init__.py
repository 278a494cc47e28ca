"""Observability: dashboards and alarms built with cdk-monitoring-constructs, and X-Ray sampling rules."""

from .facade import RUNBOOK_DIRECTORY, dashboard_facade, runbook_link
from .platform_monitoring import MeshedService, MonitoredQueue, PlatformMonitoring
from .quotas import QUOTAS, ServiceQuota
from .sampling import TraceSampling
from .service_monitoring import CanaryAlarms, LoadBalancerAlarms, MonitoredTasks, ServiceMonitoring
from .spot_interruptions import SpotInterruptionMetric

__all__ = [
    "CanaryAlarms", "LoadBalancerAlarms", "MeshedService", "MonitoredQueue", "MonitoredTasks", "PlatformMonitoring", "QUOTAS",
    "RUNBOOK_DIRECTORY", "ServiceMonitoring", "ServiceQuota", "SpotInterruptionMetric", "TraceSampling",
    "dashboard_facade", "runbook_link",
]
