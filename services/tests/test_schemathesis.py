"""Property-based API tests (schemathesis) of auth, persona and vc-start against their own OpenAPI documents.

Each service runs in-process (ASGI) on a moto server prepared by local/bootstrap.py; what the services
call is real: auth is also served by uvicorn on loopback (persona's and vc-start's JWKS verifiers fetch
its keys over TCP) and vc-start calls persona's real gRPC server. For every generated request (valid and
invalid ones) the response must not be a 5xx, its status code must be documented, its content type and
body must match the documented ones, and documented headers must conform.

Persona and vc-start cases get a real bearer token from auth most of the time (the rest keep whatever
schemathesis generated, usually nothing or garbage), and often a persona or session id that exists, so
the runs reach the handlers instead of stopping at 401/404.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from faultproxy import FAST_ARGON2, PersonaGrpcThread, settings_for  # noqa: E402

from auth_service.app import create_app as create_auth_app  # noqa: E402
from auth_service.settings import AuthSettings  # noqa: E402
from persona_service.app import create_app as create_persona_app  # noqa: E402
from persona_service.settings import PersonaSettings  # noqa: E402
from vc_start.app import build_clients  # noqa: E402
from vc_start.app import create_app as create_vc_start_app  # noqa: E402
from vc_start.settings import VcStartSettings  # noqa: E402

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance, response_headers_conformance]
# Bounded so the whole file runs in about half a minute on a busy 2-core machine.
FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
QUIET = {"log_level": "WARNING"}


# --- the services -------------------------------------------------------------------------------------


def _auth(env):
    return create_auth_app(settings_for(AuthSettings, env["auth"], **FAST_ARGON2, **QUIET))


@pytest.fixture(scope="module")
def persona_grpc(env, auth):
    server = PersonaGrpcThread(settings_for(PersonaSettings, env["persona"], auth_url=auth.url, **QUIET))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def persona_ids(persona_grpc, caller) -> list[str]:
    """Personas of the test caller (plenty of slots, so sessions keep starting)."""
    return [persona_grpc.store.create(caller[1], f"Persona {i}", {"voice": "alto"}, 10).persona_id for i in range(2)]


# The apps under test are built per test: schemathesis ends an app's ASGI lifespan after each test, and
# persona and vc-start close their outbound clients on shutdown for good.
@pytest.fixture
def auth_app(env):
    return _auth(env)


@pytest.fixture
def persona_app(env, auth):
    return create_persona_app(settings_for(PersonaSettings, env["persona"], auth_url=auth.url, **QUIET))


@pytest.fixture
def vc_start_app(env, auth, persona_grpc):
    settings = settings_for(VcStartSettings, env["vc-start"], auth_url=auth.url, persona_grpc_target=persona_grpc.target, **QUIET)
    return create_vc_start_app(settings, clients=build_clients(settings))


@pytest.fixture(scope="module")
def session_ids(env, auth, persona_grpc, persona_ids, caller) -> list[str]:
    """A session of the test caller, started through vc-start's API."""

    async def start() -> httpx.Response:
        settings = settings_for(VcStartSettings, env["vc-start"], auth_url=auth.url, persona_grpc_target=persona_grpc.target, **QUIET)
        clients = build_clients(settings)
        app = create_vc_start_app(settings, clients=clients)
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://vc-start.test") as http:
                return await http.post("/v1/sessions", json={"persona_id": persona_ids[0]}, headers={"Authorization": f"Bearer {caller[0]}"})
        finally:
            for close in clients.closers:
                await close()

    response = asyncio.run(start())
    assert response.status_code == 201, response.text
    return [response.json()["session_id"]]


# schemathesis needs the schemas at import time (its fixture-based loader does not work with pytest 9),
# but the apps under test need the moto server a fixture starts. So the OpenAPI documents come from
# throw-away instances of the same apps, and each case is sent to the fixture's app (`app=`); the
# fixtures below check that app still publishes exactly the document the cases were generated from.
def _document(app) -> dict:
    return app.openapi()


def _offline_document(create_app, settings_class) -> dict:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return _document(create_app(settings_class(aws_region="eu-central-1", table_name="offline", event_bus_name="offline", instrumentation=False)))
    finally:  # building an app configures logging: collecting this module must not change it for other tests
        root.handlers[:] = handlers
        root.setLevel(level)


auth_api = schemathesis.openapi.from_dict(_offline_document(create_auth_app, AuthSettings))
persona_api = schemathesis.openapi.from_dict(_offline_document(create_persona_app, PersonaSettings))
vc_start_api = schemathesis.openapi.from_dict(_offline_document(create_vc_start_app, VcStartSettings))


@pytest.fixture
def auth_target(auth_app):
    assert _document(auth_app) == auth_api.raw_schema
    return auth_app


@pytest.fixture
def persona_target(persona_app):
    assert _document(persona_app) == persona_api.raw_schema
    return persona_app


@pytest.fixture
def vc_start_target(vc_start_app):
    assert _document(vc_start_app) == vc_start_api.raw_schema
    return vc_start_app


# --- steering generated cases toward the handlers -----------------------------------------------------


def with_bearer(case, data, token: str) -> None:
    """Most cases carry the real token; the others keep what schemathesis generated."""
    if data.draw(st.integers(0, 3), label="token") > 0:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}


def with_known_id(case, data, name: str, ids: list[str]) -> None:
    """Half the time, name an existing resource instead of a random id (which is a 404)."""
    if case.path_parameters and name in case.path_parameters and data.draw(st.booleans(), label=f"known {name}"):
        case.path_parameters = {**case.path_parameters, name: data.draw(st.sampled_from(ids), label=name)}


# --- the tests ----------------------------------------------------------------------------------------


@FUZZ
@auth_api.parametrize()
def test_auth_api_conforms_to_its_openapi(case, auth_target):
    case.call_and_validate(checks=CHECKS, app=auth_target)


@FUZZ
@persona_api.parametrize()
@persona_api.given(data=st.data())
def test_persona_api_conforms_to_its_openapi(case, data, persona_target, caller, persona_ids, persona_grpc):
    with_bearer(case, data, caller[0])
    ids = persona_ids
    if case.method == "DELETE":
        # A persona of its own to delete, so the shared ones survive for the other cases.
        ids = [persona_grpc.store.create(caller[1], "Doomed", {}, 1).persona_id]
    with_known_id(case, data, "persona_id", ids)
    case.call_and_validate(checks=CHECKS, app=persona_target)


@FUZZ
@vc_start_api.parametrize()
@vc_start_api.given(data=st.data())
def test_vc_start_api_conforms_to_its_openapi(case, data, vc_start_target, caller, persona_ids, session_ids):
    with_bearer(case, data, caller[0])
    with_known_id(case, data, "session_id", session_ids)
    if isinstance(case.body, dict) and "persona_id" in case.body and data.draw(st.booleans(), label="known persona_id"):
        case.body = {**case.body, "persona_id": data.draw(st.sampled_from(persona_ids), label="persona_id")}
    case.call_and_validate(checks=CHECKS, app=vc_start_target)
