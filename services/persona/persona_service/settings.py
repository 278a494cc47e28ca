"""persona's configuration: the common service settings plus its own (read from the environment)."""

from __future__ import annotations

from pydantic import Field
from servicekit.settings import ServiceSettings


class PersonaSettings(ServiceSettings):
    service_name: str = "persona"
    public_path: str = "/api/persona"
    event_source: str | None = "mf.persona"

    # Base URL of auth; its JWKS (/.well-known/jwks.json) verifies callers' tokens.
    auth_url: str = "http://127.0.0.1:8081"
    jwt_issuer: str = "mf-auth"
    jwt_audience: str = "mf-services"

    grpc_port: int = Field(default=50051, ge=0, le=65535)
    # How long a ReserveSlot hold lives unless SessionStarted confirms it.
    reservation_hold_seconds: int = Field(default=120, ge=1)

    @property
    def jwks_url(self) -> str:
        return self.auth_url.rstrip("/") + "/.well-known/jwks.json"
