"""vc-start's configuration: the common service settings plus where auth and persona are."""

from __future__ import annotations

from servicekit.settings import AuthClientSettings


class VcStartSettings(AuthClientSettings):
    """AUTH_URL, JWT_ISSUER and JWT_AUDIENCE (token verification) come from AuthClientSettings."""

    service_name: str = "vc-start"
    public_path: str = "/api/vc"
    event_source: str | None = "mf.vc-start"
    # host:port of persona's gRPC server.
    persona_grpc_target: str = "127.0.0.1:50051"
