"""auth's configuration: the common service settings plus signing, token, hashing and lockout knobs."""

from __future__ import annotations

from pydantic import Field
from servicekit.settings import ServiceSettings


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

    lockout_threshold: int = Field(default=5, ge=1)
    lockout_seconds: int = Field(default=900, ge=1)
