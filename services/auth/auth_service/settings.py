"""auth's configuration: the common service settings plus signing, token, hashing and login throttling knobs."""

from __future__ import annotations

from pydantic import Field, model_validator
from servicekit.settings import ServiceSettings

from .throttle import MEMORY_SECONDS


class AuthSettings(ServiceSettings):
    service_name: str = "auth"
    public_path: str = "/api/auth"

    jwt_signing_secret_id: str | None = None
    jwt_issuer: str = "mf-auth"
    jwt_audience: str = "mf-services"
    access_token_ttl_seconds: int = Field(default=900, ge=1)

    # OWASP's minimum Argon2id configuration; tests lower both for speed.
    argon2_time_cost: int = Field(default=2, ge=1)
    argon2_memory_kib: int = Field(default=19456, ge=8)

    # Login throttling (throttle.py, README "Login throttling"): failures in a row from one address for one
    # username before that address is locked out of it; the first lock, doubling per lock up to the max (an
    # address's record lasts a day, so a lock cannot outlast it); failures per username and UTC day from all
    # addresses after which each address gets one attempt per lock (at most 100: their ids are kept in one item).
    lockout_threshold: int = Field(default=5, ge=1, le=100)
    lockout_seconds: int = Field(default=60, ge=1)
    lockout_max_seconds: int = Field(default=900, ge=1, le=MEMORY_SECONDS)
    lockout_account_threshold: int = Field(default=20, ge=1, le=100)

    @model_validator(mode="after")
    def _first_lock_within_the_longest(self) -> AuthSettings:
        if self.lockout_seconds > self.lockout_max_seconds:
            raise ValueError(f"LOCKOUT_SECONDS={self.lockout_seconds} is invalid: the first lock cannot be longer than "
                             f"LOCKOUT_MAX_SECONDS={self.lockout_max_seconds}")
        return self
