from .dead_letter import target_dead_letter_queue
from .event_bus import EventContract, EventArchiveAndSchemas, restrict_publishers
from .schemas import registry_schema

__all__ = ["EventContract", "EventArchiveAndSchemas", "registry_schema", "restrict_publishers", "target_dead_letter_queue"]
