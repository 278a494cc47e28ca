"""Secrets Manager rotation function for the JWT signing-key secret.

Each rotation makes a new RSA key the ``current`` one and moves the old current key to ``previous`` with
a ``retire_after`` time, so tokens it signed keep verifying (auth publishes every previous key in its
JWKS) until they have expired. Previous keys past their ``retire_after`` are dropped.

The new key is published at once but signs only from its ``sign_after``, NEW_KEY_ACTIVATION_SECONDS
later: by then every auth task has re-read the secret (every 300 s) and publishes it, so a verifier that
meets the new kid finds it in the JWKS whichever auth task it asks. Until then auth keeps signing with
the newest older key that already signed, so the old current key keeps its private half in
``previous`` while no newer key signs; a later rotation drops it. The format is the one
services/auth/auth_service/keys.py reads:

    {"current": {"kid", "private_key_pem", "created_at", "sign_after"},
     "previous": [{"kid", "public_key_pem", ["private_key_pem", "sign_after"], "retired_at", "retire_after"}, ...]}
                                                                              (newest first)

Secrets Manager calls the four steps in order with the same ClientRequestToken, and may repeat any of
them: every step is idempotent. Environment: PREVIOUS_KEY_RETENTION_SECONDS (how long a retired key
stays in ``previous`` after it has stopped signing).
"""

from __future__ import annotations

import json
import logging
import os
import time
from datetime import datetime, timezone
from typing import Any

import boto3
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

log = logging.getLogger()
log.setLevel(logging.INFO)

KEY_BITS = 2048  # auth refuses keys below 2048 bits (keys.py MIN_RSA_BITS)
PUBLIC_EXPONENT = 65537
PENDING, CURRENT = "AWSPENDING", "AWSCURRENT"
# From publishing a new key to signing with it: longer than auth's re-read of the secret (300 s,
# auth_service/keys.py SECRET_CACHE_SECONDS), so every auth task publishes the key before any task signs with it.
NEW_KEY_ACTIVATION_SECONDS = 360


def handler(event: dict[str, Any], context: Any) -> None:
    """Entry point: ``event`` is {"SecretId", "ClientRequestToken", "Step"} from Secrets Manager."""
    arn, token, step = event["SecretId"], event["ClientRequestToken"], event["Step"]
    client = boto3.client("secretsmanager")
    metadata = client.describe_secret(SecretId=arn)
    if not metadata.get("RotationEnabled"):
        raise ValueError(f"secret {arn} is not enabled for rotation")
    stages = metadata.get("VersionIdsToStages", {}).get(token)
    if stages is None:
        raise ValueError(f"secret version {token} has no stage for rotation of secret {arn}")
    if CURRENT in stages:
        log.info("version %s is already AWSCURRENT; nothing to do in %s", token, step)
        return
    if PENDING not in stages:
        raise ValueError(f"secret version {token} is not AWSPENDING for rotation of secret {arn}")
    steps = {"createSecret": create_secret, "setSecret": set_secret, "testSecret": verify_secret, "finishSecret": finish_secret}
    if step not in steps:
        raise ValueError(f"unknown rotation step {step!r}")
    steps[step](client, arn, token)


def create_secret(client: Any, arn: str, token: str) -> None:
    """Store the next key set as AWSPENDING under ``token``, unless an earlier call already did."""
    try:
        client.get_secret_value(SecretId=arn, VersionId=token, VersionStage=PENDING)
        log.info("createSecret: version %s already holds the pending key set", token)
        return
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
    current = client.get_secret_value(SecretId=arn, VersionStage=CURRENT)["SecretString"]
    key_set = next_key_set(current, token=token, now=time.time(), retention_seconds=_retention_seconds())
    client.put_secret_value(SecretId=arn, ClientRequestToken=token, SecretString=json.dumps(key_set), VersionStages=[PENDING])
    log.info("createSecret: new key %s pending; verification keys %s", key_set["current"]["kid"],
             [entry["kid"] for entry in key_set["previous"]])


def set_secret(client: Any, arn: str, token: str) -> None:
    """Nothing outside the secret holds the key: auth reads it from the secret itself."""
    log.info("setSecret: nothing to set for %s", arn)


def verify_secret(client: Any, arn: str, token: str) -> None:
    """The pending key set must be one auth can load, and its key must sign and verify."""
    pending = client.get_secret_value(SecretId=arn, VersionId=token, VersionStage=PENDING)["SecretString"]
    private_key = check_key_set(json.loads(pending))
    message = f"rotation test {token}".encode()
    signature = private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    private_key.public_key().verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    log.info("testSecret: pending key set of %s is valid", arn)


def finish_secret(client: Any, arn: str, token: str) -> None:
    """Move AWSCURRENT to ``token`` (Secrets Manager then labels the old version AWSPREVIOUS) and take
    AWSPENDING off it: no version left pending is the state the next rotation starts from."""
    versions = client.describe_secret(SecretId=arn)["VersionIdsToStages"]
    current = next((version for version, stages in versions.items() if CURRENT in stages), None)
    if current != token:
        client.update_secret_version_stage(SecretId=arn, VersionStage=CURRENT, MoveToVersionId=token, RemoveFromVersionId=current)
        log.info("finishSecret: version %s is now AWSCURRENT (was %s)", token, current)
    client.update_secret_version_stage(SecretId=arn, VersionStage=PENDING, RemoveFromVersionId=token)


