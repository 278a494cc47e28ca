"""`python -m vc_start.worker`: the event-driven half of the saga (SlotConfirmed / SlotReleased from QUEUE_URL),
and the session sweeper beside it (sweeper.py)."""

from __future__ import annotations

from servicekit.events import EventPublisher, QueueConsumer
from servicekit.worker import run_worker

from vc_start.handlers import SessionEventHandlers
from vc_start.settings import VcStartSettings
from vc_start.store import SessionStore
from vc_start.sweeper import SessionSweeper


def build_consumer(settings: VcStartSettings) -> QueueConsumer:
    handlers = SessionEventHandlers(store=SessionStore.from_settings(settings), publisher=EventPublisher(settings))
    # Dedupe markers (EVENT#<id>) live in vc-start's own table.
    return QueueConsumer(settings, handlers.handlers(), table_name=settings.table_name)


def build_sweeper(settings: VcStartSettings) -> SessionSweeper:
    return SessionSweeper(store=SessionStore.from_settings(settings), publisher=EventPublisher(settings),
                          interval_seconds=settings.session_sweep_interval_seconds)


def main() -> None:
    settings = VcStartSettings()
    # Factories: clients are built after run_worker configured logging and telemetry.
    run_worker(settings, lambda: build_consumer(settings), alongside=lambda: [build_sweeper(settings)])


if __name__ == "__main__":
    main()
