from .service_resources import EventSubscription, ServiceResources

__all__ = ["EventSubscription", "ServiceResources"]
