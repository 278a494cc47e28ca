"""Signing keys from Secrets Manager: the current private key plus previous public keys, cached.

SecretString: {"current": {"kid", "private_key_pem", "sign_after"}, "previous": [{"kid", "public_key_pem",
"private_key_pem", "sign_after", "retire_after"}]} (the rotation function's format; only the kids and the
current private key are required).
Every key is published in the JWKS at once. Auth signs with the newest key whose ``sign_after`` has come
(current first, then previous keys that still hold their private half): after a rotation the new key is
published for some minutes before any task signs with it, so every auth task's JWKS holds it by the time a
verifier meets its kid. Previous keys stay published so tokens they signed verify until they expire, and
only until their ``retire_after``; an entry without one (stored by hand) stays until the next rotation
gives it one.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from jwt.algorithms import RSAAlgorithm

from .errors import SigningKeyError

log = logging.getLogger(__name__)

MIN_RSA_BITS = 2048
# How often each auth task re-reads the secret (the rotation function's NEW_KEY_ACTIVATION_SECONDS must exceed it).
SECRET_CACHE_SECONDS = 300.0


@dataclass(frozen=True)
class KeySet:
    kid: str
    private_key: RSAPrivateKey
    # Every key a token may be verified with, by kid: the current one first, then previous ones.
    public_keys: dict[str, RSAPublicKey]
    jwks: dict[str, Any] = field(repr=False)


def _jwk(kid: str, key: RSAPublicKey) -> dict[str, Any]:
    jwk = RSAAlgorithm.to_jwk(key, as_dict=True)
    return {"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": jwk["n"], "e": jwk["e"]}


def _rsa(key: Any, what: str) -> Any:
    if not isinstance(key, (RSAPrivateKey, RSAPublicKey)):
        raise SigningKeyError(f"{what} is not an RSA key")
    if key.key_size < MIN_RSA_BITS:
        raise SigningKeyError(f"{what} is {key.key_size} bits; at least {MIN_RSA_BITS} required")
    return key


def _kid(entry: Any, what: str) -> str:
    kid = entry.get("kid") if isinstance(entry, dict) else None
    if not isinstance(kid, str) or not kid:
        raise SigningKeyError(f"{what} has no kid")
    return kid


def _time(entry: dict[str, Any], field_name: str, what: str) -> float | None:
    """The entry's ``field_name`` (UTC, ``%Y-%m-%dT%H:%M:%SZ`` as the rotation function writes it), or None."""
    value = entry.get(field_name)
    if value is None:
        return None
    try:
        return datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        raise SigningKeyError(f"{what}'s {field_name} {value!r} is not a UTC time like 2026-01-31T12:00:00Z") from None


def _private_key(pem: Any, what: str) -> RSAPrivateKey:
    if not isinstance(pem, str):
        raise SigningKeyError(f"{what} has no private_key_pem")
    try:
        private_key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise SigningKeyError(f"{what}'s private_key_pem is not an unencrypted PEM private key") from None
    return _rsa(private_key, what)


