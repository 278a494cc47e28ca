"""Run a queue consumer as a process: SIGTERM/SIGINT finish the message in hand (the rest of its batch goes back to the queue), then exit 0.

Once its consumer is built, the objects built so far are frozen out of garbage collection, as in a
service process (startup.freeze_startup_objects)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from .events import QueueConsumer
from .logging import configure_logging, get_logger
from .settings import ServiceSettings
from .startup import freeze_startup_objects
from .tracing import configure_telemetry

log = get_logger(__name__)


async def serve_worker(consumer: QueueConsumer, stop_event: asyncio.Event | None = None) -> None:
    """Consume until SIGTERM/SIGINT (or `stop_event`)."""
    stop = stop_event or asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        log.info("received %s: finishing the message in hand", sig.name)
        stop.set()

    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread / platform
            pass
    try:
        await consumer.run_until(stop)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def run_worker(settings: ServiceSettings, consumer: QueueConsumer | Callable[[], QueueConsumer]) -> None:
    """Entry point of `python -m <service>.worker`. `consumer` may be a factory (called after logging
    and telemetry are configured, so clients it builds are instrumented)."""
    configure_logging(settings.service_name, settings.log_level, json_format=settings.instrumentation)
    telemetry = configure_telemetry(settings)
    if not isinstance(consumer, QueueConsumer):
        consumer = consumer()
    freeze_startup_objects()
    try:
        asyncio.run(serve_worker(consumer))
    finally:
        telemetry.shutdown()
    log.info("worker stopped")
