"""Operations: SSM Automation documents for the actions the runbooks take by hand (rollback, failover)."""

from .region_failover import RegionFailoverAutomation
from .service_rollback import ServiceRollbackAutomation

__all__ = ["RegionFailoverAutomation", "ServiceRollbackAutomation"]
