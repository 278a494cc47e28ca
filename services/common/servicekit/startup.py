"""What a service or worker process does once it has started."""

from __future__ import annotations

import gc

from .logging import get_logger

log = get_logger(__name__)


def freeze_startup_objects() -> None:
    """Once started (modules, app, clients, caches all built): move every object alive now out of the
    collector's reach (gc.freeze), so its full collections stop walking hundreds of thousands of
    long-lived objects that never become garbage. Collected first so no garbage is frozen with them."""
    gc.collect()
    gc.freeze()
    log.info("start-up objects frozen out of garbage collection", extra={"frozen_objects": gc.get_freeze_count()})
