"""Real services on loopback against a real moto server, for the cross-service tests.

One moto server (run_local's, `local/moto_server.py`: one AWS request at a time, as DynamoDB applies each
atomically) runs on a free port as a child process; every service and
worker is a `python -m <module>` child started exactly as `make run-local` starts it (the process
specs and the launcher come from services/local/run_local.py, the resources from
services/local/bootstrap.py), so they listen on 127.0.0.1 only (run_local's BIND_HOST; tests/test_loopback.py
checks it on these processes, so it is not set again here). What this module adds for tests:

- free ports for everything and a resource prefix of its own; moto in its own process, because
  moto's state is global to a process and a mock_aws() in a test of this process resets it on exit;
- one log file per process (JSON lines), readable while the process runs;
- extra processes that differ from the standard ones in one setting (a vc-start whose JWKS cache
  is still cold, one pointed at a closed persona port, one publishing to a side bus, an auth with
  production password hashing for the SIGTERM test);
- "tap" queues: a second target on each saga rule, so a test sees every event exactly as the
  consumer's queue received it (and can deliver an exact copy again);
- bounded waits whose failure message ends with the tail of the relevant logs.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TextIO, TypeVar

import boto3
import httpx
from opentelemetry.instrumentation.utils import suppress_http_instrumentation

SERVICES_DIR = Path(__file__).resolve().parents[1]
REGION = "eu-central-1"
# Short (the app's queues: 150 s): how long a received message stays hidden unless its worker says otherwise.
VISIBILITY_TIMEOUT_SECONDS = 2
# The workers retry a failed message after this many seconds x its receive count (the services' default is 10):
# a poison message reaches its DLQ within seconds.
WORKER_RETRY_BACKOFF_SECONDS = 1
MAX_RECEIVE_COUNT = 3
STARTUP_TIMEOUT_SECONDS = 60.0  # nine Python processes importing OpenTelemetry/grpc/boto3 on 2 busy cores
STOP_TIMEOUT_SECONDS = 10.0
HTTP_TIMEOUT_SECONDS = 10.0
PASSWORD = "correct horse battery staple"

T = TypeVar("T")


def load_module(name: str, path: Path) -> Any:
    """Import a file that is not in a package (services/local/*.py, a Lambda handler) under a unique module name."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader, f"cannot load {path}"
    module = sys.modules[name] = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]  # a half-imported module must not pass for a loaded one
        raise
    return module


def _run_local() -> Any:
    """services/local/run_local.py: process specs, launcher, bootstrap. Loaded on first use, so a broken
    run_local fails these tests only, not the collection of every test in this folder."""
    return load_module("services_local_run_local", SERVICES_DIR / "local" / "run_local.py")


def _wait_for_moto(process: subprocess.Popen[bytes], endpoint: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited with code {process.returncode} before answering on {endpoint}")
        try:
            if httpx.get(f"{endpoint}/moto-api/", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"moto server did not answer on {endpoint} within {timeout:g} s")


def _python() -> str:
    """The services' virtualenv interpreter (the one that has their dependencies)."""
    venv = SERVICES_DIR.parent / ".venv-services" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


# Cheap password hashing for the shared auth (the spec's test values); the SIGTERM test's own auth keeps production costs.
FAST_ARGON2 = {"ARGON2_TIME_COST": "1", "ARGON2_MEMORY_KIB": "1024"}


# --- extra processes ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Extra:
    """A process like `base` with `env` changed (values may depend on the stack, hence callables)."""

    base: str
    env: Callable[[Stack], dict[str, str]]
    drop_env: tuple[str, ...] = ()


EXTRAS: dict[str, Extra] = {
    # Never called before the e2e test: its JWKS cache is cold, so verifying the token calls auth.
    "vc-start-e2e": Extra("vc-start", lambda s: {}),
    # persona "down": its gRPC target is a port nobody listens on; a short budget keeps the 503 quick.
    "vc-start-no-persona": Extra("vc-start", lambda s: {"PERSONA_GRPC_TARGET": f"127.0.0.1:{s.closed_port}",
                                                        "CALL_BUDGET_SECONDS": "2"}),
    # Publishes to a side bus nobody consumes (only a tap): its sessions stay PENDING with a HELD slot.
    "vc-start-off-bus": Extra("vc-start", lambda s: {"EVENT_BUS_NAME": s.off_bus}),
    # The same, and its sessions are overdue 2 s after they are stored (nobody reads them).
    "vc-start-forgetful": Extra("vc-start", lambda s: {"EVENT_BUS_NAME": s.off_bus, "SESSION_PENDING_TIMEOUT_SECONDS": "2"}),
    # A vc-start worker that sweeps every 0.5 s (the stack's worker: every 30 s). It consumes a queue of its own that
    # nothing feeds, so the saga's events keep going to the stack's worker.
    "vc-start-sweeper": Extra("vc-start-worker", lambda s: {"SESSION_SWEEP_INTERVAL_SECONDS": "0.5", "QUEUE_URL": s.idle_queue_url}),
    # Production argon2 costs (logins take tens of ms) and a short drain, for the SIGTERM test.
    "auth-drain": Extra("auth", lambda s: {"DRAIN_SECONDS": "3", "SHUTDOWN_TIMEOUT_SECONDS": "10"},
                        drop_env=tuple(FAST_ARGON2)),
}


# --- taps --------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TapMessage:
    body: str  # the SQS body exactly as delivered: an EventBridge event
    event: dict[str, Any]

    @property
    def detail_type(self) -> str:
        return self.event.get("detail-type", "")

    @property
    def detail(self) -> dict[str, Any]:
        return self.event.get("detail") or {}

    @property
    def data(self) -> dict[str, Any]:
        return self.detail.get("data") or {}


class Tap:
    """A queue receiving a copy of every event some rule routes; read and kept in memory."""

    def __init__(self, sqs: Any, url: str) -> None:
        self.sqs, self.url = sqs, url
        self.messages: list[TapMessage] = []

    def poll(self) -> None:
        while True:
            batch = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
            if not batch:
                return
            for message in batch:
                self.messages.append(TapMessage(message["Body"], json.loads(message["Body"])))
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])

    def find(self, detail_type: str, session_id: str) -> list[TapMessage]:
        self.poll()
        return [m for m in self.messages if m.detail_type == detail_type and m.data.get("session_id") == session_id]


# --- log files ---------------------------------------------------------------------------------------------

class LogFiles:
    """The launcher's output callback: `<name> | <line>` -> one file per process."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._files: dict[str, TextIO] = {}

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.log"

    def write(self, text: str) -> None:
        name, _, line = text.partition(" | ")
        name = name.strip()
        handle = self._files.get(name)
        if handle is None:
            handle = self._files[name] = self.path(name).open("a", encoding="utf-8")
        handle.write(line + "\n")
        handle.flush()  # tests read the files while the processes run

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()


# --- the stack ---------------------------------------------------------------------------------------------

class Stack:
    """moto + auth, persona, vc-start and both workers (+ any EXTRAS), all on 127.0.0.1."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.logs = LogFiles(log_dir)
        self.rl = _run_local()
        # Our own writer, not the launcher's log_dir: the tests read the files while the processes run (flushed per line).
        self.launcher = self.rl.Launcher(output=self.logs.write)
        self.prefix = "x" + uuid.uuid4().hex[:6]
        self.moto: subprocess.Popen[bytes] | None = None
        self.endpoint = ""
        self.env: dict[str, dict[str, str]] = {}
        self.specs: dict[str, Any] = {}
        self.urls: dict[str, str] = {}
        self.taps: dict[str, Tap] = {}
        self.closed_port = 0
        self.off_bus = f"{self.prefix}-off-bus"
        self.idle_queue_url = ""  # a queue nothing sends to (_add_taps)
        self._clients: dict[str, Any] = {}

    # lifecycle ---------------------------------------------------------------------------------

    def start(self, extras: Iterable[str] = ()) -> Stack:
        (port,) = self.rl.free_ports(1)
        spec = self.rl.moto_spec(port)
        self.moto = subprocess.Popen([_python(), *spec.argv[1:]], env=spec.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.endpoint = f"http://127.0.0.1:{port}"
        _wait_for_moto(self.moto, self.endpoint)
        self.env = self.rl.bootstrap(self.endpoint, REGION, self.prefix, visibility_timeout_seconds=VISIBILITY_TIMEOUT_SECONDS,
                                     max_receive_count=MAX_RECEIVE_COUNT)
        self._add_taps()

        auth, persona, grpc, vc_start, self.closed_port = self.rl.free_ports(5)
        ports = self.rl.Ports(moto=port, auth=auth, persona=persona, persona_grpc=grpc, vc_start=vc_start)
        workers = {name: {"EVENT_RETRY_BACKOFF_SECONDS": str(WORKER_RETRY_BACKOFF_SECONDS)} for name in ("persona-worker", "vc-start-worker")}
        for spec in self.rl.service_specs(self.env, ports, {"auth": dict(FAST_ARGON2), **workers}):
            self.specs[spec.name] = dataclasses.replace(spec, argv=[_python(), *spec.argv[1:]])
        self.urls = {"auth": f"http://127.0.0.1:{auth}", "persona": f"http://127.0.0.1:{persona}",
                     "vc-start": f"http://127.0.0.1:{vc_start}"}
        names = list(self.specs)
        for name in extras:
            self._add_extra(name)
            names.append(name)
        for name in names:
            self.launcher.start(self.specs[name])
        self._wait_started(names)
        return self

    def ensure(self, name: str) -> str:
        """Start an EXTRAS process now if it is not running yet; returns its base URL ("" for a worker)."""
        if name not in self.launcher.children:
            self._add_extra(name)
            self.launcher.start(self.specs[name])
            self._wait_started([name])
        return self.urls.get(name, "")

    def stop(self) -> list[str]:
        """Every process (SIGTERM, then SIGKILL after the timeout), then moto. Returns the processes that did not
        shut down cleanly (had to be killed, or exited non-zero): SIGTERM must end each one with status 0."""
        processes = {name: child.process for name, child in self.launcher.children.items()}
        try:
            killed = self.launcher.stop(timeout=STOP_TIMEOUT_SECONDS)
        finally:
            if self.moto is not None:
                self.moto.terminate()
                self.moto.wait(timeout=STOP_TIMEOUT_SECONDS)
            self.logs.close()
        return [f"{name} (killed)" if name in killed else f"{name} (exit {process.returncode})"
                for name, process in processes.items() if name in killed or process.returncode != 0]

    def _add_extra(self, name: str) -> None:
        extra = EXTRAS[name]
        base = self.specs[extra.base]
        env = {k: v for k, v in base.env.items() if k not in extra.drop_env}
        env.update(extra.env(self))
        if base.ready_url is None:  # a worker: no HTTP
            self.specs[name] = dataclasses.replace(base, name=name, env=env)
            return
        (port,) = self.rl.free_ports(1)
        env["PORT"] = str(port)
        self.specs[name] = dataclasses.replace(base, name=name, env=env, ready_url=f"http://127.0.0.1:{port}/health/ready")
        self.urls[name] = f"http://127.0.0.1:{port}"

    def _wait_started(self, names: list[str]) -> None:
        try:
            self.launcher.wait_ready(names, timeout=STARTUP_TIMEOUT_SECONDS)
            time.sleep(0.3)  # workers have no ready URL: let a crash on start-up show
            self.launcher.raise_if_dead()
        except self.rl.ChildFailed as error:
            raise RuntimeError(f"the service stack did not start: {error}\n(logs in {self.log_dir})") from None

    def _add_taps(self) -> None:
        """A tap queue as a second target of each saga rule, and a side bus whose only consumer is a tap."""
        sqs, events = self.client("sqs"), self.client("events")
        resources = self.env["resources"]
        bus = resources["event_bus_name"]
        for consumer in ("persona", "vc_start"):
            tap_url, tap_arn = self._tap_queue(f"{self.prefix}-tap-{consumer}")
            rule = resources[f"{consumer}_rule_name"]
            targets = events.list_targets_by_rule(Rule=rule, EventBusName=bus)["Targets"]
            events.put_targets(Rule=rule, EventBusName=bus, Targets=[*targets, {"Id": "tap", "Arn": tap_arn}])
            self.taps[consumer.replace("_", "-")] = Tap(sqs, tap_url)
        events.create_event_bus(Name=self.off_bus)
        off_url, off_arn = self._tap_queue(f"{self.prefix}-tap-off-bus")
        events.put_rule(Name=f"{self.prefix}-off-bus-all", EventBusName=self.off_bus,
                        EventPattern=json.dumps({"source": [f"{self.prefix}.vc-start"]}), State="ENABLED")
        events.put_targets(Rule=f"{self.prefix}-off-bus-all", EventBusName=self.off_bus, Targets=[{"Id": "tap", "Arn": off_arn}])
        self.taps["off-bus"] = Tap(sqs, off_url)
        self.idle_queue_url, _ = self._tap_queue(f"{self.prefix}-idle")

    def _tap_queue(self, name: str) -> tuple[str, str]:
        sqs = self.client("sqs")
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        return url, sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]

    # AWS ---------------------------------------------------------------------------------------

    def client(self, name: str) -> Any:
        if name not in self._clients:
            self._clients[name] = boto3.client(name, region_name=REGION, endpoint_url=self.endpoint,
                                               aws_access_key_id="testing", aws_secret_access_key="testing")
        return self._clients[name]

    def resource(self, key: str) -> str:
        return self.env["resources"][key]

    def table(self, service: str) -> str:
        return self.env[service]["TABLE_NAME"]

    def source(self, service: str) -> str:
        return f"{self.prefix}.{service}"

    def check_intact(self) -> None:
        """Fail clearly if moto lost our state (moto's backends are global to this process: a mock_aws()
        elsewhere in the same pytest run resets them) or a long-running process died."""
        try:
            self.client("dynamodb").describe_table(TableName=self.table("vc-start"))
        except Exception as error:
            raise AssertionError(f"moto no longer holds the stack's resources ({type(error).__name__}): "
                                 "was moto reset by a mock_aws() in this pytest process?") from None
        for child in self.launcher.dead():
            if child.name != "auth-drain":
                raise AssertionError(f"{child.name} exited with code {child.process.returncode}" + self.explain(child.name))

    # logs --------------------------------------------------------------------------------------

    def log_path(self, name: str) -> Path:
        return self.logs.path(name)

    def records(self, name: str) -> list[dict[str, Any]]:
        """The process's JSON log records so far (non-JSON lines, e.g. a raw traceback, are skipped)."""
        path = self.log_path(name)
        if not path.exists():
            return []
        out = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out

    def explain(self, *names: str, lines: int = 25) -> str:
        """The last lines of each named process's log, for failure messages."""
        parts = []
        for name in names:
            path = self.log_path(name)
            text = path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:] if path.exists() else ["(no output)"]
            parts.append(f"\n--- last {len(text)} lines of {name} ({path}) ---\n" + "\n".join(text))
        return "".join(parts)

    def wait_for(self, what: str, probe: Callable[[], T], *, timeout: float, logs: Iterable[str] = (), interval: float = 0.1) -> T:
        """Call `probe` until it returns something truthy; on timeout fail naming `what` with the logs' tails."""
        names = tuple(logs)
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            last = probe()
            if last:
                return last
            for child in self.launcher.dead():
                if child.name in names:
                    raise AssertionError(f"{child.name} died (exit {child.process.returncode}) while waiting for {what}"
                                         + self.explain(*names))
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})" + self.explain(*names))
            time.sleep(interval)


# --- the HTTP APIs -------------------------------------------------------------------------------------------

class CallerClient(httpx.Client):
    """An httpx client that sends exactly the headers it is given, as the outside caller (a browser, an ALB) would.

    Tests that run a service in this pytest process (test_contracts, test_fault_injection, ...) call
    servicekit's configure_telemetry here, which instruments httpx process-wide and leaves a live tracer
    behind. From then on a plain client's request would start a client span of a brand-new trace and
    inject its `traceparent`, replacing the one the test set: the services would continue the pytest
    process's trace instead of the test's, depending on which tests ran first. This client never traces.
    """

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        with suppress_http_instrumentation():
            return super().send(request, **kwargs)


class Api:
    """The public routes (under each service's PUBLIC_PATH, as the ALB forwards them)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.http = CallerClient(timeout=HTTP_TIMEOUT_SECONDS)

    def close(self) -> None:
        self.http.close()

    def _expect(self, response: httpx.Response, status: int, what: str, process: str) -> dict[str, Any]:
        assert response.status_code == status, (f"{what}: expected {status}, got {response.status_code} {response.text[:300]}"
                                                + self.stack.explain(process))
        return response.json() if response.content else {}

    def sign_up(self, auth: str = "auth") -> tuple[str, str]:
        """Register a new user and log in: (user_id, access token)."""
        base, username = self.stack.urls[auth], f"u{uuid.uuid4().hex[:12]}"
        user = self._expect(self.http.post(f"{base}/api/auth/v1/users", json={"username": username, "password": PASSWORD}),
                            201, "register", auth)
        token = self._expect(self.http.post(f"{base}/api/auth/v1/tokens", json={"username": username, "password": PASSWORD}),
                             200, "log in", auth)
        return user["user_id"], token["access_token"]

    def create_persona(self, token: str, max_sessions: int = 1) -> dict[str, Any]:
        response = self.http.post(f"{self.stack.urls['persona']}/api/persona/v1/personas", headers=_bearer(token),
                                  json={"display_name": "Test persona", "attributes": {"voice": "calm"}, "max_sessions": max_sessions})
        return self._expect(response, 201, "create persona", "persona")

    def persona(self, token: str, persona_id: str) -> dict[str, Any]:
        response = self.http.get(f"{self.stack.urls['persona']}/api/persona/v1/personas/{persona_id}", headers=_bearer(token))
        return self._expect(response, 200, "get persona", "persona")

    def start_session(self, token: str, persona_id: str, *, vc_start: str = "vc-start",
                      headers: dict[str, str] | None = None) -> httpx.Response:
        return self.http.post(f"{self.stack.urls[vc_start]}/api/vc/v1/sessions", json={"persona_id": persona_id},
                              headers={**_bearer(token), **(headers or {})})

    def started_session(self, token: str, persona_id: str, *, vc_start: str = "vc-start") -> dict[str, Any]:
        return self._expect(self.start_session(token, persona_id, vc_start=vc_start), 201, "start session", vc_start)

    def session(self, token: str, session_id: str) -> dict[str, Any]:
        response = self.http.get(f"{self.stack.urls['vc-start']}/api/vc/v1/sessions/{session_id}", headers=_bearer(token))
        return self._expect(response, 200, "get session", "vc-start")

    def wait_session(self, token: str, session_id: str, status: str, *, timeout: float = 15.0) -> dict[str, Any]:
        """Poll GET /v1/sessions/{id} until the session has `status` (the workers move it)."""
        def probe() -> dict[str, Any] | None:
            session = self.session(token, session_id)
            return session if session["status"] == status else None

        return self.stack.wait_for(f"session {session_id} to become {status}", probe, timeout=timeout,
                                   logs=("vc-start", "persona-worker", "vc-start-worker"))


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- saga bookkeeping read straight from the tables -------------------------------------------------------------

def sessions_of(stack: Stack, persona_id: str) -> list[dict[str, str]]:
    """Every session vc-start stored for the persona: [{session_id, status, reason}]."""
    pages = stack.client("dynamodb").get_paginator("scan").paginate(
        TableName=stack.table("vc-start"), FilterExpression="begins_with(pk, :p) AND persona_id = :id",
        ExpressionAttributeValues={":p": {"S": "SESSION#"}, ":id": {"S": persona_id}}, ConsistentRead=True)
    return [{"session_id": i["session_id"]["S"], "status": i["status"]["S"], "reason": i.get("reason", {}).get("S")}
            for page in pages for i in page["Items"]]


def reservations_of(stack: Stack, persona_id: str) -> dict[str, str]:
    """persona's reservations of the persona: {session_id: HELD|CONFIRMED|RELEASED}."""
    items = stack.client("dynamodb").query(
        TableName=stack.table("persona"), KeyConditionExpression="pk = :pk AND begins_with(sk, :r)",
        ExpressionAttributeValues={":pk": {"S": f"PERSONA#{persona_id}"}, ":r": {"S": "RESERVATION#"}}, ConsistentRead=True)["Items"]
    return {i["session_id"]["S"]: i["status"]["S"] for i in items}


def assert_slots_match_sessions(stack: Stack, api: Api, token: str, persona_id: str, *, timeout: float = 10.0) -> int:
    """The saga's invariant once it settles: persona's `reserved` == its live (ACTIVE/PENDING) sessions, and
    exactly those sessions hold a (HELD/CONFIRMED) reservation. Returns `reserved`."""
    def probe() -> tuple[int] | None:
        reserved = api.persona(token, persona_id)["reserved"]
        live = {s["session_id"] for s in sessions_of(stack, persona_id) if s["status"] in ("ACTIVE", "PENDING")}
        holding = {sid for sid, status in reservations_of(stack, persona_id).items() if status in ("HELD", "CONFIRMED")}
        return (reserved,) if reserved == len(live) and holding == live else None

    def describe() -> str:
        return (f"reserved={api.persona(token, persona_id)['reserved']}, sessions={sessions_of(stack, persona_id)}, "
                f"reservations={reservations_of(stack, persona_id)}")

    try:
        return stack.wait_for(f"persona {persona_id}'s reserved count to match its live sessions", probe, timeout=timeout,
                              logs=("persona-worker", "vc-start-worker"))[0]
    except AssertionError as error:
        raise AssertionError(f"{describe()}\n{error}") from None


def put_event(stack: Stack, source_service: str, detail_type: str, data: dict[str, Any], *, correlation_id: str) -> str:
    """Publish like servicekit's EventPublisher would (same envelope) on the stack's bus; returns the event_id."""
    event_id = str(uuid.uuid4())
    detail = {"event_id": event_id, "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "correlation_id": correlation_id, "traceparent": None, "data": data}
    result = stack.client("events").put_events(Entries=[{
        "EventBusName": stack.resource("event_bus_name"), "Source": stack.source(source_service),
        "DetailType": detail_type, "Detail": json.dumps(detail)}])
    assert result["FailedEntryCount"] == 0, f"put_events rejected {detail_type}: {result['Entries']}"
    return event_id


def logged(stack: Stack, name: str, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    return [record for record in stack.records(name) if predicate(record)]