def parse_key_set(secret_string: str, *, now: float | None = None) -> KeySet:
    """Parse and validate the secret; errors name the problem, never the key material.

    At ``now`` (epoch seconds; default the current time) the set signs with the newest key whose
    ``sign_after`` has come, and leaves out previous keys whose ``retire_after`` has passed: a retired key
    stops verifying when its retention ends, not at the next rotation, which may be a month later.
    """
    now = time.time() if now is None else now
    try:
        data = json.loads(secret_string)
    except ValueError:
        raise SigningKeyError("signing key secret is not valid JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("current"), dict):
        raise SigningKeyError("signing key secret has no 'current' key")
    current = data["current"]
    kid = _kid(current, "current key")
    private_key = _private_key(current.get("private_key_pem"), "current key")
    public_keys: dict[str, RSAPublicKey] = {kid: private_key.public_key()}
    # Keys auth may sign with, newest first, with the time each may start: the current key, then previous
    # keys that still hold their private half (the rotation keeps it until a newer key signs).
    signers: list[tuple[str, RSAPrivateKey, float | None]] = [(kid, private_key, _time(current, "sign_after", "current key"))]

    previous = data.get("previous", [])
    if not isinstance(previous, list):
        raise SigningKeyError("signing key secret's 'previous' is not a list")
    for i, entry in enumerate(previous):
        what = f"previous key #{i}"
        old_kid = _kid(entry, what)
        if old_kid in public_keys:
            raise SigningKeyError(f"{what} repeats kid {old_kid!r}")
        retire_after = _time(entry, "retire_after", what)
        if retire_after is not None and retire_after <= now:
            continue  # its retention is over: tokens it signed have expired, and it must not verify new ones
        try:
            public_key = serialization.load_pem_public_key(str(entry.get("public_key_pem", "")).encode())
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise SigningKeyError(f"{what}'s public_key_pem is not a PEM public key") from None
        public_keys[old_kid] = _rsa(public_key, what)
        if "private_key_pem" in entry:
            kept = _private_key(entry["private_key_pem"], what)
            if kept.public_key().public_numbers() != public_keys[old_kid].public_numbers():
                raise SigningKeyError(f"{what}'s private_key_pem is not the private half of its public_key_pem")
            signers.append((old_kid, kept, _time(entry, "sign_after", what)))

    # The newest key whose sign_after has come; if none has (the very first key set), the oldest one there is.
    signing_kid, signing_key, _ = next(((k, key, after) for k, key, after in signers if after is None or after <= now), signers[-1])
    jwks = {"keys": [_jwk(k, key) for k, key in public_keys.items()]}
    return KeySet(kid=signing_kid, private_key=signing_key, public_keys=public_keys, jwks=jwks)


class SigningKeys:
    """Reads the secret at most every `cache_seconds`; thread-safe (callers run in worker threads)."""

    def __init__(
        self,
        secrets_client: Any,
        secret_id: str | None,
        *,
        clock: Callable[[], float],
        cache_seconds: float = SECRET_CACHE_SECONDS,
        retry_seconds: float = 30.0,
    ) -> None:
        self._client = secrets_client
        self._secret_id = secret_id
        self._clock = clock
        self._cache_seconds = cache_seconds
        self._retry_seconds = retry_seconds
        self._lock = threading.Lock()
        self._keys: KeySet | None = None
        self._next_load = 0.0
        # The latest load failure's message (a fresh exception is raised each time, not one shared instance).
        self._error: str | None = None

    def get(self) -> KeySet:
        """The current key set; after a failed refresh, the last good one (the error is kept for readiness)."""
        keys = self._keys
        if keys is not None and self._clock() < self._next_load:
            return keys
        # One thread refreshes; the others keep using the cached set rather than queue behind it.
        if not self._lock.acquire(blocking=keys is None):
            return keys  # type: ignore[return-value]
        try:
            if self._clock() >= self._next_load:
                self._refresh()
        finally:
            self._lock.release()
        if self._keys is None:
            raise SigningKeyError(self._error or "signing key not loaded")
        return self._keys

    def check(self) -> None:
        """Load the secret when due; raise SigningKeyError if the latest load failed (logged as well)."""
        self.get()
        if self._error is not None:
            raise SigningKeyError(self._error)

    def _refresh(self) -> None:
        try:
            keys = parse_key_set(self._read())
        except SigningKeyError as exc:
            # Retry sooner than the cache period so a fixed secret is picked up quickly.
            self._error = str(exc)
            self._next_load = self._clock() + self._retry_seconds
            log.error("signing key unavailable", extra={"error": str(exc), "serving_stale_key": self._keys is not None})
            return
        if self._keys is None or keys.kid != self._keys.kid:
            log.info("signing key loaded", extra={"kid": keys.kid, "verification_kids": list(keys.public_keys)})
        self._keys, self._error = keys, None
        self._next_load = self._clock() + self._cache_seconds

    def _read(self) -> str:
        if not self._secret_id:
            raise SigningKeyError("JWT_SIGNING_SECRET_ID is not set")
        try:
            resp = self._client.get_secret_value(SecretId=self._secret_id)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            if code == "ResourceNotFoundException":
                raise SigningKeyError(f"signing key secret {self._secret_id!r} not found") from None
            raise SigningKeyError(f"cannot read signing key secret {self._secret_id!r}: {code}") from None
        except BotoCoreError as exc:
            raise SigningKeyError(f"cannot read signing key secret {self._secret_id!r}: {type(exc).__name__}") from None
        secret = resp.get("SecretString")
        if not secret:
            raise SigningKeyError(f"signing key secret {self._secret_id!r} has no SecretString")
        return secret
