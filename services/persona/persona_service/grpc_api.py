"""persona's gRPC API (mf.persona.v1.PersonaService) and the standard grpc.health.v1 service."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import grpc
from botocore.exceptions import BotoCoreError, ClientError
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from mf.persona.v1 import persona_pb2, persona_pb2_grpc
from servicekit import aws
from servicekit.aws import run_sync
from servicekit.correlation import correlation_scope, from_grpc_metadata
from servicekit.errors import ApiError
from servicekit.health import Health
from servicekit.logging import get_logger

from . import store as st

log = get_logger(__name__)

SERVICE_NAME = persona_pb2.DESCRIPTOR.services_by_name["PersonaService"].full_name
_STATUS = {
    st.HELD: persona_pb2.RESERVATION_STATUS_HELD,
    st.CONFIRMED: persona_pb2.RESERVATION_STATUS_CONFIRMED,
    st.RELEASED: persona_pb2.RESERVATION_STATUS_RELEASED,
}


def _timestamp(iso: str) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(datetime.fromisoformat(iso))
    return ts


def persona_message(p: st.Persona) -> persona_pb2.Persona:
    return persona_pb2.Persona(
        persona_id=p.persona_id,
        display_name=p.display_name,
        attributes=p.attributes,
        max_sessions=p.max_sessions,
        reserved=p.reserved,
        created_at=_timestamp(p.created_at),
        updated_at=_timestamp(p.updated_at),
    )


def reservation_message(r: st.Reservation) -> persona_pb2.Reservation:
    msg = persona_pb2.Reservation(persona_id=r.persona_id, session_id=r.session_id, status=_STATUS[r.status], reason=r.reason or "")
    if r.status == st.HELD and r.hold_expires_at is not None:
        msg.expires_at.FromSeconds(r.hold_expires_at)
    return msg


Handler = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[Any]]


def _rpc(method: Handler) -> Handler:
    """Restore the caller's correlation id and turn domain errors into gRPC status codes."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        with correlation_scope(from_grpc_metadata(context.invocation_metadata())):
            try:
                return await method(self, request, context)
            except st.PersonaNotFound as exc:
                await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
            except st.NoSlotAvailable as exc:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            except st.StoreConflict as exc:
                await context.abort(grpc.StatusCode.ABORTED, str(exc))
            except st.InvalidPageToken as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            except st.StoreUnavailable as exc:
                log.warning("storage unavailable", extra={"rpc": method.__name__, "aws_error": exc.aws_error, "reason": str(exc)})
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"storage unavailable ({exc}); retry")
            except (ClientError, BotoCoreError) as exc:
                if not aws.is_unavailable(exc):
                    raise
                # The caller may retry: ReserveSlot/ReleaseSlot are idempotent.
                reason = aws.error_code(exc) or type(exc).__name__
                log.warning("storage unavailable", extra={"rpc": method.__name__, "aws_error": reason})
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"storage unavailable ({reason}); retry")

    return wrapper


