"""The auth app factory: wires settings, AWS clients and the domain objects into a servicekit app."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from servicekit import aws
from servicekit.app import create_service_app
from servicekit.dynamo import readiness_check

from .accounts import Accounts
from .keys import SigningKeys
from .passwords import Passwords
from .routes import build_router
from .settings import AuthSettings
from .throttle import LoginThrottle, ThrottlePolicy
from .tokens import Tokens
from .users import UserStore

VERSION = "1.0.0"


@dataclass(frozen=True)
class AuthClients:
    """boto3 clients auth uses; tests pass their own (moto), production builds them from settings."""

    dynamodb: Any
    secretsmanager: Any

    @classmethod
    def from_settings(cls, settings: AuthSettings) -> AuthClients:
        return cls(dynamodb=aws.client("dynamodb", settings), secretsmanager=aws.client("secretsmanager", settings))


def create_app(
    settings: AuthSettings | None = None,
    *,
    clients: AuthClients | None = None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    settings = settings or AuthSettings()
    if not settings.table_name:
        raise ValueError("TABLE_NAME is not set: auth needs its DynamoDB table")
    # A test's client, or (None) readiness's own one-attempt client (servicekit.dynamo), as in persona.
    readiness_client = clients.dynamodb if clients else None
    clients = clients or AuthClients.from_settings(settings)

    store = UserStore(clients.dynamodb, settings.table_name)
    keys = SigningKeys(clients.secretsmanager, settings.jwt_signing_secret_id, clock=clock)
    policy = ThrottlePolicy(
        threshold=settings.lockout_threshold,
        lock_seconds=settings.lockout_seconds,
        max_lock_seconds=settings.lockout_max_seconds,
        account_threshold=settings.lockout_account_threshold,
    )
    accounts = Accounts(
        store,
        Passwords(time_cost=settings.argon2_time_cost, memory_kib=settings.argon2_memory_kib),
        LoginThrottle(clients.dynamodb, settings.table_name, policy),
        clock=clock,
    )
    tokens = Tokens(
        keys,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        ttl_seconds=settings.access_token_ttl_seconds,
        clock=clock,
    )

    async def load_signing_key() -> None:
        # Logs "signing key unavailable" at once when the secret is missing or malformed.
        try:
            await aws.run_sync(keys.check)
        except Exception:  # noqa: BLE001 (already logged; token routes answer 503 until a key loads)
            pass

    return create_service_app(
        settings,
        title="auth",
        version=VERSION,
        description="Users, password login with throttling, RS256 access tokens and their JWKS.",
        routers=[build_router(accounts, tokens, keys, trusted_proxy_hops=settings.trusted_proxy_hops)],
        # Not the signing key: a missing key is shared configuration that every task lacks alike, so
        # failing readiness would take them all out of the load balancer and make ECS roll back the
        # deployment (the first deploy could never finish: the key is stored after it). Token issue
        # and the JWKS answer 503 signing_key_unavailable instead, and the error is logged.
        readiness_checks={"dynamodb": readiness_check(settings, client=readiness_client)},
        on_startup=[load_signing_key],
    )
