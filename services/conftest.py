"""Shared by every test folder.

- Trace every request (the production default samples a small share, see servicekit.tracing), so
  tests that assert exported spans see them. Subprocesses inherit it.
- moto's EC2 starts without its catalogue of public AMIs (some 15,000 images parsed from JSON, about
  a second each time a test starts a mock with EC2 in it, e.g. the strangler-fig handler's load
  balancer): no test here reads an AMI. Subprocesses (moto servers) inherit it.
- ``atomic_moto``: for tests that race requests against in-process moto.
- ``lose_answer``: in-process moto applies DynamoDB calls and then answers them 500, as DynamoDB may (optionally
  with a concurrent request in between).
- ``answer_instead``: in-process moto's answer to an AWS operation replaced with one AWS gives under load (a
  throttling error, a transaction cancelled for throttling, an event entry rejected), which moto never gives.
- ``listening``: a process's listening sockets, for the tests of what the servers bind.
- ``local_bootstrap``: services/local/bootstrap.py, which creates the tables as the app does (indexes from cdk.json).
- ``aws_session``: one boto3 session for the clients tests make inside their own mock_aws().
"""

import importlib.util
import ipaddress
import json
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from moto.core.botocore_stubber import BotocoreStubber

os.environ.setdefault("OTEL_TRACES_SAMPLER", "parentbased_always_on")
os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")


@pytest.fixture(scope="session")
def local_bootstrap():
    """services/local/bootstrap.py (a script, not a package), loaded once."""
    if "local_bootstrap" not in sys.modules:
        spec = importlib.util.spec_from_file_location("local_bootstrap", Path(__file__).parent / "local" / "bootstrap.py")
        module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # registered first: it defines dataclasses
        spec.loader.exec_module(module)
    return sys.modules["local_bootstrap"]


@pytest.fixture(scope="session")
def aws_session():
    """One boto3 session for the clients tests make inside a mock_aws() of their own. mock_aws() drops boto3's
    default session, so each test's first boto3.client() would start a new one, which parses botocore's endpoint
    data and each service's model again (about 0.3 s of CPU per test with EC2's); moto answers every session alike."""
    import boto3

    return boto3.Session()


@pytest.fixture
def atomic_moto(monkeypatch):
    """Real DynamoDB applies each request atomically; moto's in-process backend does not lock, so serialize it."""
    lock = threading.Lock()

    def locked(answer, request):
        with lock:
            return answer(request)

    _intercept(monkeypatch, locked)


def _intercept(monkeypatch, handle: Callable) -> None:
    """Every request in-process moto answers goes through ``handle(answer, request)``, where ``answer(request)`` is
    the answer so far (moto's, or that of an earlier interception, which this one wraps)."""
    original = BotocoreStubber.process_request
    monkeypatch.setattr(BotocoreStubber, "process_request", lambda self, request: handle(lambda r: original(self, r), request))


def _header(request, name: str, default: str = "") -> str:
    value = request.headers.get(name, default)
    return value.decode() if isinstance(value, bytes) else value


@dataclass
class LostAnswers:
    """What `lose_answer` did: matching requests sent (the first and botocore's retries), answers lost."""

    sent: int = 0
    lost: int = 0


@pytest.fixture
def lose_answer(monkeypatch):
    """lose_answer(operation, containing, times=1, meanwhile=None) -> LostAnswers.

    The next `times` DynamoDB `operation` requests whose body contains `containing` are applied by moto and
    then answered 500 InternalServerError, which DynamoDB documents may come after a write succeeded;
    botocore retries them. `meanwhile()` runs after the write is applied and before its answer, e.g. a
    concurrent request landing between the first attempt and the retry. Each call adds its losses to those of
    earlier calls."""

    def lose(operation: str, containing: str, times: int = 1, meanwhile: Callable[[], object] | None = None) -> LostAnswers:
        state = LostAnswers()

        def process(answer, request):  # wraps earlier calls' interceptions: each call adds its own losses
            body = request.body.decode() if isinstance(request.body, bytes) else (request.body or "")
            matches = _header(request, "X-Amz-Target").endswith("." + operation) and containing in body
            state.sent += matches
            response = answer(request)
            if not matches or state.lost >= times or response is None or response[0] != 200:
                return response
            state.lost += 1
            if meanwhile is not None:
                meanwhile()
            error = {"__type": "com.amazonaws.dynamodb.v20120810#InternalServerError", "message": "Internal server error"}
            return 500, {"Content-Type": "application/x-amz-json-1.0"}, json.dumps(error)

        _intercept(monkeypatch, process)
        return state

    return lose


@dataclass
class Answered:
    """What `answer_instead` did: requests for the operation sent (botocore's retries included), and how many of
    them got the replacement answer."""

    sent: int = 0
    replaced: int = 0


@pytest.fixture
def answer_instead(monkeypatch):
    """answer_instead(operation, body, status=400, times=None) -> Answered.

    Requests for `operation` (the end of their X-Amz-Target: "GetItem", "TransactWriteItems", "PutEvents") get
    `body` as JSON with `status` instead of moto's answer, the first `times` of them (None: all); the rest reach
    moto. botocore parses (and retries) the answer as it would AWS's."""

    def answer(operation: str, body: dict, status: int = 400, times: int | None = None) -> Answered:
        state = Answered()

        def process(answer, request):
            if not _header(request, "X-Amz-Target").endswith("." + operation):
                return answer(request)
            state.sent += 1
            if times is not None and state.replaced >= times:
                return answer(request)
            state.replaced += 1
            return status, {"Content-Type": _header(request, "Content-Type", "application/x-amz-json-1.0")}, json.dumps(body)

        _intercept(monkeypatch, process)
        return state

    return answer


def _as_ipv4(ip: str) -> str:
    """grpc listens on IPv6 sockets that take IPv4 too: "::" is 0.0.0.0 and "::ffff:127.0.0.1" is 127.0.0.1."""
    address = ipaddress.ip_address(ip)
    if address.version == 6 and address.is_unspecified:
        return "0.0.0.0"
    return str(getattr(address, "ipv4_mapped", None) or address)


@pytest.fixture
def listening() -> Callable[..., set[tuple[str, int]]]:
    """listening(pid=None) -> {(address, port)}: the listening inet sockets of a process (default: this one),
    addresses in their IPv4 form where the socket takes IPv4 (see _as_ipv4)."""

    def sockets(pid: int | None = None) -> set[tuple[str, int]]:
        return {(_as_ipv4(c.laddr.ip), c.laddr.port) for c in psutil.Process(pid).net_connections(kind="inet")
                if c.status == psutil.CONN_LISTEN}

    return sockets