class PersonaServicer(persona_pb2_grpc.PersonaServiceServicer):
    def __init__(self, store: st.PersonaStore, verifier: Any) -> None:
        self._store = store
        self._verifier = verifier

    async def _owner(self, context: grpc.aio.ServicerContext) -> str:
        """The caller's user id (JWT sub) from the `authorization: Bearer <jwt>` metadata."""
        header = next((v for k, v in context.invocation_metadata() or () if k == "authorization"), None)
        scheme, _, token = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing bearer token in the authorization metadata")
        try:
            claims = await self._verifier.verify(token.strip())
        except ApiError as exc:
            status = grpc.StatusCode.UNAVAILABLE if exc.status == 503 else grpc.StatusCode.UNAUTHENTICATED
            await context.abort(status, exc.message)
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "token has no subject")
        return sub

    @staticmethod
    async def _persona_id(request: Any, context: grpc.aio.ServicerContext) -> str:
        # A malformed id cannot name a persona: same answer as an unknown one.
        if not st.ID_PATTERN.fullmatch(request.persona_id):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"persona {request.persona_id[:128]!r} not found")
        return request.persona_id

    @staticmethod
    async def _session_id(request: Any, context: grpc.aio.ServicerContext) -> str:
        if not st.ID_PATTERN.fullmatch(request.session_id):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "session_id must be 1-128 characters of [A-Za-z0-9_-]")
        return request.session_id

    @_rpc
    async def GetPersona(self, request: persona_pb2.GetPersonaRequest, context: grpc.aio.ServicerContext) -> persona_pb2.Persona:
        owner = await self._owner(context)
        persona_id = await self._persona_id(request, context)
        return persona_message(await run_sync(self._store.get, persona_id, owner))

    @_rpc
    async def ListPersonas(
        self, request: persona_pb2.ListPersonasRequest, context: grpc.aio.ServicerContext
    ) -> persona_pb2.ListPersonasResponse:
        owner = await self._owner(context)
        if request.page_size < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "page_size must not be negative")
        # 0 asks for the default; more than the maximum gets the maximum (AIP-158).
        page_size = min(request.page_size or st.DEFAULT_PAGE_SIZE, st.MAX_PAGE_SIZE)
        page = await run_sync(self._store.list, owner, limit=page_size, page_token=request.page_token or None)
        return persona_pb2.ListPersonasResponse(items=[persona_message(p) for p in page.items], next_page_token=page.next_page_token or "")

    @_rpc
    async def ReserveSlot(self, request: persona_pb2.ReserveSlotRequest, context: grpc.aio.ServicerContext) -> persona_pb2.Reservation:
        owner = await self._owner(context)
        persona_id = await self._persona_id(request, context)
        session_id = await self._session_id(request, context)
        reservation = await run_sync(self._store.reserve, persona_id, session_id, owner)
        log.info("slot reserved", extra={"persona_id": persona_id, "session_id": session_id, "status": reservation.status})
        return reservation_message(reservation)

    @_rpc
    async def ReleaseSlot(self, request: persona_pb2.ReleaseSlotRequest, context: grpc.aio.ServicerContext) -> persona_pb2.Reservation:
        owner = await self._owner(context)
        persona_id = await self._persona_id(request, context)
        session_id = await self._session_id(request, context)
        if request.reason and not st.REASON_PATTERN.fullmatch(request.reason):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "reason must be snake_case: a-z, 0-9 and _, at most 64 characters")
        reason = request.reason or "released"
        reservation = await run_sync(self._store.release, persona_id, session_id, reason, owner=owner)
        log.info("slot released", extra={"persona_id": persona_id, "session_id": session_id, "reason": reservation.reason})
        return reservation_message(reservation)


class ReadinessHealthServicer(health.aio.HealthServicer):
    """grpc.health.v1 answering SERVING exactly when the service is ready (HTTP /health/ready agrees)."""

    REFRESH_SECONDS = 1.0  # probes may come often; readiness checks touch DynamoDB

    def __init__(self, readiness: Health, services: tuple[str, ...] = ("", SERVICE_NAME)) -> None:
        super().__init__()
        self._readiness = readiness
        self._services = services
        self._checked_at = float("-inf")
        self._task: asyncio.Task[None] | None = None
        # Draining must show on the very next Check, not after the cached answer ages out.
        readiness.on_drain(self._invalidate)

    def _invalidate(self) -> None:
        self._checked_at = float("-inf")

    async def refresh(self) -> bool:
        ready, report = await self._readiness.readiness()
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in self._services:
            await self.set(service, status)
        self._checked_at = time.monotonic()
        if not ready:
            log.info("grpc health: not serving", extra={"readiness": report})
        return ready

    def start_refreshing(self, interval: float = 2.0) -> None:
        """Re-evaluate readiness in the background too, so Watch streams see drains and outages."""

        async def loop() -> None:
            while True:
                try:
                    await self.refresh()
                except Exception:  # never let the probe loop die
                    log.exception("grpc health refresh failed")
                await asyncio.sleep(interval)

        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(loop(), name="grpc-health-refresh")

    def stop_refreshing(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _maybe_refresh(self) -> None:
        if time.monotonic() - self._checked_at >= self.REFRESH_SECONDS:
            await self.refresh()

    async def Check(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext) -> health_pb2.HealthCheckResponse:
        await self._maybe_refresh()
        return await super().Check(request, context)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext) -> None:
        await self._maybe_refresh()
        await super().Watch(request, context)


def build_grpc_server(
    store: st.PersonaStore, verifier: Any, readiness: Health, *, bind: str
) -> tuple[grpc.aio.Server, int, ReadinessHealthServicer]:
    """A grpc.aio server with PersonaService + health on `bind` (e.g. "0.0.0.0:50051"); returns (server, port, health).

    Built through `grpc.aio.server`, which servicekit's telemetry wraps with tracing and RED metrics.
    """
    server = grpc.aio.server()
    persona_pb2_grpc.add_PersonaServiceServicer_to_server(PersonaServicer(store, verifier), server)
    health_servicer = ReadinessHealthServicer(readiness)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(bind)
    return server, port, health_servicer
