"""Fixtures of the cross-service tests: one stack of real processes per pytest session (see harness.py).

The stack starts on first use only (other tests in this folder never pay for it). Extra processes a
collected test asks for (through the fixtures below) start together with the standard ones, so their
start-up overlaps instead of adding up.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `import harness` from the test modules
import harness  # noqa: E402
import httpx  # noqa: E402
from auth_service.app import create_app as create_auth_app  # noqa: E402
from auth_service.settings import AuthSettings  # noqa: E402
from faultproxy import FAST_ARGON2, UvicornThread, issue_token, moto_environment, settings_for  # noqa: E402

# fixture name -> harness.EXTRAS process it stands for
EXTRA_FIXTURES = {
    "vc_start_e2e": "vc-start-e2e",
    "vc_start_no_persona": "vc-start-no-persona",
    "vc_start_off_bus": "vc-start-off-bus",
    "vc_start_forgetful": "vc-start-forgetful",
    "vc_start_sweeper": "vc-start-sweeper",
    "auth_drain": "auth-drain",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The modules that use the stack run last, one after another: the stack then lives only while they run (it
    stops at the end of the session) instead of idling through every other module collected after the first of them.
    The sort is stable: the order within each group stays as collected."""
    stack_modules = {item.path for item in items if "service_stack" in getattr(item, "fixturenames", ())}
    items.sort(key=lambda item: item.path in stack_modules)


@pytest.fixture(scope="session")
def service_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Stack]:
    wanted = {EXTRA_FIXTURES[name] for item in request.session.items
              for name in getattr(item, "fixturenames", ()) if name in EXTRA_FIXTURES}
    stack = harness.Stack(tmp_path_factory.mktemp("service-logs"))
    try:
        stack.start(sorted(wanted))
        yield stack
    finally:
        unclean = stack.stop()
        assert not unclean, (f"not stopped cleanly by SIGTERM within {harness.STOP_TIMEOUT_SECONDS:g} s: {', '.join(unclean)}"
                             + stack.explain(*(entry.split(" ")[0] for entry in unclean)))


@pytest.fixture
def stack(service_stack: harness.Stack) -> harness.Stack:
    """The shared stack, checked to be intact before each test."""
    service_stack.check_intact()
    return service_stack


@pytest.fixture(scope="session")
def api(service_stack: harness.Stack) -> Iterator[harness.Api]:
    client = harness.Api(service_stack)
    yield client
    client.close()


@pytest.fixture(scope="session")
def user(api: harness.Api) -> tuple[str, str]:
    """(user_id, access token) of a user registered once for the session."""
    return api.sign_up()


def _extra_fixture(fixture_name: str, process: str):
    """A session fixture that starts the EXTRAS ``process`` (if the stack has not yet) and returns its name."""
    @pytest.fixture(scope="session", name=fixture_name)
    def extra(service_stack: harness.Stack) -> str:
        service_stack.ensure(process)
        return process
    return extra


for _fixture_name, _process in EXTRA_FIXTURES.items():
    globals()[_fixture_name] = _extra_fixture(_fixture_name, _process)


# --- in-process services on a moto server (contract, fault-injection and schemathesis tests) ---------------


@pytest.fixture(scope="module")
def env():
    """A moto server set up by local/bootstrap.py, and each service's environment for it (per test module)."""
    with moto_environment() as env:
        yield env


@pytest.fixture(scope="module")
def auth(env):
    """auth on uvicorn (its own loop and thread), as persona and vc-start reach it over TCP."""
    server = UvicornThread(create_auth_app(settings_for(AuthSettings, env["auth"], **FAST_ARGON2, log_level="WARNING")), name="auth")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def caller(auth) -> tuple[str, str]:
    """(access_token, user_id) of a caller registered through auth's real API."""
    with httpx.Client(base_url=auth.url, timeout=10) as http:
        return issue_token(http)
