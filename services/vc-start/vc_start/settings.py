"""vc-start's configuration: the common service settings plus where auth and persona are."""

from __future__ import annotations

from servicekit.settings import ServiceSettings


class VcStartSettings(ServiceSettings):
    service_name: str = "vc-start"
    public_path: str = "/api/vc"
    event_source: str | None = "mf.vc-start"
    # Base URL of auth: its JWKS verifies callers' tokens.
    auth_url: str = "http://127.0.0.1:8081"
    # host:port of persona's gRPC server.
    persona_grpc_target: str = "127.0.0.1:50051"
    jwt_issuer: str = "mf-auth"
    jwt_audience: str = "mf-services"

    @property
    def jwks_url(self) -> str:
        return self.auth_url.rstrip("/") + "/.well-known/jwks.json"
