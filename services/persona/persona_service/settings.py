"""persona's configuration: the common service settings plus its own (read from the environment)."""

from __future__ import annotations

from pydantic import Field
from servicekit.settings import AuthClientSettings

from .store import DEFAULT_MAX_PERSONAS_PER_OWNER


class PersonaSettings(AuthClientSettings):
    """AUTH_URL, JWT_ISSUER and JWT_AUDIENCE (token verification) come from AuthClientSettings."""

    service_name: str = "persona"
    public_path: str = "/api/persona"
    event_source: str | None = "mf.persona"

    grpc_port: int = Field(default=50051, ge=0, le=65535)
    # How long a ReserveSlot hold lives unless SessionStarted confirms it.
    reservation_hold_seconds: int = Field(default=120, ge=1)
    # How many personas one owner may have; creating one more answers 409 persona_limit_reached.
    max_personas_per_owner: int = Field(default=DEFAULT_MAX_PERSONAS_PER_OWNER, ge=1, le=1000)
