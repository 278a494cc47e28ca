"""HTTP routes: registration, token issue, token verify, JWKS."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread
from fastapi import APIRouter, Request, Response, status
from servicekit.aws import run_sync
from servicekit.errors import ApiError, error_responses
from servicekit.forwarded import request_client_ip
from servicekit.logging import get_logger

from .accounts import Accounts
from .errors import HashingBusy, InvalidCredentials, LoginThrottled, SigningKeyError, UsernameTaken
from .keys import SigningKeys
from .models import Jwks, LoginRequest, RegisterRequest, TokenClaims, TokenResponse, UserResponse, VerifyRequest, VerifyResponse
from .passwords import MAX_CONCURRENT_HASHES, MAX_WAITING_HASHES
from .throttle import address_key
from .tokens import Tokens

T = TypeVar("T")
log = get_logger(__name__)

# Registration and login run on threads of their own, not on anyio's shared 40: a thread waiting for a
# hash slot (passwords.HashGate) keeps its thread. The gate admits at most MAX_CONCURRENT_HASHES +
# MAX_WAITING_HASHES threads holding or waiting for a slot, so 12 more are always left for other logins'
# DynamoDB calls, and token checks, the JWKS and readiness keep the shared threads to themselves.
ACCOUNT_THREADS = MAX_CONCURRENT_HASHES + MAX_WAITING_HASHES + 12
# How many may wait for one of those threads (all busy: a burst, or a slow table); beyond that 503 busy at
# once, as for the hash queue, instead of queueing without end.
MAX_WAITING_FOR_THREADS = 32
JWKS_MAX_AGE_SECONDS = 300


def _busy() -> ApiError:
    return ApiError(503, "busy", "too many logins and registrations in progress; retry shortly", headers={"Retry-After": "1"})


def _key_unavailable(exc: SigningKeyError) -> ApiError:
    # The reason (it names the secret) goes to the log, not to the caller; the key's refresh loop logs the outage
    # as an error already, so this per-request line is a warning (the error-log alarm counts errors).
    log.warning("signing key unavailable: %s", exc)
    return ApiError(503, "signing_key_unavailable", "the signing key is unavailable; retry later", headers={"Retry-After": "30"})


def build_router(accounts: Accounts, tokens: Tokens, keys: SigningKeys, *, trusted_proxy_hops: int = 0) -> APIRouter:
    router = APIRouter()
    account_threads = anyio.CapacityLimiter(ACCOUNT_THREADS)

    in_flight = 0  # on an account thread or waiting for one
    warned_unforwarded = False

    def caller_address(request: Request) -> str:
        """The throttle's key for the caller: its address as the platform's proxies report it (servicekit.forwarded)."""
        nonlocal warned_unforwarded
        if trusted_proxy_hops and "x-forwarded-for" not in request.headers and not warned_unforwarded:
            # Behind the proxies every login carries the header; without it every caller shares the socket's peer
            # (a proxy in between that drops it, or TRUSTED_PROXY_HOPS set where nothing forwards). Said once.
            warned_unforwarded = True
            log.warning("login without X-Forwarded-For although TRUSTED_PROXY_HOPS=%d: throttling by the socket's peer", trusted_proxy_hops)
        return address_key(request_client_ip(request, trusted_proxy_hops))

    async def in_account_thread(fn: Callable[..., T], *args: Any) -> T:
        nonlocal in_flight
        # Counted before the first await: a burst arriving in one tick is bounded too (the limiter's own
        # waiting count only grows once each request has yielded).
        if in_flight >= ACCOUNT_THREADS + MAX_WAITING_FOR_THREADS:
            raise _busy()
        in_flight += 1
        try:
            return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=account_threads)
        finally:
            in_flight -= 1

    @router.post(
        "/v1/users",
        status_code=status.HTTP_201_CREATED,
        response_model=UserResponse,
        responses=error_responses(409, 422, 503),
        summary="Register a user",
        tags=["users"],
    )
    async def register(body: RegisterRequest) -> UserResponse:
        try:
            user = await in_account_thread(accounts.register, body.username, body.password)
        except UsernameTaken:
            raise ApiError(409, "username_taken", f"username {body.username!r} is already taken") from None
        except HashingBusy:
            raise _busy() from None
        return UserResponse(user_id=user.user_id, username=user.username)

    @router.post(
        "/v1/tokens",
        response_model=TokenResponse,
        responses={
            **error_responses(401, 422, 503),
            429: {
                **error_responses(429)[429],
                "description": "too many failed logins for this username from the caller's address (the same for every username)",
                "headers": {"Retry-After": {"description": "Seconds until the address may try again", "schema": {"type": "integer"}}},
            },
        },
        summary="Log in: exchange username and password for an access token",
        tags=["tokens"],
    )
    async def issue_token(body: LoginRequest, request: Request) -> TokenResponse:
        try:
            user = await in_account_thread(accounts.authenticate, body.username, body.password, caller_address(request))
            issued = await run_sync(tokens.issue, user)
        except InvalidCredentials:
            raise ApiError(401, "invalid_credentials", "username or password is incorrect") from None
        except LoginThrottled as exc:
            raise ApiError(
                429,
                "too_many_failed_logins",
                "too many failed logins for this username from your address; try again later",
                {"retry_after_seconds": exc.retry_after},
                headers={"Retry-After": str(exc.retry_after)},
            ) from None
        except HashingBusy:
            raise _busy() from None
        except SigningKeyError as exc:
            raise _key_unavailable(exc) from None
        return TokenResponse(access_token=issued.access_token, expires_in=issued.expires_in)

    @router.post(
        "/v1/tokens/verify",
        response_model=VerifyResponse,
        response_model_exclude_none=True,
        responses=error_responses(422, 503),
        summary="Introspect a token: active with its claims, or inactive",
        tags=["tokens"],
    )
    async def verify_token(body: VerifyRequest) -> VerifyResponse:
        try:
            claims = await run_sync(tokens.verify, body.token)
        except SigningKeyError as exc:
            raise _key_unavailable(exc) from None
        if claims is None:
            return VerifyResponse(active=False)
        return VerifyResponse(active=True, claims=TokenClaims.model_validate(claims))

    @router.get(
        "/.well-known/jwks.json",
        response_model=Jwks,
        responses=error_responses(503),
        summary="Public keys that verify this service's tokens (current and previous)",
        tags=["tokens"],
    )
    async def jwks(response: Response) -> Jwks:
        try:
            key_set = await run_sync(keys.get)
        except SigningKeyError as exc:
            raise _key_unavailable(exc) from None
        # Verifiers cache for as long as auth itself caches the secret.
        response.headers["Cache-Control"] = f"public, max-age={JWKS_MAX_AGE_SECONDS}"
        return Jwks.model_validate(key_set.jwks)

    return router
