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
from servicekit.settings import AuthClientSettings

ISSUER, AUDIENCE = "mf-auth", "mf-services"


class KeyPair:
    def __init__(self, kid: str, bits: int = 2048) -> None:
        self.kid = kid
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=bits)

    def jwk(self) -> dict:
        data = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key()))
        return {**data, "kid": self.kid, "use": "sig", "alg": "RS256"}

    def token(self, *, headers: dict | None = None, **overrides) -> str:
        """A token like auth's; a claim overridden with DROP is left out."""
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "username": "ada", "iat": now, "exp": now + 300, "jti": "j1"}
        claims.update(overrides)
        claims = {name: value for name, value in claims.items() if value is not DROP}
        return jwt.encode(claims, self.private, algorithm="RS256", headers={"kid": self.kid, **(headers or {})})


DROP = object()


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


def _unsigned(**overrides) -> str:
    """A token with `alg: none` and no signature, claims otherwise valid."""
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "iat": now, "exp": now + 300, **overrides}
    return jwt.encode(claims, None, algorithm="none", headers={"kid": "k1"})


def _without_kid(keys) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "iat": now, "exp": now + 300}
    return jwt.encode(claims, keys["k1"].private, algorithm="RS256")


# Each is a token an attacker or a broken issuer could present; every one must be refused.
FORGERIES = {
    "alg none": lambda keys: _unsigned(),
    "no kid": _without_kid,
    "nbf in the future": lambda keys: keys["k1"].token(nbf=int(time.time()) + 600),
    "iat in the future": lambda keys: keys["k1"].token(iat=int(time.time()) + 600, exp=int(time.time()) + 900),
    "no exp": lambda keys: keys["k1"].token(exp=DROP),
    "no iat": lambda keys: keys["k1"].token(iat=DROP),
    "no sub": lambda keys: keys["k1"].token(sub=DROP),
    "empty sub": lambda keys: keys["k1"].token(sub=""),
    "blank sub": lambda keys: keys["k1"].token(sub="  "),
    "numeric sub": lambda keys: keys["k1"].token(sub=42),
    "exp 10^12": lambda keys: keys["k1"].token(exp=10**12),
    "signed by another key": lambda keys: jwt.encode(jwt.decode(keys["k1"].token(), options={"verify_signature": False}),
                                                     keys["k2"].private, "RS256", headers={"kid": "k1"}),
}


@pytest.mark.parametrize("forge", FORGERIES.values(), ids=FORGERIES.keys())
async def test_forged_or_malformed_tokens_are_401_with_a_message_that_names_no_internals(keys, auth_setup, forge):
    _, make = auth_setup
    with pytest.raises(ApiError) as info:
        await make().verify(forge(keys))
    assert (info.value.status, info.value.code) == (401, "invalid_token")
    # One of the verifier's own fixed messages, never PyJWT's text (which names claims and checks).
    assert info.value.message in {"invalid token", "unsupported token algorithm", "token has no key id"}, info.value.message


async def test_the_reason_a_token_was_refused_is_logged_not_answered(keys, auth_setup, caplog):
    _, make = auth_setup
    with caplog.at_level("INFO", logger="servicekit.auth"), pytest.raises(ApiError) as info:
        await make().verify(keys["k1"].token(exp=DROP))
    assert info.value.message == "invalid token"
    assert any('missing the "exp" claim' in record.getMessage() for record in caplog.records), caplog.text


@pytest.mark.parametrize(("lifetime", "accepted"), [(900, True), (960, True), (961, False), (10**9, False)])
async def test_tokens_that_live_longer_than_the_maximum_lifetime_are_rejected(keys, auth_setup, lifetime, accepted):
    _, make = auth_setup
    now = int(time.time())
    token = keys["k1"].token(iat=now, exp=now + lifetime)
    verifier = make(max_lifetime_seconds=960)
    if accepted:
        assert (await verifier.verify(token))["sub"] == "user-1"
    else:
        with pytest.raises(ApiError) as info:
            await verifier.verify(token)
        assert (info.value.status, info.value.code, info.value.message) == (401, "invalid_token", "invalid token")


def test_maximum_lifetime_and_stale_keys_cap_come_from_the_settings(monkeypatch):
    settings = AuthClientSettings()
    # auth's ACCESS_TOKEN_TTL_SECONDS (900 by default) plus a minute of skew; keys served stale for an hour at most.
    assert (settings.jwt_max_lifetime_seconds, settings.jwks_max_stale_seconds) == (960, 3600)
    monkeypatch.setenv("JWT_MAX_LIFETIME_SECONDS", "3660")
    monkeypatch.setenv("JWKS_MAX_STALE_SECONDS", "600")
    verifier = JwksVerifier.from_settings(AuthClientSettings())
    assert (verifier.max_lifetime_seconds, verifier.max_stale_seconds) == (3660, 600)


@pytest.mark.filterwarnings("ignore:The RSA key is 1024 bits")  # PyJWT warns when the test signs with the weak key
async def test_rsa_keys_under_2048_bits_are_dropped_from_the_jwks(keys, auth_setup, caplog):
    fake, make = auth_setup
    weak = KeyPair("weak", bits=1024)
    fake.jwks = [weak.jwk(), keys["k1"].jwk()]
    verifier = make()
    with caplog.at_level("WARNING", logger="servicekit.auth"), pytest.raises(ApiError) as info:
        await verifier.verify(weak.token())
    assert (info.value.status, info.value.code) == (401, "invalid_token")
    assert any("weak" in r.getMessage() and "1024 bits" in r.getMessage() for r in caplog.records), caplog.text
    assert (await verifier.verify(keys["k1"].token()))["sub"] == "user-1"  # the strong key still verifies
    fake.jwks = [weak.jwk()]
    with pytest.raises(ApiError) as info:  # a JWKS of weak keys only is no keys at all
        await make().verify(weak.token())
    assert (info.value.status, info.value.code) == (503, "auth_unavailable")


async def test_stale_keys_are_served_for_at_most_max_stale_seconds_while_auth_is_down(keys, auth_setup):
    fake, make = auth_setup
    now = [1000.0]
    verifier = make(cache_seconds=300, refetch_interval_seconds=30, max_stale_seconds=3600, clock=lambda: now[0])
    await verifier.verify(keys["k1"].token())
    fake.up = False
    now[0] += 300 + 3600  # stale for exactly the cap: still served
    assert (await verifier.verify(keys["k1"].token()))["sub"] == "user-1"
    now[0] += 1  # past it: no key is trusted any more
    with pytest.raises(ApiError) as info:
        await verifier.verify(keys["k1"].token())
    assert (info.value.status, info.value.code) == (503, "auth_unavailable")
    assert info.value.headers["Retry-After"]
    fake.up = True
    now[0] += 1  # without keys the verifier retries within a second, not after refetch_interval_seconds
    assert (await verifier.verify(keys["k1"].token()))["sub"] == "user-1"


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
