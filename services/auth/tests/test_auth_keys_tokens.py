"""Signing keys from Secrets Manager (validation, caching, rotation) and RS256 token issue/verify."""

from __future__ import annotations

import json

import jwt
import pytest
from auth_service.errors import SigningKeyError
from auth_service.keys import SigningKeys, parse_key_set
from auth_service.tokens import Tokens
from auth_service.users import User

SECRET_ID = "mf/auth/jwt-signing-key"
USER = User(user_id="u-1", username="alice", password_hash="x", created_at="now")


@pytest.fixture
def keys(secrets, clock):
    return SigningKeys(secrets, SECRET_ID, clock=clock)


@pytest.fixture
def tokens(keys, clock):
    return Tokens(keys, issuer="mf-auth", audience="mf-services", ttl_seconds=900, clock=clock)


def test_jwks_lists_current_then_previous_keys_as_rs256_signing_keys(keys):
    jwks = keys.get().jwks
    assert [k["kid"] for k in jwks["keys"]] == ["key-2", "key-1"]
    for k in jwks["keys"]:
        assert (k["kty"], k["use"], k["alg"], k["e"]) == ("RSA", "sig", "RS256", "AQAB")
        assert "d" not in k and "p" not in k  # public halves only


def test_issued_token_carries_the_spec_claims_and_the_current_kid(tokens, clock):
    issued = tokens.issue(USER)
    assert issued.expires_in == 900
    assert jwt.get_unverified_header(issued.access_token) == {"alg": "RS256", "kid": "key-2", "typ": "JWT"}
    claims = tokens.verify(issued.access_token)
    assert claims["iss"] == "mf-auth" and claims["aud"] == "mf-services"
    assert (claims["sub"], claims["username"]) == ("u-1", "alice")
    assert claims["iat"] == int(clock()) and claims["exp"] == int(clock()) + 900
    assert claims["jti"] != tokens.verify(tokens.issue(USER).access_token)["jti"]


def test_token_expires_after_its_ttl(tokens, clock):
    token = tokens.issue(USER).access_token
    clock.advance(899)
    assert tokens.verify(token) is not None
    clock.advance(1)
    assert tokens.verify(token) is None


def test_tokens_signed_by_a_previous_key_still_verify(tokens, rsa_keys, clock):
    old = jwt.encode(
        {"iss": "mf-auth", "aud": "mf-services", "sub": "u-1", "username": "alice", "iat": int(clock()),
         "exp": int(clock()) + 60, "jti": "j"},
        rsa_keys[0], algorithm="RS256", headers={"kid": "key-1"},
    )
    assert tokens.verify(old)["sub"] == "u-1"


@pytest.mark.parametrize(
    "change",
    [
        {"aud": "someone-else"},
        {"iss": "not-auth"},
        {"kid": "unknown-kid"},
        {"kid": "key-1"},  # signed by key-2 but claiming key-1: the signature must not verify
        {"drop": "jti"},
    ],
)
def test_rejects_tokens_with_wrong_audience_issuer_key_or_missing_claims(tokens, rsa_keys, clock, change):
    claims = {"iss": "mf-auth", "aud": "mf-services", "sub": "u-1", "username": "alice", "iat": int(clock()),
              "exp": int(clock()) + 60, "jti": "j"}
    claims.update({k: v for k, v in change.items() if k in claims})
    claims.pop(change.get("drop", ""), None)
    token = jwt.encode(claims, rsa_keys[1], algorithm="RS256", headers={"kid": change.get("kid", "key-2")})
    assert tokens.verify(token) is None


def test_rejects_unsigned_and_hmac_tokens(tokens, rsa_keys, clock):
    claims = {"iss": "mf-auth", "aud": "mf-services", "sub": "u-1", "username": "alice", "iat": int(clock()),
              "exp": int(clock()) + 60, "jti": "j"}
    assert tokens.verify(jwt.encode(claims, None, algorithm="none", headers={"kid": "key-2"})) is None
    assert tokens.verify(jwt.encode(claims, "k" * 32, algorithm="HS256", headers={"kid": "key-2"})) is None
    assert tokens.verify("not.a.token") is None


