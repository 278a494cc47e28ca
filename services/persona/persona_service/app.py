"""Builds persona: the HTTP app plus (for servicekit.server.run) the gRPC server sharing its store and verifier."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from fastapi import FastAPI
from servicekit import aws
from servicekit.app import create_service_app
from servicekit.auth import JwksVerifier
from servicekit.dynamo import readiness_check

from . import __version__
from .api import build_router
from .grpc_api import build_grpc_server
from .settings import PersonaSettings
from .store import PersonaStore


@dataclass
class PersonaClients:
    """Injectable dependencies; anything left None is built from the settings."""

    dynamodb: Any = None  # boto3 DynamoDB client
    verifier: Any = None  # `await verify(token) -> claims`, e.g. servicekit.auth.JwksVerifier
    clock: Callable[[], float] = field(default=time.time)


def create_app(settings: PersonaSettings | None = None, *, clients: PersonaClients | None = None) -> FastAPI:
    settings = settings or PersonaSettings()
    clients = clients or PersonaClients()
    if not settings.table_name:
        raise ValueError("TABLE_NAME is not set: persona needs its DynamoDB table")
    dynamodb = clients.dynamodb or aws.client("dynamodb", settings)
    store = PersonaStore(dynamodb, settings.table_name, hold_seconds=settings.reservation_hold_seconds, clock=clients.clock,
                         max_personas_per_owner=settings.max_personas_per_owner)
    owned_verifier = JwksVerifier.from_settings(settings) if clients.verifier is None else None
    verifier = clients.verifier or owned_verifier

    async def close_clients() -> None:
        grpc_health = getattr(app.state, "grpc_health", None)
        if grpc_health is not None:
            grpc_health.stop_refreshing()
        if owned_verifier is not None:
            await owned_verifier.aclose()

    app = create_service_app(
        settings,
        title="persona",
        version=__version__,
        description="Personas owned by users, and the session slots the vc-start saga reserves on them.",
        routers=[build_router(store, verifier)],
        # A test's client, or (None) readiness's own one-attempt client (servicekit.dynamo).
        readiness_checks={"dynamodb": readiness_check(settings, client=clients.dynamodb)},
        on_shutdown=[close_clients],
    )
    app.state.store = store

    def grpc_server_factory(s: PersonaSettings) -> grpc.aio.Server:
        server, _, health_servicer = build_grpc_server(store, verifier, app.state.health, bind=s.bind_address(s.grpc_port))
        app.state.grpc_health = health_servicer
        health_servicer.start_refreshing()  # servicekit.server calls the factory inside its event loop
        return server

    app.state.grpc_server_factory = grpc_server_factory
    return app
