"""ServiceSettings reads the documented environment variables."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from servicekit.settings import ServiceSettings


def test_environment_is_read_with_defaults(monkeypatch):
    monkeypatch.setenv("SERVICE_NAME", "auth")
    monkeypatch.setenv("PUBLIC_PATH", "/api/auth/")
    monkeypatch.setenv("INSTRUMENTATION", "off")
    monkeypatch.setenv("DRAIN_SECONDS", "2.5")
    monkeypatch.delenv("PORT", raising=False)
    settings = ServiceSettings()
    assert settings.service_name == "auth"
    assert settings.normalized_public_path == "/api/auth"
    assert settings.instrumentation is False
    assert settings.drain_seconds == 2.5
    assert (settings.port, settings.max_body_bytes, settings.shutdown_timeout_seconds) == (8080, 65536, 20.0)
    assert (settings.http_timeout_seconds, settings.call_budget_seconds, settings.retry_attempts) == (2.0, 5.0, 3)


def test_instrumentation_on_and_subclass_fields(monkeypatch):
    class AuthSettings(ServiceSettings):
        jwt_issuer: str = "mf-auth"

    monkeypatch.setenv("INSTRUMENTATION", "on")
    monkeypatch.setenv("JWT_ISSUER", "other")
    settings = AuthSettings()
    assert settings.instrumentation is True and settings.jwt_issuer == "other"


def test_invalid_values_fail_with_a_clear_error(monkeypatch):
    monkeypatch.setenv("PORT", "not-a-port")
    with pytest.raises(ValidationError, match="port"):
        ServiceSettings()


def test_bind_host_defaults_to_every_interface_and_is_read_from_the_environment(monkeypatch):
    monkeypatch.delenv("BIND_HOST", raising=False)
    settings = ServiceSettings()
    assert settings.bind_host == "0.0.0.0"  # a container's ENI (ALB, Service Connect) must reach it
    assert settings.bind_address(50051) == "0.0.0.0:50051"
    monkeypatch.setenv("BIND_HOST", "127.0.0.1")
    assert ServiceSettings().bind_address(50051) == "127.0.0.1:50051"


@pytest.mark.parametrize("value", ["::1", "[::1]", " ::1 "])
def test_bind_host_ipv6_is_bare_for_uvicorn_and_bracketed_for_grpc(monkeypatch, value):
    monkeypatch.setenv("BIND_HOST", value)
    settings = ServiceSettings()
    assert (settings.bind_host, settings.bind_address(8080)) == ("::1", "[::1]:8080")


@pytest.mark.parametrize("value", ["", " ", "[]"])
def test_empty_bind_host_is_refused(monkeypatch, value):
    monkeypatch.setenv("BIND_HOST", value)
    with pytest.raises(ValidationError, match="bind_host"):
        ServiceSettings()