def test_secret_is_reread_after_five_minutes_so_rotation_takes_effect(keys, secrets, make_secret, rsa_keys, clock):
    assert keys.get().kid == "key-2"
    secrets.put_secret_value(SecretId=SECRET_ID, SecretString=make_secret(("key-3", rsa_keys[0]), [("key-2", rsa_keys[1])]))
    clock.advance(299)
    assert keys.get().kid == "key-2"  # still cached
    clock.advance(1)
    assert keys.get().kid == "key-3"
    assert [k["kid"] for k in keys.get().jwks["keys"]] == ["key-3", "key-2"]


def test_a_broken_secret_is_reported_but_the_last_good_key_keeps_signing(keys, secrets, clock):
    keys.check()
    secrets.put_secret_value(SecretId=SECRET_ID, SecretString="{not json")
    clock.advance(300)
    with pytest.raises(SigningKeyError, match="not valid JSON"):
        keys.check()
    assert keys.get().kid == "key-2"


def test_missing_secret_is_reported_clearly(secrets_client, clock):
    keys = SigningKeys(secrets_client, "no/such/secret", clock=clock)
    with pytest.raises(SigningKeyError, match="'no/such/secret' not found"):
        keys.check()
    with pytest.raises(SigningKeyError, match="JWT_SIGNING_SECRET_ID is not set"):
        SigningKeys(secrets_client, "", clock=clock).check()


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ({}, "no 'current' key"),
        ({"current": {"private_key_pem": "x"}}, "current key has no kid"),
        ({"current": {"kid": "a", "private_key_pem": "garbage"}}, "not an unencrypted PEM private key"),
        ({"current": {"kid": "a", "private_key_pem": "VALID"}, "previous": [{"kid": "a", "public_key_pem": "x"}]}, "repeats kid"),
        ({"current": {"kid": "a", "private_key_pem": "VALID"}, "previous": [{"kid": "b", "public_key_pem": "x"}]}, "not a PEM public key"),
        ({"current": {"kid": "a", "private_key_pem": "VALID"}, "previous": [{"kid": "b", "public_key_pem": "x", "retire_after": "soon"}]},
         "retire_after 'soon' is not a UTC time"),
        ({"current": {"kid": "a", "private_key_pem": "VALID", "sign_after": "later"}}, "sign_after 'later' is not a UTC time"),
        ({"current": {"kid": "a", "private_key_pem": "VALID"},
          "previous": [{"kid": "b", "public_key_pem": "PUBLIC_OF_OTHER", "private_key_pem": "VALID"}]}, "not the private half"),
    ],
)
def test_malformed_secrets_are_rejected_with_the_reason(secret, message, make_secret, rsa_keys):
    valid = json.loads(make_secret(("a", rsa_keys[0]), [("b", rsa_keys[1])]))
    valid_pem, other_public = valid["current"]["private_key_pem"], valid["previous"][0]["public_key_pem"]
    text = json.dumps(secret).replace('"VALID"', json.dumps(valid_pem)).replace('"PUBLIC_OF_OTHER"', json.dumps(other_public))
    with pytest.raises(SigningKeyError, match=message) as err:
        parse_key_set(text)
    assert "PRIVATE KEY" not in str(err.value)


def test_a_previous_key_verifies_only_until_its_retire_after(make_secret, rsa_keys):
    """The rotation function gives a retired key a retention (retire_after); it must stop verifying then, not at
    the next rotation a month later: after a key leak, "rotate now" must end the leaked key's trust."""
    secret = json.loads(make_secret(("new", rsa_keys[0]), [("old", rsa_keys[1]), ("hand-stored", rsa_keys[1])]))
    secret["previous"][0]["retire_after"] = "2026-11-22T12:30:00Z"
    secret["previous"][1]["public_key_pem"] = secret["previous"][0]["public_key_pem"]
    text = json.dumps(secret)
    retire = 1_795_350_600  # 2026-11-22T12:30:00Z
    before, after = parse_key_set(text, now=retire - 1), parse_key_set(text, now=retire)
    assert list(before.public_keys) == ["new", "old", "hand-stored"]
    assert list(after.public_keys) == ["new", "hand-stored"]  # no retire_after: until a rotation gives it one
    assert [k["kid"] for k in after.jwks["keys"]] == ["new", "hand-stored"]
