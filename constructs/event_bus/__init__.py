from .event_bus import EventContract, EventArchiveAndSchemas, restrict_publishers
from .schemas import registry_schema

__all__ = ["EventContract", "EventArchiveAndSchemas", "registry_schema", "restrict_publishers"]
