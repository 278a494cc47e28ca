"""JwksVerifier and the bearer_claims dependency with real RS256 keys and a controllable JWKS endpoint."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import APIRouter, Depends
from fastapi.testclient import TestClient

from servicekit.app import create_service_app
from servicekit.auth import JwksVerifier, bearer_claims
from servicekit.errors import ApiError
from servicekit.resilience import ResilientHttpClient

ISSUER, AUDIENCE = "mf-auth", "mf-services"


class KeyPair:
    def __init__(self, kid: str) -> None:
        self.kid = kid
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwk(self) -> dict:
        data = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key()))
        return {**data, "kid": self.kid, "use": "sig", "alg": "RS256"}

    def token(self, **overrides) -> str:
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "username": "ada", "iat": now, "exp": now + 300, "jti": "j1"}
        claims.update(overrides)
        return jwt.encode(claims, self.private, algorithm="RS256", headers={"kid": self.kid})


@pytest.fixture(scope="module")
def keys() -> dict[str, KeyPair]:
    return {kid: KeyPair(kid) for kid in ("k1", "k2")}


class FakeAuth:
    """JWKS endpoint whose keys and availability the test controls."""

    def __init__(self, jwks: list[dict]) -> None:
        self.jwks = jwks
        self.up = True
        self.hits = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.hits += 1
        if not self.up:
            raise httpx.ConnectError("auth is down", request=request)
        return httpx.Response(200, json={"keys": self.jwks})


@pytest.fixture
def auth_setup(keys, make_settings):
    fake = FakeAuth([keys["k1"].jwk()])
    settings = make_settings(retry_attempts=1, breaker_failure_threshold=100)
    http = ResilientHttpClient("http://auth", name="auth", settings=settings, transport=httpx.MockTransport(fake.handler))

    def make(**kwargs) -> JwksVerifier:
        return JwksVerifier("/.well-known/jwks.json", issuer=ISSUER, audience=AUDIENCE, http=http, **kwargs)

    return fake, make


async def test_valid_token_returns_claims(keys, auth_setup):
    _, make = auth_setup
    claims = await make().verify(keys["k1"].token())
    assert claims["sub"] == "user-1" and claims["username"] == "ada"


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"exp": int(time.time()) - 60}, "expired"),
        ({"aud": "someone-else"}, "audience"),
        ({"iss": "evil"}, "issuer"),
    ],
)
async def test_rejected_tokens_are_401_invalid_token(keys, auth_setup, claims, message):
    _, make = auth_setup
    with pytest.raises(ApiError) as info:
        await make().verify(keys["k1"].token(**claims))
    assert (info.value.status, info.value.code) == (401, "invalid_token")
    assert message in info.value.message


async def test_token_signed_by_another_key_with_known_kid_is_rejected(keys, auth_setup):
    _, make = auth_setup
    forged = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "iat": 1, "exp": 2**31}, keys["k2"].private, "RS256", headers={"kid": "k1"})
    with pytest.raises(ApiError) as info:
        await make().verify(forged)
    assert info.value.code == "invalid_token"


@pytest.mark.parametrize("token", ["not-a-jwt", jwt.encode({"sub": "x"}, "secret-key-of-32-bytes-or-more!!", "HS256", headers={"kid": "k1"})])
async def test_malformed_or_hs256_tokens_are_rejected_without_fetching(auth_setup, token):
    fake, make = auth_setup
    with pytest.raises(ApiError) as info:
        await make().verify(token)
    assert info.value.status == 401
    assert fake.hits == 0


async def test_unknown_kid_triggers_refetch_at_most_every_interval(keys, auth_setup):
    fake, make = auth_setup
    now = [1000.0]  # the verifier's clock: moves only when the test says, however slow the machine
    verifier = make(refetch_interval_seconds=30, clock=lambda: now[0])
    await verifier.verify(keys["k1"].token())
    assert fake.hits == 1
    fake.jwks = [keys["k1"].jwk(), keys["k2"].jwk()]  # auth rotated in a new key
    # Within the interval after a fetch: no refetch for an unknown kid yet.
    now[0] += 29
    with pytest.raises(ApiError) as info:
        await verifier.verify(keys["k2"].token())
    assert info.value.code == "invalid_token" and fake.hits == 1
    now[0] += 1.5
    assert (await verifier.verify(keys["k2"].token()))["sub"] == "user-1"
    assert fake.hits == 2
    # Cached now: no more fetches for either key.
    await verifier.verify(keys["k1"].token())
    await verifier.verify(keys["k2"].token())
    assert fake.hits == 2


async def test_cached_keys_serve_while_auth_is_down(keys, auth_setup):
    fake, make = auth_setup
    verifier = make(cache_seconds=0.0, refetch_interval_seconds=0.0)
    await verifier.verify(keys["k1"].token())
    fake.up = False
    # The cache is stale and every refetch fails, but the last good keys still verify.
    for _ in range(2):
        assert (await verifier.verify(keys["k1"].token()))["sub"] == "user-1"
    assert fake.hits == 3


async def test_no_keys_and_auth_down_is_503(keys, auth_setup):
    fake, make = auth_setup
    fake.up = False
    with pytest.raises(ApiError) as info:
        await make().verify(keys["k1"].token())
    assert (info.value.status, info.value.code) == (503, "auth_unavailable")


@pytest.mark.parametrize("document", [{"keys": 5}, {"keys": "k1"}, ["k1"], "nonsense"])
async def test_jwks_of_the_wrong_shape_is_no_keys_not_a_crash(keys, make_settings, document):
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=document))
    http = ResilientHttpClient("http://auth", name="auth", settings=make_settings(retry_attempts=1), transport=transport)
    verifier = JwksVerifier("/.well-known/jwks.json", issuer=ISSUER, audience=AUDIENCE, http=http)
    with pytest.raises(ApiError) as info:
        await verifier.verify(keys["k1"].token())
    assert (info.value.status, info.value.code) == (503, "auth_unavailable")


async def test_jwk_carrying_a_private_key_is_ignored(keys, auth_setup):
    fake, make = auth_setup
    private = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(keys["k1"].private))
    fake.jwks = [{**private, "kid": "k1", "use": "sig", "alg": "RS256"}]
    with pytest.raises(ApiError) as info:
        await make().verify(keys["k1"].token())
    assert info.value.status == 503


async def test_stale_keys_keep_verifying_while_a_refresh_is_under_way(keys, auth_setup):
    fake, make = auth_setup
    verifier = make(cache_seconds=0.0, refetch_interval_seconds=0.0)
    await verifier.verify(keys["k1"].token())
    async with verifier._lock:  # a refresh in flight (e.g. waiting on a hung auth)
        claims = await asyncio.wait_for(verifier.verify(keys["k1"].token()), 1.0)
    assert claims["sub"] == "user-1" and fake.hits == 1


def test_bearer_claims_dependency(keys, auth_setup, make_settings):
    _, make = auth_setup
    verifier = make()
    router = APIRouter()

    @router.get("/v1/me")
    async def me(claims: dict = Depends(bearer_claims(verifier))) -> dict:  # noqa: B008
        return {"sub": claims["sub"]}

    app = create_service_app(make_settings(), title="t", version="1", routers=[router])
    with TestClient(app) as c:
        assert c.get("/v1/me", headers={"Authorization": f"Bearer {keys['k1'].token()}"}).json() == {"sub": "user-1"}
        missing = c.get("/v1/me")
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthorized"
        basic = c.get("/v1/me", headers={"Authorization": "Basic dXNlcjpwYXNz"})
        assert basic.status_code == 401
        expired = c.get("/v1/me", headers={"Authorization": f"Bearer {keys['k1'].token(exp=1)}"})
        assert expired.status_code == 401 and expired.json()["error"]["code"] == "invalid_token"
        assert expired.headers["www-authenticate"].startswith("Bearer")
