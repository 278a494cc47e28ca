"""Verifying the JWTs issued by the auth service (RS256, keys from its JWKS endpoint)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Annotated, Any

import httpx
import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from jwt import PyJWK

from .errors import ApiError
from .logging import get_logger
from .resilience import CircuitOpenError, ResilientHttpClient
from .settings import DEFAULT_JWKS_MAX_STALE_SECONDS, DEFAULT_JWT_MAX_LIFETIME_SECONDS, AuthClientSettings

log = get_logger(__name__)

ALGORITHMS = ["RS256"]
# Unknown kid (a rotated key) triggers a refetch, but at most this often: a flood of tokens with
# made-up kids must not turn into a flood of JWKS requests.
REFETCH_MIN_INTERVAL_SECONDS = 30.0
LEEWAY_SECONDS = 5
# What auth requires of its own signing keys (auth_service.keys); a weaker key in the JWKS is never trusted.
MIN_RSA_BITS = 2048
_CHALLENGE = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


def _invalid(message: str) -> ApiError:
    return ApiError(401, "invalid_token", message, headers=_CHALLENGE)


def _refused(reason: str) -> ApiError:
    """A token refused for `reason`, which is logged; the caller gets only "invalid token" (the detail would
    tell a prober which check to work around next)."""
    log.info("token refused: %s", reason)
    return _invalid("invalid token")


class JwksVerifier:
    """Verifies bearer tokens; JWKS cached for `cache_seconds`, served stale while auth is down, but for at most
    `max_stale_seconds` after that (then 503 auth_unavailable, see services/README.md)."""

    def __init__(
        self,
        jwks_url: str,
        *,
        issuer: str,
        audience: str,
        http: ResilientHttpClient,
        cache_seconds: float = 300,
        refetch_interval_seconds: float = REFETCH_MIN_INTERVAL_SECONDS,
        max_lifetime_seconds: int = DEFAULT_JWT_MAX_LIFETIME_SECONDS,
        max_stale_seconds: float = DEFAULT_JWKS_MAX_STALE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.jwks_url = jwks_url
        self.issuer = issuer
        self.audience = audience
        self.http = http
        self.cache_seconds = cache_seconds
        self.refetch_interval_seconds = refetch_interval_seconds
        self.max_lifetime_seconds = max_lifetime_seconds  # exp - iat above it: refused
        self.max_stale_seconds = max_stale_seconds
        self._clock = clock  # monotonic seconds; tests pass their own to move time without sleeping
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at: float | None = None  # last successful fetch (monotonic)
        self._attempted_at: float | None = None  # last fetch attempt, successful or not
        self._lock = asyncio.Lock()
        self.fetch_count = 0

    @classmethod
    def from_settings(cls, settings: AuthClientSettings, *, name: str = "auth-jwks") -> JwksVerifier:
        """A verifier of auth's tokens with its own resilient HTTP client (close it with `aclose()`)."""
        http = ResilientHttpClient(settings.auth_url, name=name, settings=settings)
        return cls(settings.jwks_url, issuer=settings.jwt_issuer, audience=settings.jwt_audience, http=http,
                   max_lifetime_seconds=settings.jwt_max_lifetime_seconds, max_stale_seconds=settings.jwks_max_stale_seconds)

    async def aclose(self) -> None:
        """Close the HTTP client (it reopens on the next fetch, so an app can be started again)."""
        await self.http.aclose()

    async def _fetch(self) -> bool:
        """Refresh the key set; False (keys unchanged) when auth can't be reached or answers nonsense."""
        self._attempted_at = self._clock()
        self.fetch_count += 1
        try:
            response = await self.http.get(self.jwks_url)
            if response.status_code != 200:
                raise ValueError(f"JWKS endpoint answered {response.status_code}")
            document = response.json()
        except (httpx.HTTPError, CircuitOpenError, ValueError) as exc:
            log.warning("JWKS fetch failed: %s: %s", type(exc).__name__, exc)
            return False
        entries = document.get("keys") if isinstance(document, dict) else None
        keys: dict[str, PyJWK] = {}
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict) or entry.get("kty") != "RSA" or entry.get("use", "sig") != "sig":
                continue
            if "d" in entry:  # private key material has no business in a JWKS: never trust it
                log.warning("ignoring JWK %s: it holds a private key", entry.get("kid"))
                continue
            if entry.get("alg", "RS256") != "RS256" or not entry.get("kid"):
                continue
            try:
                key = PyJWK(entry, algorithm="RS256")
            except jwt.PyJWTError as exc:
                log.warning("ignoring unusable JWK %s: %s", entry.get("kid"), exc)
                continue
            if key.key.key_size < MIN_RSA_BITS:
                log.warning("ignoring JWK %s: its RSA key is %d bits, under %d", entry["kid"], key.key.key_size, MIN_RSA_BITS)
                continue
            keys[entry["kid"]] = key
        if not keys:
            log.warning("JWKS document holds no usable RS256 keys")
            return False
        self._keys = keys
        self._fetched_at = self._clock()
        return True

    def _drop_keys_stale_too_long(self, now: float) -> None:
        # Serving stale keys keeps the services up while auth is down, but a key auth has since withdrawn
        # (rotated out after a leak) stays trusted meanwhile: after max_stale_seconds, trust none.
        if self._keys and self._fetched_at is not None and now - self._fetched_at > self.cache_seconds + self.max_stale_seconds:
            log.warning("JWKS not refreshed for %.0f s: dropping its keys until auth answers", now - self._fetched_at)
            self._keys = {}

    async def _key(self, kid: str) -> PyJWK:
        now = self._clock()
        self._drop_keys_stale_too_long(now)
        stale = self._fetched_at is None or now - self._fetched_at > self.cache_seconds
        # While one request refreshes a stale set (up to CALL_BUDGET_SECONDS when auth is down), the
        # others keep verifying with the keys in hand instead of queueing behind it.
        if kid in self._keys and (not stale or self._lock.locked()):
            return self._keys[kid]
        async with self._lock:
            now = self._clock()
            stale = self._fetched_at is None or now - self._fetched_at > self.cache_seconds
            # Without any key, retry soon; with keys (maybe stale) in hand, don't hammer a sick auth.
            interval = self.refetch_interval_seconds if self._keys else min(1.0, self.refetch_interval_seconds)
            recently_tried = self._attempted_at is not None and now - self._attempted_at < interval
            if (stale or kid not in self._keys) and not recently_tried:
                await self._fetch()
            self._drop_keys_stale_too_long(self._clock())
        if kid in self._keys:
            return self._keys[kid]
        if not self._keys:
            raise ApiError(503, "auth_unavailable", "signing keys are unavailable; try again shortly", headers={"Retry-After": "5"})
        raise _invalid("token signed with an unknown key")

    async def verify(self, token: str) -> dict[str, Any]:
        """Claims of a valid token; ApiError 401 invalid_token otherwise (503 auth_unavailable without keys)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _invalid("malformed token") from None
        if header.get("alg") not in ALGORITHMS:
            raise _invalid("unsupported token algorithm")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _invalid("token has no key id")
        key = await self._key(kid)
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=ALGORITHMS,
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise _invalid("token expired") from None
        except jwt.InvalidAudienceError:
            raise _invalid("token audience not accepted") from None
        except jwt.InvalidIssuerError:
            raise _invalid("token issuer not accepted") from None
        except jwt.PyJWTError as exc:
            raise _refused(f"{type(exc).__name__}: {exc}") from None
        # Every service takes sub as the caller's identity (the owner of personas and sessions).
        sub = claims["sub"]
        if not isinstance(sub, str) or not sub.strip():
            raise _refused("sub is empty or not a string")
        # A stolen token is worth only as long as it lives: none lives longer than auth issues them for.
        lifetime = int(claims["exp"]) - int(claims["iat"])  # PyJWT checked both are integers
        if lifetime > self.max_lifetime_seconds:
            raise _refused(f"lifetime {lifetime} s is over JWT_MAX_LIFETIME_SECONDS ({self.max_lifetime_seconds})")
        return claims


_bearer = HTTPBearer(auto_error=False, description="JWT access token from the auth service")


def bearer_claims(verifier: JwksVerifier):
    """FastAPI dependency factory: `claims: dict = Depends(bearer_claims(verifier))`.

    Missing or malformed Authorization header -> 401 `unauthorized`; bad token -> 401 `invalid_token`.
    The claims are also kept on `request.state.claims`.
    """

    async def dependency(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> dict[str, Any]:
        if credentials is None or not credentials.credentials:
            raise ApiError(401, "unauthorized", "missing or malformed Authorization: Bearer header", headers={"WWW-Authenticate": "Bearer"})
        claims = await verifier.verify(credentials.credentials)
        request.state.claims = claims
        return claims

    return dependency
