"""Settings shared by every service: the only place that reads the environment (pydantic-settings)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, PrivateAttr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Common service configuration; services subclass it and add their own fields."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    service_name: str = "service"
    # The address the HTTP server (PORT) and persona's gRPC server (GRPC_PORT) listen on. Every interface by
    # default: in a container the load balancer and Service Connect reach the task's ENI. `make run-local` and
    # the cross-service tests set 127.0.0.1, so nothing on a developer's network reaches the services.
    bind_host: str = Field(default="0.0.0.0", min_length=1)
    port: int = Field(default=8080, ge=0, le=65535)
    public_path: str = ""
    # How many proxies in front of the service append the caller's address to X-Forwarded-For (servicekit.forwarded):
    # 0 reads the socket's peer (make run-local); the services stack sets 2 behind the edge (CloudFront, then the ALB)
    # and 1 behind the load balancer alone. Entries further left were written by the caller and are not trusted.
    trusted_proxy_hops: int = Field(default=0, ge=0, le=10)
    log_level: str = "INFO"
    otel_exporter_otlp_endpoint: str | None = None
    # The standard OpenTelemetry variables; unset: servicekit.tracing's default (a small parent-based ratio).
    otel_traces_sampler: str | None = None
    otel_traces_sampler_arg: str | None = None
    # "on" / "off" parse as booleans; off is only for the benchmark's baseline.
    instrumentation: bool = True

    aws_region: str | None = None
    aws_endpoint_url: str | None = None
    table_name: str | None = None
    event_bus_name: str | None = None
    event_source: str | None = None
    queue_url: str | None = None
    # SQS long-poll wait (the maximum, 20 s, keeps empty receives cheap); tests use 0.
    queue_wait_seconds: int = Field(default=20, ge=0, le=20)
    # A failed event is tried again after base x its receive count, at most max seconds (servicekit.events).
    event_retry_backoff_seconds: int = Field(default=10, ge=0)
    event_retry_backoff_max_seconds: int = Field(default=60, ge=0)

    drain_seconds: float = Field(default=5.0, ge=0)
    shutdown_timeout_seconds: float = Field(default=20.0, ge=0)
    max_body_bytes: int = Field(default=65536, ge=0)

    http_timeout_seconds: float = Field(default=2.0, gt=0)
    call_budget_seconds: float = Field(default=5.0, gt=0)
    retry_attempts: int = Field(default=3, ge=1)
    # First backoff step; full jitter draws from [0, min(cap, base * 2**n)].
    retry_backoff_seconds: float = Field(default=0.1, ge=0)
    retry_backoff_max_seconds: float = Field(default=2.0, ge=0)
    breaker_failure_threshold: int = Field(default=5, ge=1)
    breaker_reset_seconds: float = Field(default=10.0, gt=0)

    # Circuit breakers live with the settings object: one set per app instance (per process in
    # production, per app in tests, so one test's open breaker never leaks into the next).
    _breakers: dict[str, Any] = PrivateAttr(default_factory=dict)
    # boto3 clients are thread-safe and slow to build: one per (kind, name) per settings object.
    _aws_clients: dict[tuple[str, ...], Any] = PrivateAttr(default_factory=dict)

    @field_validator("bind_host")
    @classmethod
    def _bare_host(cls, value: str) -> str:
        # "[::1]" and "::1" alike: uvicorn takes the bare address, bind_address() adds the brackets back.
        host = value.strip().removeprefix("[").removesuffix("]")
        if not host:
            raise ValueError("BIND_HOST is empty")
        return host

    def bind_address(self, port: int) -> str:
        """BIND_HOST and ``port`` as grpc's add_insecure_port takes them: ``host:port``, ``[v6]:port``."""
        return f"[{self.bind_host}]:{port}" if ":" in self.bind_host else f"{self.bind_host}:{port}"

    @property
    def normalized_public_path(self) -> str:
        """PUBLIC_PATH without a trailing slash ('' when unset or '/')."""
        path = (self.public_path or "").strip().rstrip("/")
        if path and not path.startswith("/"):
            path = "/" + path
        return path


# auth's ACCESS_TOKEN_TTL_SECONDS default (900) plus a minute for a TTL change rolling out; set it to auth's
# TTL + 60 when auth's changes (tests/test_contracts.py checks that auth's default tokens pass).
DEFAULT_JWT_MAX_LIFETIME_SECONDS = 960
DEFAULT_JWKS_MAX_STALE_SECONDS = 3600.0


class AuthClientSettings(ServiceSettings):
    """Settings of a service that accepts auth's access tokens (verified with auth's JWKS)."""

    # Base URL of auth; its JWKS is served at /.well-known/jwks.json.
    auth_url: str = "http://127.0.0.1:8081"
    jwt_issuer: str = "mf-auth"
    jwt_audience: str = "mf-services"
    # A token whose exp - iat is longer is refused, whatever its exp.
    jwt_max_lifetime_seconds: int = Field(default=DEFAULT_JWT_MAX_LIFETIME_SECONDS, ge=1)
    # While auth cannot be reached, the last JWKS keeps verifying this long after its cache time (300 s);
    # then requests get 503 auth_unavailable until auth answers.
    jwks_max_stale_seconds: float = Field(default=DEFAULT_JWKS_MAX_STALE_SECONDS, ge=0)

    @property
    def jwks_url(self) -> str:
        return self.auth_url.rstrip("/") + "/.well-known/jwks.json"
