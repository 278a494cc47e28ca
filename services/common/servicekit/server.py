"""Run a service: uvicorn (+ optional grpc.aio server) with a graceful drain on SIGTERM/SIGINT.

Shutdown sequence (ECS sends SIGTERM, then SIGKILL after the 30 s stop timeout):
  1. signal -> Health.mark_draining(): /health/ready answers 503 so the ALB deregisters the task,
     while both servers keep serving for DRAIN_SECONDS;
  2. stop accepting (HTTP listener closed, gRPC server.stop(grace)), in-flight requests get up to
     SHUTDOWN_TIMEOUT_SECONDS;
  3. lifespan shutdown, telemetry flushed, exit 0.
A second SIGINT/SIGTERM skips the rest of the drain period.

Once started, the objects built so far are frozen out of garbage collection (startup.freeze_startup_objects).
"""

from __future__ import annotations

import asyncio
import inspect
import signal
import time
from collections.abc import Callable
from typing import Any

import uvicorn

from .health import Health
from .logging import configure_logging, get_logger
from .settings import ServiceSettings
from .startup import freeze_startup_objects

log = get_logger(__name__)

GrpcServerFactory = Callable[[ServiceSettings], Any]


class DrainingServer(uvicorn.Server):
    """uvicorn.Server whose first signal starts a drain period instead of stopping at once."""

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        health: Health | None,
        drain_seconds: float,
        grpc_server: Any = None,
        grpc_grace_seconds: float = 0.0,
    ) -> None:
        super().__init__(config)
        self.health = health
        self.drain_seconds = drain_seconds
        self.grpc_server = grpc_server
        self.grpc_grace_seconds = grpc_grace_seconds
        self.drain_started_at: float | None = None

    def handle_exit(self, sig: int, frame: Any) -> None:
        # Not recorded in _captured_signals: uvicorn would re-raise it after shutdown and the
        # process would die by the signal (exit 143) instead of exiting 0.
        if self.drain_started_at is None:
            log.info("received %s: draining for %.1f s", signal.Signals(sig).name, self.drain_seconds)
            self.begin_drain()
        elif sig == signal.SIGINT and self.should_exit:
            self.force_exit = True
        else:
            log.info("received %s again: stopping now", signal.Signals(sig).name)
            self.should_exit = True

    def begin_drain(self) -> None:
        """Start draining (what SIGTERM does); usable from tests and embedding code."""
        if self.drain_started_at is not None:
            return
        self.drain_started_at = time.monotonic()
        if self.health is not None:
            self.health.mark_draining()
        if self.drain_seconds <= 0:
            self.should_exit = True

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            freeze_startup_objects()

    async def on_tick(self, counter: int) -> bool:
        if self.drain_started_at is not None and not self.should_exit:
            if time.monotonic() - self.drain_started_at >= self.drain_seconds:
                log.info("drain period over: no longer accepting connections")
                self.should_exit = True
        return await super().on_tick(counter)

    async def shutdown(self, sockets: Any = None) -> None:
        # HTTP and gRPC stop accepting together and finish their in-flight work concurrently.
        if self.grpc_server is None:
            await super().shutdown(sockets=sockets)
            return
        grpc_stopped = asyncio.ensure_future(self.grpc_server.stop(self.grpc_grace_seconds))
        # uvicorn runs the lifespan shutdown (closing the clients the app's handlers use) as soon as
        # HTTP is done; in-flight gRPC calls use the same clients, so it waits for gRPC too.
        lifespan_shutdown = self.lifespan.shutdown

        async def shutdown_after_grpc() -> None:
            await asyncio.shield(grpc_stopped)
            await lifespan_shutdown()

        self.lifespan.shutdown = shutdown_after_grpc  # type: ignore[method-assign]
        try:
            await super().shutdown(sockets=sockets)
        finally:
            self.lifespan.shutdown = lifespan_shutdown  # type: ignore[method-assign]
            await grpc_stopped


def build_server(app: Any, settings: ServiceSettings, *, grpc_server: Any = None, host: str | None = None) -> DrainingServer:
    """The HTTP server on BIND_HOST:PORT (``host`` overrides BIND_HOST)."""
    config = uvicorn.Config(
        app,
        host=settings.bind_host if host is None else host,
        port=settings.port,
        log_config=None,  # configure_logging owns the handlers
        access_log=False,  # the app writes its own access line
        lifespan="on",
        timeout_graceful_shutdown=settings.shutdown_timeout_seconds,  # type: ignore[arg-type]
        # Longer than the ALB idle timeout (60 s) so the ALB, not us, closes idle connections.
        timeout_keep_alive=65,
        server_header=False,
    )
    return DrainingServer(
        config,
        health=getattr(getattr(app, "state", None), "health", None),
        drain_seconds=settings.drain_seconds,
        grpc_server=grpc_server,
        grpc_grace_seconds=settings.shutdown_timeout_seconds,
    )


async def serve(app: Any, settings: ServiceSettings, *, grpc_server_factory: GrpcServerFactory | None = None,
                host: str | None = None) -> None:
    """Async body of `run` (tests and embedding code can await it). The gRPC server, if any, binds where its
    factory says (persona's: ``settings.bind_address(GRPC_PORT)``, the same BIND_HOST)."""
    grpc_server = None
    if grpc_server_factory is not None:
        grpc_server = grpc_server_factory(settings)
        if inspect.isawaitable(grpc_server):
            grpc_server = await grpc_server
        await grpc_server.start()
        log.info("gRPC server started")
    server = build_server(app, settings, grpc_server=grpc_server, host=host)
    try:
        await server.serve()
    finally:
        if grpc_server is not None and not server.started:
            # uvicorn never started (e.g. port in use): don't leave gRPC running.
            await grpc_server.stop(0)
    if not server.started:
        raise SystemExit(3)


def run(app: Any, settings: ServiceSettings, *, grpc_server_factory: GrpcServerFactory | None = None) -> None:
    """Serve until SIGTERM/SIGINT, drain, flush telemetry, return (exit status 0)."""
    if not getattr(getattr(app, "state", None), "settings", None):
        configure_logging(settings.service_name, settings.log_level, json_format=settings.instrumentation)
    try:
        asyncio.run(serve(app, settings, grpc_server_factory=grpc_server_factory))
    finally:
        telemetry = getattr(getattr(app, "state", None), "telemetry", None)
        if telemetry is not None:
            telemetry.shutdown()
    log.info("stopped")
