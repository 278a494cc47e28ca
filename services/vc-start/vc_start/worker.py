"""`python -m vc_start.worker`: the event-driven half of the saga (SlotConfirmed / SlotReleased from QUEUE_URL)."""

from __future__ import annotations

from servicekit import aws
from servicekit.events import EventPublisher, QueueConsumer
from servicekit.worker import run_worker

from vc_start.handlers import SessionEventHandlers
from vc_start.settings import VcStartSettings
from vc_start.store import SessionStore


def build_consumer(settings: VcStartSettings) -> QueueConsumer:
    if not settings.table_name:
        raise ValueError("TABLE_NAME must be set")
    handlers = SessionEventHandlers(
        store=SessionStore(
            aws.client("dynamodb", settings), settings.table_name, pending_timeout_seconds=settings.session_pending_timeout_seconds
        ),
        publisher=EventPublisher(settings),
    )
    # Dedupe markers (EVENT#<id>) live in vc-start's own table.
    return QueueConsumer(settings, handlers.handlers(), table_name=settings.table_name)


def main() -> None:
    settings = VcStartSettings()
    # A factory: clients are built after run_worker configured logging and telemetry.
    run_worker(settings, lambda: build_consumer(settings))


if __name__ == "__main__":
    main()
