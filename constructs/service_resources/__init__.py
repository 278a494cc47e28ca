from .service_resources import TABLE_ACTIONS, EventSubscription, ServiceResources

__all__ = ["TABLE_ACTIONS", "EventSubscription", "ServiceResources"]