def next_key_set(current_secret: str, *, token: str, now: float, retention_seconds: int,
                 activation_seconds: int = NEW_KEY_ACTIVATION_SECONDS) -> dict[str, Any]:
    """A new current key that signs from ``now + activation_seconds``; the old current key first among the
    previous ones (retired ``retention_seconds`` after the new key starts signing), then the unexpired
    older ones. A previous key keeps its private half only while no newer key signs yet.

    The first rotation finds the placeholder Secrets Manager generated (not a key set): it starts
    the key set afresh. A previous key without a readable ``retire_after`` (stored by hand) gets one
    now, so it is dropped a retention period later like the rest.
    """
    old = _json_object(current_secret)
    sign_after = now + activation_seconds
    retire_after = _iso(sign_after + retention_seconds)
    previous = []
    old_current = old.get("current")
    old_public_pem = _public_pem_of(old_current)
    newer_signs = False  # whether a key newer than the entry at hand signs already (the new one does not yet)
    if old_public_pem:
        entry = {"kid": old_current["kid"], "public_key_pem": old_public_pem, "private_key_pem": old_current["private_key_pem"],
                 "retired_at": _iso(sign_after), "retire_after": retire_after}
        if _parse_iso(old_current.get("sign_after")) is not None:
            entry["sign_after"] = old_current["sign_after"]
        previous.append(entry)
        newer_signs = _signs(entry, now)
    elif old:
        log.warning("the current secret holds no loadable current key (the first rotation replaces a placeholder)")
    for entry in old.get("previous", []) if isinstance(old.get("previous"), list) else []:
        if not (isinstance(entry, dict) and isinstance(entry.get("kid"), str) and isinstance(entry.get("public_key_pem"), str)):
            log.warning("dropping a malformed previous key entry")
            continue
        expiry = _parse_iso(entry.get("retire_after"))
        if expiry is not None and expiry <= now:
            log.info("dropping previous key %s: retired after %s", entry["kid"], entry["retire_after"])
            continue
        kept = {**entry, "retire_after": entry["retire_after"] if expiry is not None else retire_after}
        if newer_signs:
            kept.pop("private_key_pem", None)  # a newer key signs: this one only verifies from now on
        previous.append(kept)
        newer_signs = newer_signs or _signs(kept, now)

    private_key = rsa.generate_private_key(public_exponent=PUBLIC_EXPONENT, key_size=KEY_BITS)
    kid = f"{datetime.fromtimestamp(now, timezone.utc):%Y%m%dT%H%M%SZ}-{token.replace('-', '')[:8]}"
    pem = private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    return {"current": {"kid": kid, "private_key_pem": pem, "created_at": _iso(now), "sign_after": _iso(sign_after)},
            "previous": [entry for entry in previous if entry["kid"] != kid]}


def _signs(entry: dict[str, Any], now: float) -> bool:
    """Whether auth may sign with ``entry`` at ``now``: it has its private half, and its sign_after (if any) has come."""
    if not isinstance(entry.get("private_key_pem"), str):
        return False
    sign_after = _parse_iso(entry.get("sign_after"))
    return sign_after is None or sign_after <= now


def check_key_set(key_set: Any) -> rsa.RSAPrivateKey:
    """Raise ValueError unless ``key_set`` is what auth loads: an RSA current key of KEY_BITS or more,
    previous RSA public keys, distinct kids. Returns the current private key."""
    if not isinstance(key_set, dict) or not isinstance(key_set.get("current"), dict):
        raise ValueError("key set has no current key")
    current = key_set["current"]
    private_key = serialization.load_pem_private_key(current["private_key_pem"].encode(), password=None)
    if not isinstance(private_key, rsa.RSAPrivateKey) or private_key.key_size < KEY_BITS:
        raise ValueError("current key is not an RSA key of at least 2048 bits")
    kids = [current["kid"]]
    for entry in key_set.get("previous", []):
        public_key = serialization.load_pem_public_key(entry["public_key_pem"].encode())
        if not isinstance(public_key, rsa.RSAPublicKey) or public_key.key_size < KEY_BITS:
            raise ValueError(f"previous key {entry['kid']} is not an RSA key of at least 2048 bits")
        if "private_key_pem" in entry:
            kept_private = serialization.load_pem_private_key(entry["private_key_pem"].encode(), password=None)
            if not isinstance(kept_private, rsa.RSAPrivateKey) or kept_private.public_key().public_numbers() != public_key.public_numbers():
                raise ValueError(f"previous key {entry['kid']}'s private_key_pem is not the private half of its public_key_pem")
        kids.append(entry["kid"])
    if not all(isinstance(kid, str) and kid for kid in kids) or len(set(kids)) != len(kids):
        raise ValueError("key IDs must be non-empty and distinct")
    return private_key


def _retention_seconds() -> int:
    return int(os.environ["PREVIOUS_KEY_RETENTION_SECONDS"])


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _public_pem_of(current: Any) -> str | None:
    """The SubjectPublicKeyInfo PEM of a stored current key, or None if it has none that loads."""
    if not (isinstance(current, dict) and isinstance(current.get("kid"), str) and isinstance(current.get("private_key_pem"), str)):
        return None
    try:
        private_key = serialization.load_pem_private_key(current["private_key_pem"].encode(), password=None)
    except (ValueError, TypeError):
        return None
    if not isinstance(private_key, rsa.RSAPrivateKey):
        return None
    return private_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _iso(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(int(epoch_seconds), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None
