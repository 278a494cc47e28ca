"""Run a queue consumer as a process: SIGTERM/SIGINT finish the message in hand (the rest of its batch goes back to the queue), then exit 0.
The message in hand gets SHUTDOWN_TIMEOUT_SECONDS at most; then it is cut off and comes back when its claim's lease
ends (servicekit.events), before ECS's SIGKILL at the end of its stop timeout.
Runners beside the consumer (e.g. vc-start's session sweeper) get the same stop signal.

Once its consumer is built, the objects built so far are frozen out of garbage collection, as in a
service process (startup.freeze_startup_objects)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from .events import QueueConsumer
from .logging import configure_logging, get_logger
from .settings import ServiceSettings
from .startup import freeze_startup_objects
from .tracing import configure_telemetry

log = get_logger(__name__)


class RunnerFailed(Exception):
    """A runner of the worker failed (already logged)."""


class Runner(Protocol):
    """What a worker process runs: the queue consumer, and anything beside it (vc-start's sweeper)."""

    async def run_until(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set, then return; handle its own errors (one that escapes stops the process)."""
        ...


async def serve_worker(consumer: QueueConsumer, stop_event: asyncio.Event | None = None, *, alongside: Sequence[Runner] = ()) -> None:
    """Consume, and run the ``alongside`` runners, until SIGTERM/SIGINT (or `stop_event`). Raises RunnerFailed
    (from the first error that escaped a runner) once all have stopped; each error is logged."""
    stop = stop_event or asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        log.info("received %s: finishing the message in hand (within SHUTDOWN_TIMEOUT_SECONDS)", sig.name)
        stop.set()

    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread / platform
            pass
    try:
        # Whichever ends first (stopped, or failed) stops the others, so the consumer still finishes its message.
        runners = [consumer, *alongside]
        results = await asyncio.gather(*(_then_stop(runner.run_until(stop), stop) for runner in runners), return_exceptions=True)
        failures = [result for result in results if isinstance(result, BaseException)]
        for failure in failures:
            log.error("worker runner failed: %s: %s", type(failure).__name__, failure, exc_info=failure)
        if failures:
            raise RunnerFailed(f"{len(failures)} worker runner(s) failed") from failures[0]
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def _then_stop(run: Awaitable[None], stop: asyncio.Event) -> None:
    try:
        await run
    finally:
        stop.set()


def run_worker(settings: ServiceSettings, consumer: QueueConsumer | Callable[[], QueueConsumer], *,
               alongside: Callable[[], Sequence[Runner]] | None = None) -> None:
    """Entry point of `python -m <service>.worker`. `consumer` may be a factory, and `alongside` is one:
    both are called after logging and telemetry are configured, so clients they build are instrumented."""
    configure_logging(settings.service_name, settings.log_level, json_format=settings.instrumentation)
    telemetry = configure_telemetry(settings)
    if not isinstance(consumer, QueueConsumer):
        consumer = consumer()
    runners = alongside() if alongside else ()
    freeze_startup_objects()
    try:
        asyncio.run(serve_worker(consumer, alongside=runners))
    except RunnerFailed:
        raise SystemExit(1) from None  # logged by serve_worker
    finally:
        telemetry.shutdown()
    log.info("worker stopped")
