"""vc-start's configuration: the common service settings plus where auth and persona are."""

from __future__ import annotations

from pydantic import Field
from servicekit.settings import AuthClientSettings

# persona's RESERVATION_HOLD_SECONDS (120) plus a margin: by then a session's hold is confirmed or expired.
DEFAULT_SESSION_PENDING_TIMEOUT_SECONDS = 180.0


class VcStartSettings(AuthClientSettings):
    """AUTH_URL, JWT_ISSUER and JWT_AUDIENCE (token verification) come from AuthClientSettings."""

    service_name: str = "vc-start"
    public_path: str = "/api/vc"
    event_source: str | None = "mf.vc-start"
    # host:port of persona's gRPC server.
    persona_grpc_target: str = "127.0.0.1:50051"
    # The deadline the API gives each new session (stored with it, so every process judges by the same one): a session
    # still PENDING this long after it was created is CANCELLED (reason timed_out) when it is next read or confirmed,
    # or when the worker's sweeper finds it. Keep it above persona's RESERVATION_HOLD_SECONDS so no session times out
    # while its hold is live.
    session_pending_timeout_seconds: float = Field(default=DEFAULT_SESSION_PENDING_TIMEOUT_SECONDS, gt=0)
    # How often the worker sweeps for overdue sessions nobody reads and unpublished compensations (sweeper.py).
    session_sweep_interval_seconds: float = Field(default=30.0, gt=0)
