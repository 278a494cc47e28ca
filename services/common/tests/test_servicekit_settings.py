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
