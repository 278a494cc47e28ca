"""persona's HTTP routes (/v1/personas); every route needs a bearer token and sees only the caller's personas."""

# No `from __future__ import annotations`: FastAPI must resolve the route-local `Claims` alias.

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Response
from servicekit import aws
from servicekit.auth import bearer_claims
from servicekit.aws import run_sync
from servicekit.errors import ApiError, error_responses
from servicekit.logging import get_logger

from . import store as st
from .models import Persona, PersonaCreate, PersonaList, PersonaPatch

log = get_logger(__name__)
T = TypeVar("T")


async def _call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a store call in a thread and turn its domain errors into API errors."""
    try:
        return await run_sync(fn, *args, **kwargs)
    except st.PersonaNotFound as exc:
        raise ApiError(404, "persona_not_found", str(exc)) from None
    except st.PersonaInUse as exc:
        raise ApiError(409, "persona_in_use", str(exc)) from None
    except st.MaxSessionsBelowReserved as exc:
        raise ApiError(409, "max_sessions_below_reserved", str(exc)) from None
    except st.StoreConflict as exc:
        raise ApiError(409, "concurrent_update", str(exc)) from None
    except st.PersonaLimitReached as exc:
        raise ApiError(409, "persona_limit_reached", str(exc)) from None
    except st.InvalidPageToken as exc:
        raise ApiError(422, "invalid_page_token", str(exc)) from None
    except st.StoreUnavailable as exc:
        # DynamoDB keeps throttling a batch call: the same answer as servicekit's to its throttling errors.
        log.warning("storage unavailable: %s", exc, extra={"aws_error": exc.aws_error})
        raise aws.storage_unavailable(aws.RETRY_AFTER_THROTTLED_SECONDS) from None
    # DynamoDB unreachable or throttling (a botocore error): servicekit answers 503 storage_unavailable.


def build_router(store: st.PersonaStore, verifier: Any) -> APIRouter:
    router = APIRouter(prefix="/v1/personas", tags=["personas"], responses=error_responses(401, 503))
    Claims = Annotated[dict[str, Any], Depends(bearer_claims(verifier))]

    def owner(claims: dict[str, Any]) -> str:
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise ApiError(401, "invalid_token", "token has no subject")
        return sub

    @router.post("", status_code=201, response_model=Persona, summary="Create a persona", responses=error_responses(409, 413))
    async def create_persona(body: PersonaCreate, claims: Claims) -> Persona:
        persona = await _call(store.create, owner(claims), body.display_name, body.attributes, body.max_sessions)
        log.info("persona created", extra={"persona_id": persona.persona_id})
        return Persona.of(persona)

    @router.get("", response_model=PersonaList, summary="List the caller's personas, one page at a time")
    async def list_personas(
        claims: Claims,
        limit: Annotated[int, Query(ge=1, le=st.MAX_PAGE_SIZE, description="Personas per page")] = st.DEFAULT_PAGE_SIZE,
        page_token: Annotated[str | None, Query(min_length=1, max_length=512, description="`next_page_token` of the previous page")] = None,
    ) -> PersonaList:
        page = await _call(store.list, owner(claims), limit=limit, page_token=page_token)
        return PersonaList(items=[Persona.of(p) for p in page.items], next_page_token=page.next_page_token)

    @router.get("/{persona_id}", response_model=Persona, summary="Get one of the caller's personas", responses=error_responses(404))
    async def get_persona(persona_id: str, claims: Claims) -> Persona:
        return Persona.of(await _call(store.get, persona_id, owner(claims)))

    @router.patch(
        "/{persona_id}",
        response_model=Persona,
        summary="Change a persona's name, attributes or max_sessions",
        responses=error_responses(404, 409, 413),
    )
    async def patch_persona(persona_id: str, body: PersonaPatch, claims: Claims) -> Persona:
        persona = await _call(
            store.update,
            persona_id,
            owner(claims),
            display_name=body.display_name,
            attributes=body.attributes,
            max_sessions=body.max_sessions,
        )
        return Persona.of(persona)

    @router.delete(
        "/{persona_id}",
        status_code=204,
        response_class=Response,
        summary="Delete a persona (refused while session slots are reserved)",
        responses=error_responses(404, 409),
    )
    async def delete_persona(persona_id: str, claims: Claims) -> Response:
        await _call(store.delete, persona_id, owner(claims))
        log.info("persona deleted", extra={"persona_id": persona_id})
        return Response(status_code=204)

    return router
