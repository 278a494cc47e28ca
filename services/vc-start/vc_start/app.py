"""vc-start's HTTP API: start a session (the saga) and read it back."""

# No `from __future__ import annotations`: FastAPI must resolve the routes' Annotated dependencies at runtime.
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Depends, FastAPI, Path, Request
from servicekit.app import create_service_app
from servicekit.auth import JwksVerifier, bearer_claims
from servicekit.dynamo import readiness_check
from servicekit.errors import ApiError, ErrorResponse, error_responses
from servicekit.events import EventPublisher
from servicekit.idempotency import Claimed, IdempotencyStore, idempotency_key, run_idempotent

from vc_start.events import Publisher
from vc_start.models import CreateSessionRequest, SessionResponse
from vc_start.persona import GrpcPersonaClient, PersonaClient, PersonaNotFoundError, PersonaRejectedTokenError, PersonaUnavailableError
from vc_start.saga import SessionConflictError, StartSessionSaga
from vc_start.settings import VcStartSettings
from vc_start.store import SessionStore
from vc_start.timeouts import time_out_if_overdue

VERSION = "1.0.0"


class TokenVerifier(Protocol):
    async def verify(self, token: str) -> dict[str, Any]: ...


@dataclass
class Clients:
    """Everything the API talks to; tests swap in fakes where the real thing cannot run in-process."""

    store: SessionStore
    persona: PersonaClient
    publisher: Publisher
    verifier: TokenVerifier
    idempotency: IdempotencyStore
    # Closed on shutdown (e.g. the gRPC channel, the JWKS HTTP client).
    closers: list[Any] = field(default_factory=list)


def build_clients(settings: VcStartSettings) -> Clients:
    store = SessionStore.from_settings(settings)
    persona = GrpcPersonaClient(settings.persona_grpc_target, settings)
    verifier = JwksVerifier.from_settings(settings)
    return Clients(
        store=store,
        persona=persona,
        publisher=EventPublisher(settings),
        verifier=verifier,
        idempotency=IdempotencyStore(settings, settings.table_name),
        # Both reopen on next use, so the app can be started again after a shutdown.
        closers=[persona.close, verifier.aclose],
    )


def _bearer_token(request: Request) -> str:
    # bearer_claims already accepted the header; persona needs the same token.
    return request.headers["authorization"].split(None, 1)[1].strip()


def sessions_router(clients: Clients) -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["sessions"])
    saga = StartSessionSaga(persona=clients.persona, publisher=clients.publisher, store=clients.store)
    # Any verify(token) -> claims object will do for bearer_claims.
    Claims = Annotated[dict[str, Any], Depends(bearer_claims(clients.verifier))]  # type: ignore[arg-type]

    @router.post(
        "/sessions",
        status_code=201,
        response_model=SessionResponse,
        summary="Start a session for one of the caller's personas",
        description=(
            "Runs the synchronous half of the saga: reads the persona, stores the session PENDING, reserves a slot and "
            "publishes SessionStarted. 201 carries the session PENDING, or CANCELLED with a reason when a later step "
            "failed (no_slot_available, persona_unavailable, persona_not_found, event_publish_failed). With an "
            "Idempotency-Key a retry with the same body replays the first answer (header Idempotent-Replayed: true); "
            "one that takes over an earlier request that never answered resumes its session and answers it as it "
            "stands (ACTIVE, or CANCELLED with timed_out or persona's reason, included)."
        ),
        responses={
            **error_responses(400, 401, 409, 413, 422),
            404: {"model": ErrorResponse, "description": "persona_not_found"},
            503: {"model": ErrorResponse, "description": "persona_unavailable (nothing written, nothing reserved)"},
        },
    )
    async def create_session(
        body: CreateSessionRequest,
        request: Request,
        claims: Claims,
        key: Annotated[str | None, Depends(idempotency_key)],
    ):
        user_id = str(claims["sub"])
        token = _bearer_token(request)

        async def start(run: Claimed) -> tuple[int, dict[str, Any]]:
            try:
                # The session is named after the idempotency run: a retry that takes the run over resumes it.
                session = await saga.start(persona_id=body.persona_id, user_id=user_id, token=token,
                                           session_id=run.run_id, resume=run.taken_over)
            except PersonaNotFoundError:
                raise ApiError(404, "persona_not_found", f"persona {body.persona_id} not found") from None
            except PersonaUnavailableError:
                raise ApiError(
                    503, "persona_unavailable", "persona service unavailable; try again shortly", headers={"Retry-After": "5"}
                ) from None
            except PersonaRejectedTokenError:
                raise ApiError(401, "invalid_token", "persona did not accept the token") from None
            except SessionConflictError:
                # Stored and replayed like any 4xx, so a retry does not hit the same bug for the key's 24 h.
                raise ApiError(409, "session_conflict", "this request's session id is taken; use another Idempotency-Key") from None
            return 201, SessionResponse.of(session).model_dump(mode="json")

        return await run_idempotent(
            clients.idempotency, principal=user_id, key=key, request_body=body.model_dump(mode="json"), handler=start
        )

    @router.get(
        "/sessions/{session_id}",
        response_model=SessionResponse,
        summary="Read one of the caller's sessions",
        description=(
            "A session still PENDING SESSION_PENDING_TIMEOUT_SECONDS after its creation is answered (and stored) "
            "CANCELLED with reason timed_out, and any slot persona still holds for it is released."
        ),
        responses=error_responses(401, 404),
    )
    async def get_session(
        session_id: Annotated[str, Path(min_length=1, max_length=128)],
        claims: Claims,
    ) -> SessionResponse:
        session = await clients.store.get(session_id)
        # Someone else's session is reported exactly like a missing one.
        if session is None or session.user_id != str(claims["sub"]):
            raise ApiError(404, "session_not_found", f"session {session_id} not found")
        session = await time_out_if_overdue(session, store=clients.store, publisher=clients.publisher)
        return SessionResponse.of(session)

    return router


def create_app(settings: VcStartSettings | None = None, *, clients: Clients | None = None) -> FastAPI:
    settings = settings or VcStartSettings()
    clients = clients or build_clients(settings)
    return create_service_app(
        settings,
        title="vc-start",
        version=VERSION,
        description="Starts sessions for a user's persona (the saga orchestrator of the reference services).",
        routers=[sessions_router(clients)],
        readiness_checks={"dynamodb": readiness_check(settings, settings.table_name)},
        on_shutdown=clients.closers,
    )
