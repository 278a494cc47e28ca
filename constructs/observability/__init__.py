"""Observability: dashboards and alarms built with cdk-monitoring-constructs, and X-Ray sampling rules."""

from .facade import RUNBOOK_DIRECTORY, dashboard_facade, runbook_link
from .platform_monitoring import LoadBalancerErrors, MeshedService, MonitoredQueue, PlatformMonitoring
from .quota_counter import QuotaCounter
from .quotas import QUOTAS, CountedQuota, ServiceQuota
from .sampling import TraceSampling
from .service_monitoring import MonitoredTasks, ReplicatedTable, ServiceMonitoring, ServiceTable, SloThresholds
from .spot_interruptions import SpotInterruptionMetric

__all__ = [
    "CountedQuota", "LoadBalancerErrors", "MeshedService", "MonitoredQueue", "MonitoredTasks",
    "PlatformMonitoring", "QUOTAS", "QuotaCounter", "ReplicatedTable",
    "RUNBOOK_DIRECTORY", "ServiceMonitoring", "ServiceQuota", "ServiceTable", "SloThresholds", "SpotInterruptionMetric", "TraceSampling",
    "dashboard_facade", "runbook_link",
]
