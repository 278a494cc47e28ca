"""`make bench-services`: latency and throughput of each service's main endpoint at a fixed rate,
and what instrumentation (tracing, metrics, structured logs) costs.

It starts everything itself (moto, bootstrap, the three services and both workers, with the
launcher of `make run-local` but on free ports, so it never clashes with one), drives them over
loopback only, seeds a user, a token and personas, then:

1. Fixed rate (default 100 req/s for 20 s per endpoint, open model): auth POST /v1/tokens (login,
   Argon2 at production cost) and POST /v1/tokens/verify, persona GET /v1/personas/{id}, vc-start
   POST /v1/sessions (a fresh Idempotency-Key each). Table: requests, throughput, p50/p95/p99,
   error %, and where the CPU went. Target: p95 < 200 ms and errors < 1 %.
2. For each endpoint that missed it: the rate it does sustain (closed loop).
3. Instrumentation overhead: one endpoint per service at the highest rate it sustains (closed
   loop), with INSTRUMENTATION=on and =off in ABBA order (on, off, off, on: a steady drift in
   machine load cancels out), restarting the service for each run. Target: throughput lost to
   instrumentation <= 15 %. Also shows the service's CPU time per request, which the other
   processes on the machine disturb less. "on" runs with the production default trace sampler
   (servicekit.tracing: a small parent-based ratio) and decides the verdict; each round also has an
   "on, every request sampled" run (OTEL_TRACES_SAMPLER=parentbased_always_on), shown beside it
   (order on, sampled, off, off, sampled, on).

Instrumented runs export over OTLP/gRPC to a do-nothing collector (otlp_sink.py), as they would
to the ADOT sidecar in ECS. moto runs with two of its costs fixed (fast_moto.py; --stock-moto to
compare). The measured traffic goes through a lean HTTP client (rawhttp.py) so that the load
generator takes as little CPU as possible from the services on the same machine. Between runs it
waits for the previous run's backlog to drain. Bounded: every request has a 10 s timeout, every
wait a limit. Exit code: 0 every target met, 1 some target missed, 2 the benchmark could not run.

    make bench-services                                                    # full run, 6-10 minutes
    .venv-services/bin/python services/bench/bench_services.py --quick     # smoke check, ~2 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import itertools
import json
import math
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent / "local"))
import run_local  # noqa: E402  (the process launcher of `make run-local`)
from rawhttp import HttpError, RawHttpClient  # noqa: E402  (beside this file)

P95_TARGET_MS = 200.0
ERROR_TARGET_PERCENT = 1.0
OVERHEAD_TARGET_PERCENT = 15.0
REQUEST_TIMEOUT_SECONDS = 10.0  # a request slower than this counts as an error (at this value)
MAX_CONNECTIONS = 256  # per client; a fixed-rate request waiting for one still counts its wait
MAX_SESSIONS_PER_PERSONA = 10  # the API's upper bound: sessions are spread over enough personas
# Login last: at production Argon2 cost it may fall behind, and its backlog must not slow the rest.
FIXED_RATE_ORDER = ("verify", "persona", "start-session", "login")
# One endpoint per service for the overhead runs -> the --endpoints names (same service) that select it.
OVERHEAD_ENDPOINTS = {"verify": {"verify", "login"}, "persona": {"persona"}, "get-session": {"start-session"}}
BACKLOG_GRACE_SECONDS = 30.0  # after a run, how long its backlog may take to drain before a restart drops it
SETTLE_TIMEOUT_SECONDS = 60.0  # after such a restart, the longest wait for quiet
QUIET_CPU_SECONDS_PER_SECOND = 0.2  # "quiet": all processes here together below 20 % of one CPU
CAPACITY_SECONDS = 10.0  # closed-loop run of an endpoint that missed the target, to show what it sustains
PASSWORD = "bench-password-0123"  # noqa: S105 (a throwaway user in a throwaway moto)


@dataclass(frozen=True)
class Endpoint:
    label: str
    service: str  # the process that serves it
    method: str
    expected: int  # the status of a successful call
    build: Callable[[int], tuple[str, dict[str, str], Any]]  # request number -> (url, headers, json)
    classify: Callable[[bytes], str] | None = None  # response body -> a label, e.g. a session's status


@dataclass
class Result:
    endpoint: Endpoint
    latencies: list[float] = field(default_factory=list)  # seconds, every request (errors too)
    outcomes: collections.Counter[str] = field(default_factory=collections.Counter)
    labels: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: int = 0
    wall: float = 0.0
    max_send_lag: float = 0.0  # how far behind schedule the generator ever was
    cpu_seconds: float | None = None  # the service process's CPU time during the run
    cpu_used: dict[str, float] = field(default_factory=dict)  # process -> CPU seconds during the run
    cpu_window: float = 0.0  # the seconds cpu_used was measured over

    def record(self, seconds: float, outcome: str, ok: bool, label: str | None = None) -> None:
        self.latencies.append(seconds)
        self.outcomes[outcome] += 1
        if not ok:
            self.errors += 1
        if label:
            self.labels[label] += 1

    @property
    def requests(self) -> int:
        return len(self.latencies)

    @property
    def throughput(self) -> float:
        """Successful responses per second of wall time."""
        return (self.requests - self.errors) / self.wall if self.wall else 0.0

    @property
    def error_percent(self) -> float:
        return 100.0 * self.errors / self.requests if self.requests else 100.0

    def percentile_ms(self, q: float) -> float:
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
        return 1000.0 * ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100.0 * len(ordered)) - 1))]

    @property
    def cpu_ms_per_request(self) -> float | None:
        done = self.requests - self.errors
        return 1000.0 * self.cpu_seconds / done if self.cpu_seconds is not None and done else None


async def send(client: RawHttpClient, endpoint: Endpoint, number: int) -> tuple[str, bool, str | None]:
    url, headers, body = endpoint.build(number)
    try:
        status, data = await client.request(endpoint.method, url, headers,
                                            None if body is None else json.dumps(body).encode())
    except HttpError:
        return "connection error", False, None
    ok = status == endpoint.expected
    label = endpoint.classify(data) if ok and endpoint.classify else None
    return str(status), ok, label


async def fixed_rate(client: RawHttpClient, endpoint: Endpoint, rate: float, duration: float,
                     numbers: itertools.count[int]) -> Result:
    """Open model: request i is due at start + i/rate whether or not earlier ones have answered,
    and its latency runs from when it was due. Locust's constant_throughput is a closed loop per
    user: when the service slows down the users wait and the offered rate silently drops, so the
    latency of exactly the overloaded periods goes unmeasured (coordinated omission). Here an
    overloaded service shows up as the latency and errors it causes."""
    loop, result = asyncio.get_running_loop(), Result(endpoint)
    start = loop.time() + 0.05

    async def one(number: int, due: float) -> None:
        try:
            async with asyncio.timeout_at(due + REQUEST_TIMEOUT_SECONDS):  # incl. waiting for a connection
                outcome, ok, label = await send(client, endpoint, number)
        except TimeoutError:
            outcome, ok, label = "timeout", False, None
        result.record(loop.time() - due, outcome, ok, label)

    tasks = []
    for index in range(round(rate * duration)):
        due = start + index / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            result.max_send_lag = max(result.max_send_lag, -delay)
        tasks.append(asyncio.create_task(one(next(numbers), due)))
    await asyncio.gather(*tasks)  # each ends by its due time + REQUEST_TIMEOUT_SECONDS
    result.wall = loop.time() - start
    return result


async def max_rate(client: RawHttpClient, endpoint: Endpoint, duration: float, concurrency: int,
                   numbers: itertools.count[int]) -> Result:
    """Closed loop: ``concurrency`` callers back to back for ``duration`` seconds: the rate the
    service sustains (the overhead comparison needs the ceiling, not a fixed rate)."""
    loop, result = asyncio.get_running_loop(), Result(endpoint)
    start = loop.time()
    deadline = start + duration

    async def caller() -> None:
        while loop.time() < deadline:
            sent = loop.time()
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT_SECONDS):
                    outcome, ok, label = await send(client, endpoint, next(numbers))
            except TimeoutError:
                outcome, ok, label = "timeout", False, None
            result.record(loop.time() - sent, outcome, ok, label)

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    result.wall = loop.time() - start
    return result


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        # The services' logs stay out of the tables: kept in files only when asked (--logs).
        self.launcher = run_local.Launcher(output=None, log_dir=args.logs)
        moto, auth, persona, grpc_port, vc_start, self.sink_port = run_local.free_ports(6)
        self.ports = run_local.Ports(moto, auth, persona, grpc_port, vc_start)
        self.url = {"auth": f"http://127.0.0.1:{auth}", "persona": f"http://127.0.0.1:{persona}",
                    "vc-start": f"http://127.0.0.1:{vc_start}"}
        self.specs: dict[str, run_local.ProcessSpec] = {}
        self.queues: list[str] = []
        self.dlqs: dict[str, str] = {}
        self.numbers = itertools.count()
        self.token = ""
        self.persona_id = ""
        self.session_personas: list[str] = []
        self.session_id = ""
        self.created_sessions: list[str] = []
        self.username = f"bench-{uuid.uuid4().hex[:8]}"

    # -- set-up --------------------------------------------------------------------------------

    def start(self) -> None:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{self.sink_port}", "INSTRUMENTATION": "on",
               # The run outlasts a 15-minute token: auth issues hour-long ones, which persona and vc-start must accept.
               "ACCESS_TOKEN_TTL_SECONDS": "3600", "JWT_MAX_LIFETIME_SECONDS": "3660", "LOG_LEVEL": "INFO",
               # A restart for the overhead runs must not wait out a login backlog for the default 20 s.
               "SHUTDOWN_TIMEOUT_SECONDS": "5",
               # The bench user spreads its sessions over some 270 personas at the default rate (seed): persona's
               # most, not its default 100.
               "MAX_PERSONAS_PER_OWNER": "1000"}
        self.launcher.start(run_local.ProcessSpec(
            "otlp-sink", [sys.executable, str(BENCH_DIR / "otlp_sink.py"), str(self.sink_port)], run_local.base_env()))
        wait_for_port(self.sink_port, self.launcher)
        names = ("auth", "persona", "vc-start", "persona-worker", "vc-start-worker")
        moto = None if self.args.stock_moto else run_local.ProcessSpec(
            "moto", [sys.executable, str(BENCH_DIR / "fast_moto.py"), "-H", "127.0.0.1", "-p", str(self.ports.moto)],
            run_local.base_env(), f"http://127.0.0.1:{self.ports.moto}/moto-api/data.json")
        resources, specs = run_local.start_stack(self.launcher, self.ports, {name: env for name in names}, moto=moto)
        print("  moto: " + next((line for line in self.launcher.children["moto"].tail if line.startswith("fast_moto:")),
                                "stock (--stock-moto): TransactWriteItems slows down as the tables grow"), flush=True)
        self.specs = {spec.name: spec for spec in specs}
        found = resources["resources"]
        self.queues = [found["persona_queue_url"], found["vc_start_queue_url"]]
        self.dlqs = {"persona": found["persona_dlq_url"], "vc-start": found["vc_start_dlq_url"]}

    def stop(self) -> str:
        """Stops every process (the applications first: they flush telemetry to the sink and talk to
        moto on the way out); returns the sink's closing line (what it received)."""
        sink = self.launcher.children.get("otlp-sink")
        self.launcher.stop([name for name in self.launcher.children if name not in ("moto", "otlp-sink")])
        self.launcher.stop(["otlp-sink", "moto"], timeout=5)
        return sink.tail[-1] if sink is not None and sink.tail else ""

    async def seed(self, client: httpx.AsyncClient, sessions_needed: int) -> None:
        auth, persona, vc = self.url["auth"], self.url["persona"], self.url["vc-start"]
        user = {"username": self.username, "password": PASSWORD}
        await expect(client.post(f"{auth}/v1/users", json=user), 201, "create the bench user")
        token = await expect(client.post(f"{auth}/v1/tokens", json=user), 200, "log in")
        self.token = token["access_token"]
        bearer = {"Authorization": f"Bearer {self.token}"}
        created = await expect(client.post(f"{persona}/v1/personas", headers=bearer,
                                           json={"display_name": "bench reader", "max_sessions": 10}), 201, "create a persona")
        self.persona_id = created["persona_id"]
        # Sessions hold their persona's slot (up to 10 each) until they end, and nothing ends them
        # here: spread the run's sessions over enough personas that none is ever full.
        count = math.ceil(sessions_needed / MAX_SESSIONS_PER_PERSONA) + 1
        slots = asyncio.Semaphore(8)

        async def make(index: int) -> str:
            async with slots:
                body = {"display_name": f"bench {index}", "max_sessions": MAX_SESSIONS_PER_PERSONA}
                return (await expect(client.post(f"{persona}/v1/personas", headers=bearer, json=body),
                                     201, "create a persona"))["persona_id"]

        self.session_personas = list(await asyncio.gather(*(make(i) for i in range(count))))
        session = await expect(client.post(f"{vc}/v1/sessions", headers={**bearer, "Idempotency-Key": uuid.uuid4().hex},
                                           json={"persona_id": self.session_personas[0]}), 201, "start a session")
        self.session_id = session["session_id"]

    # -- endpoints -----------------------------------------------------------------------------

    def endpoints(self) -> dict[str, Endpoint]:
        auth, persona, vc = self.url["auth"], self.url["persona"], self.url["vc-start"]
        bearer = {"Authorization": f"Bearer {self.token}"}
        login = {"username": self.username, "password": PASSWORD}
        personas = self.session_personas

        def session_status(data: bytes) -> str:
            body = json.loads(data)
            if len(self.created_sessions) < 10_000:
                self.created_sessions.append(body["session_id"])
            return body["status"] + (f" ({body['reason']})" if body.get("reason") else "")

        return {
            "login": Endpoint("auth POST /v1/tokens (login)", "auth", "POST", 200,
                              lambda n: (f"{auth}/v1/tokens", {}, login)),
            "verify": Endpoint("auth POST /v1/tokens/verify", "auth", "POST", 200,
                               lambda n: (f"{auth}/v1/tokens/verify", {}, {"token": self.token})),
            "persona": Endpoint("persona GET /v1/personas/{id}", "persona", "GET", 200,
                                lambda n: (f"{persona}/v1/personas/{self.persona_id}", bearer, None)),
            "start-session": Endpoint(
                "vc-start POST /v1/sessions", "vc-start", "POST", 201,
                lambda n: (f"{vc}/v1/sessions", {**bearer, "Idempotency-Key": uuid.uuid4().hex},
                           {"persona_id": personas[n % len(personas)]}),
                session_status),
            "get-session": Endpoint("vc-start GET /v1/sessions/{id}", "vc-start", "GET", 200,
                                    lambda n: (f"{vc}/v1/sessions/{self.session_id}", bearer, None)),
        }

    # -- phases --------------------------------------------------------------------------------

    async def fixed_rate_phase(self, client: RawHttpClient, control: httpx.AsyncClient) -> list[Result]:
        args, endpoints = self.args, self.endpoints()
        order = [key for key in FIXED_RATE_ORDER if key in args.endpoints]
        results = []
        for key in order:
            endpoint = endpoints[key]
            print(f"  {endpoint.label}: {args.rate:g} req/s for {args.duration:g} s ...", flush=True)
            await fixed_rate(client, endpoint, min(args.rate, 20.0), 1.0, self.numbers)  # warm-up, not counted
            before, started = self.cpu_snapshot(), time.monotonic()
            result = await fixed_rate(client, endpoint, args.rate, args.duration, self.numbers)
            after, wall = self.cpu_snapshot(), time.monotonic() - started
            result.cpu_used = {name: after[name] - before[name] for name in before if name in after}
            result.cpu_window = wall
            results.append(result)
            self.launcher.raise_if_dead()
            await self.settle(control)
        return results

    async def capacity_phase(self, client: RawHttpClient, control: httpx.AsyncClient,
                             missed: list[Result]) -> list[Result]:
        """What an endpoint that missed the target does sustain: an open-model run above capacity
        only shows queues growing until requests time out, not the rate the service manages."""
        args, results = self.args, []
        duration = min(args.duration, CAPACITY_SECONDS)
        for fixed in missed:
            print(f"  {fixed.endpoint.label}: {args.concurrency} callers for {duration:g} s ...", flush=True)
            await max_rate(client, fixed.endpoint, 1.0, args.concurrency, self.numbers)  # warm-up, not counted
            results.append(await max_rate(client, fixed.endpoint, duration, args.concurrency, self.numbers))
            self.launcher.raise_if_dead()
            await self.settle(control)
        return results

    async def overhead_phase(self, client: RawHttpClient) -> list[tuple[Endpoint, list[Result], list[Result], list[Result]]]:
        """Cheap endpoints on purpose: there instrumentation is the largest share of the work (login
        would hide it behind Argon2), and starting sessions without end would fill every persona."""
        args, endpoints = self.args, self.endpoints()
        modes = abba(args.rounds)
        rows = []
        for key in [key for key, selected_by in OVERHEAD_ENDPOINTS.items() if selected_by & args.endpoints]:
            endpoint = endpoints[key]
            runs: dict[str, list[Result]] = {"on": [], "off": [], "sampled": []}
            for mode in modes:
                label = "on, every request sampled" if mode == "sampled" else mode
                print(f"  {endpoint.label}: INSTRUMENTATION={label}, {args.overhead_duration:g} s at the highest rate ...",
                      flush=True)
                pid = self.restart(endpoint.service, mode)
                await max_rate(client, endpoint, 1.0, args.concurrency, self.numbers)  # warm-up
                before = cpu_seconds(pid)
                result = await max_rate(client, endpoint, args.overhead_duration, args.concurrency, self.numbers)
                after = cpu_seconds(pid)
                result.cpu_seconds = after - before if before is not None and after is not None else None
                runs[mode].append(result)
                self.launcher.raise_if_dead()
            self.restart(endpoint.service, "on")
            rows.append((endpoint, runs["on"], runs["off"], runs["sampled"]))
        return rows

    def cpu_snapshot(self) -> dict[str, float]:
        """CPU seconds so far of every process here: where the machine's time goes during a run."""
        snapshot = {name: cpu_seconds(child.process.pid) for name, child in self.launcher.children.items()}
        own = os.times()
        snapshot["load generator"] = own.user + own.system
        return {name: value for name, value in snapshot.items() if value is not None}

    def restart(self, name: str, instrumentation: str) -> int:
        """``instrumentation``: on (production default sampler), sampled (on, every request sampled) or off."""
        self.launcher.stop([name])
        env = {**self.specs[name].env, "INSTRUMENTATION": "off" if instrumentation == "off" else "on"}
        if instrumentation == "sampled":
            env.update({"OTEL_TRACES_SAMPLER": "parentbased_always_on"})
        spec = dataclasses.replace(self.specs[name], env=env)
        child = self.launcher.start(spec)
        self.launcher.wait_ready([name])
        return child.process.pid

    async def settle(self, client: httpx.AsyncClient) -> None:
        """Between runs: the workers have caught up with the saga's events, every service is ready,
        and the processes here have gone quiet. A run above capacity leaves requests queued in the
        services and in moto long after its clients gave up (and circuit breakers open); when that
        backlog does not drain soon, the services and workers are restarted to drop it, so that no
        run pays for the one before it."""
        started = time.monotonic()
        if await self.quiet_within(client, BACKLOG_GRACE_SECONDS):
            if time.monotonic() - started > 10:
                print(f"    (waited {time.monotonic() - started:.0f} s for the backlog of this run to drain)", flush=True)
            return
        print(f"    (a backlog was still being worked off after {BACKLOG_GRACE_SECONDS:g} s:"
              " restarting the services and workers to drop it)", flush=True)
        names = [name for name in self.specs if name in self.launcher.children]
        self.launcher.stop(names)
        for name in names:
            self.launcher.start(self.specs[name])
        self.launcher.wait_ready(names)
        if not await self.quiet_within(client, SETTLE_TIMEOUT_SECONDS):
            print(f"    (still busy after {SETTLE_TIMEOUT_SECONDS:g} s more: the next run shares the machine"
                  " with this one's backlog)", flush=True)

    async def quiet_within(self, client: httpx.AsyncClient, seconds: float) -> bool:
        """True once the event queues are empty, every service is ready and all processes here
        together use under QUIET_CPU_SECONDS_PER_SECOND for two seconds; False after ``seconds``."""
        deadline = time.monotonic() + seconds
        sqs = self.sqs()
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        while time.monotonic() < deadline:
            counts = [sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"] for url in self.queues]
            if all(int(c.get(name, 0)) == 0 for c in counts for name in names):
                break
            await asyncio.sleep(0.5)
        for name in ("auth", "persona", "vc-start"):
            while time.monotonic() < deadline:
                try:
                    if (await client.get(f"{self.url[name]}/health/ready", timeout=2)).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.5)
        quiet_seconds, previous = 0, self.cpu_snapshot()
        while quiet_seconds < 2 and time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            current = self.cpu_snapshot()
            busy = sum(current[n] - previous[n] for n in current if n in previous and n != "load generator")
            quiet_seconds, previous = (quiet_seconds + 1 if busy < QUIET_CPU_SECONDS_PER_SECOND else 0), current
        return quiet_seconds >= 2

    def sqs(self) -> Any:
        return boto3.client("sqs", region_name=run_local.REGION, endpoint_url=f"http://127.0.0.1:{self.ports.moto}",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    async def saga_check(self, client: httpx.AsyncClient) -> str:
        """Did the sessions started under load finish the saga (PENDING -> ACTIVE via the bus)?"""
        sample = self.created_sessions[-20:]
        if not sample:
            return "no sessions to check"
        bearer = {"Authorization": f"Bearer {self.token}"}
        statuses: collections.Counter[str] = collections.Counter()
        for _ in range(30):  # up to ~15 s for the workers to catch up
            statuses.clear()
            for session_id in sample:
                response = await client.get(f"{self.url['vc-start']}/v1/sessions/{session_id}", headers=bearer)
                statuses[response.json().get("status", str(response.status_code))] += 1
            if statuses["PENDING"] == 0:
                break
            await asyncio.sleep(0.5)
        sqs = self.sqs()
        dead = ", ".join(f"{name} {sqs.get_queue_attributes(QueueUrl=url, AttributeNames=['ApproximateNumberOfMessages'])['Attributes']['ApproximateNumberOfMessages']}"
                         for name, url in self.dlqs.items())
        return (", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
                + f" (of the last {len(sample)} started); messages in the DLQs: {dead}")

    async def run(self) -> int:
        args = self.args
        # httpx for set-up and checks; the lean client for the measured traffic (see rawhttp.py).
        load = RawHttpClient(MAX_CONNECTIONS)
        async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_SECONDS) as control:
            try:
                print("Seeding: a user, a token, personas ...", flush=True)
                # The fixed-rate run and its warm-up, and a capacity run if it misses the target.
                sessions = round(args.rate * (args.duration + 1.0) + 50 * min(args.duration, CAPACITY_SECONDS)) + 50
                await self.seed(control, sessions_needed=sessions)
                print(f"\n1. Fixed rate: {args.rate:g} req/s for {args.duration:g} s per endpoint (open model)", flush=True)
                fixed = await self.fixed_rate_phase(load, control)
                saga = await self.saga_check(control)
                missed = [result for result in fixed if not ok_result(result)]
                capacity = []
                if missed:
                    print("\n2. Capacity of the endpoints that missed the target (closed loop)", flush=True)
                    capacity = await self.capacity_phase(load, control, missed)
                overhead = []
                if args.overhead_duration > 0:
                    print(f"\n3. Instrumentation overhead: {args.overhead_duration:g} s per run, {args.concurrency} callers,"
                          " order " + " ".join(abba(args.rounds)), flush=True)
                    overhead = await self.overhead_phase(load)
            finally:
                await load.aclose()
        return report(args, fixed, saga, capacity, overhead)



def abba(rounds: int) -> list[str]:
    """on, sampled, off, off, sampled, on, ...: each round in turn reversed, so a steady drift in machine load
    favours neither mode."""
    return [mode for i in range(rounds) for mode in (("on", "sampled", "off") if i % 2 == 0 else ("off", "sampled", "on"))]


async def expect(call: Any, status: int, what: str) -> dict[str, Any]:
    response = await call
    if response.status_code != status:
        raise RuntimeError(f"could not {what}: HTTP {response.status_code} {response.text[:300]}")
    return response.json()


def wait_for_port(port: int, launcher: run_local.Launcher, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        launcher.raise_if_dead()
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise run_local.ChildFailed(f"nothing listens on port {port} after {timeout:g} s")


def ok_result(result: Result) -> bool:
    return result.percentile_ms(95) < P95_TARGET_MS and result.error_percent < ERROR_TARGET_PERCENT


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(args: argparse.Namespace, fixed: list[Result], saga: str, capacity: list[Result],
           overhead: list[tuple[Endpoint, list[Result], list[Result], list[Result]]]) -> int:
    passed = True
    print(f"\nFixed rate {args.rate:g} req/s, {args.duration:g} s each; latency from the scheduled send time, every"
          f" request counted (a timeout as {REQUEST_TIMEOUT_SECONDS:g} s); target p95 < {P95_TARGET_MS:g} ms,"
          f" errors < {ERROR_TARGET_PERCENT:g} %")
    header = f"{'endpoint':<34}{'requests':>9}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors %':>10}  result"
    print(header)
    print("-" * len(header))
    for result in fixed:
        ok = ok_result(result)
        passed &= ok
        print(f"{result.endpoint.label:<34}{result.requests:>9}{result.throughput:>9.1f}{result.percentile_ms(50):>9.1f}"
              f"{result.percentile_ms(95):>9.1f}{result.percentile_ms(99):>9.1f}{result.error_percent:>10.2f}  {verdict(ok)}")
    for result in fixed:
        errors = {k: v for k, v in result.outcomes.items() if k != str(result.endpoint.expected)}
        notes = []
        if errors:
            notes.append("errors: " + ", ".join(f"{v} x {k}" for k, v in sorted(errors.items())))
        if result.labels:
            notes.append("outcomes: " + ", ".join(f"{v} {k}" for k, v in result.labels.most_common()))
        if result.max_send_lag > 0.05:
            notes.append(f"the load generator fell up to {1000 * result.max_send_lag:.0f} ms behind schedule")
        if result.cpu_used and result.cpu_window > 0:
            shares = {name: 100.0 * used / result.cpu_window for name, used in result.cpu_used.items()}
            busiest = sorted(shares.items(), key=lambda item: -item[1])
            notes.append("CPU % of one core: " + ", ".join(f"{name} {share:.0f}" for name, share in busiest if share >= 1))
            if result.requests and result.endpoint.service in result.cpu_used:
                notes.append(f"{result.endpoint.service} CPU per request (every outcome):"
                             f" {1000.0 * result.cpu_used[result.endpoint.service] / result.requests:.1f} ms")
            if not ok_result(result) and busiest and busiest[0][0] == "moto" and busiest[0][1] >= 60:
                notes.append("moto (the local stand-in for DynamoDB, EventBridge and SQS) was the busiest process:"
                             " this run measures the emulator as much as the service")
        if notes:
            print(f"  {result.endpoint.label}:\n" + "\n".join(f"    {note}" for note in notes))
    print(f"  saga under load: {saga}")

    if capacity:
        print(f"\nCapacity of the endpoints that missed the target: {args.concurrency} callers back to back,"
              f" {min(args.duration, CAPACITY_SECONDS):g} s each (latency per request, from its send)")
        header = f"{'endpoint':<34}{'requests':>9}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors %':>10}"
        print(header)
        print("-" * len(header))
        for result in capacity:
            print(f"{result.endpoint.label:<34}{result.requests:>9}{result.throughput:>9.1f}{result.percentile_ms(50):>9.1f}"
                  f"{result.percentile_ms(95):>9.1f}{result.percentile_ms(99):>9.1f}{result.error_percent:>10.2f}")
            errors = {k: v for k, v in result.outcomes.items() if k != str(result.endpoint.expected)}
            notes = [f"errors: {', '.join(f'{v} x {k}' for k, v in sorted(errors.items()))}"] if errors else []
            if result.labels:
                notes.append("outcomes: " + ", ".join(f"{v} {k}" for k, v in result.labels.most_common()))
            if notes:
                print(f"  {result.endpoint.label}: " + "; ".join(notes))

    if overhead:
        print(f"\nInstrumentation overhead: highest sustained rate, INSTRUMENTATION=on vs off ({args.concurrency} callers,"
              f" {args.overhead_duration:g} s per run, median of {len(overhead[0][1])} run(s) each);"
              f" target <= {OVERHEAD_TARGET_PERCENT:g} % with the production default sampler (the verdict);"
              " the every-request-sampled rows are shown beside it")
        header = (f"{'endpoint':<34}{'sampler':<24}{'on req/s':>10}{'off req/s':>10}{'overhead %':>12}"
                  f"{'CPU ms/req on':>15}{'off':>7}{'CPU +%':>8}  result")
        print(header)
        print("-" * len(header))
        for endpoint, on_default, off, on_sampled in overhead:
            for sampler, on in (("production default", on_default), ("every request sampled", on_sampled)):
                on_rate, off_rate = median([r.throughput for r in on]), median([r.throughput for r in off])
                loss = 100.0 * (off_rate - on_rate) / off_rate if off_rate else math.nan
                cpu_on = median([r.cpu_ms_per_request for r in on if r.cpu_ms_per_request is not None])
                cpu_off = median([r.cpu_ms_per_request for r in off if r.cpu_ms_per_request is not None])
                cpu_more = 100.0 * (cpu_on - cpu_off) / cpu_off if cpu_off else math.nan
                errors = sum(r.errors for r in on + off)
                ok = loss <= OVERHEAD_TARGET_PERCENT and errors == 0
                if on is on_default:
                    passed &= ok
                print(f"{endpoint.label:<34}{sampler:<24}{on_rate:>10.1f}{off_rate:>10.1f}{loss:>12.1f}"
                      f"{cpu_on:>15.2f}{cpu_off:>7.2f}{cpu_more:>8.1f}  {verdict(ok)}"
                      + (f" ({errors} errors)" if errors else "") + ("" if on is on_default else " (not in the verdict)"))
        print("  runs (req/s): " + "; ".join(
            f"{e.label.split()[0]} on {'/'.join(f'{r.throughput:.0f}' for r in on)}"
            f" sampled {'/'.join(f'{r.throughput:.0f}' for r in sampled)}"
            f" off {'/'.join(f'{r.throughput:.0f}' for r in off)}" for e, on, off, sampled in overhead))
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"\nOverall: {verdict(passed)} (machine: {os.cpu_count()} CPUs shared by the load generator, moto, every service"
          f" process and whatever else runs here; load average now {load}; at the start {args.load_at_start})")
    return 0 if passed else 1


def median(values: list[float]) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second in the fixed-rate runs (100)")
    parser.add_argument("--duration", type=float, help="seconds per fixed-rate run (20; --quick: 3)")
    parser.add_argument("--overhead-duration", type=float,
                        help="seconds per instrumentation on/off run (10; --quick: 3; 0 skips the measurement)")
    parser.add_argument("--rounds", type=int, help="on/off pairs per service, in ABBA order (2; --quick: 1)")
    parser.add_argument("--concurrency", type=int, default=16, help="callers in the highest-rate runs (16)")
    parser.add_argument("--quick", action="store_true", help="a smoke check: 3 s runs, one on/off pair")
    parser.add_argument("--endpoints", type=lambda text: set(text.split(",")), default=set(FIXED_RATE_ORDER),
                        metavar="LIST", help=f"a subset of {','.join(FIXED_RATE_ORDER)} (all)")
    parser.add_argument("--stock-moto", action="store_true",
                        help="run moto unpatched (its TransactWriteItems slows down as the tables grow; see fast_moto.py)")
    parser.add_argument("--logs", type=Path, metavar="DIR",
                        help="append every process's output to DIR/<name>.log (e.g. .local-run/bench, gitignored)")
    args = parser.parse_args(argv)
    # --quick changes the defaults only: an option given explicitly still wins.
    for name, full, quick in (("duration", 20.0, 3.0), ("overhead_duration", 10.0, 3.0), ("rounds", 2, 1)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if args.rate <= 0 or args.duration <= 0 or args.rounds < 1 or args.concurrency < 1 or args.overhead_duration < 0:
        parser.error("--rate and --duration must be > 0, --rounds and --concurrency >= 1, --overhead-duration >= 0")
    if not args.endpoints or not args.endpoints <= set(FIXED_RATE_ORDER):
        parser.error(f"--endpoints: expected names from {','.join(FIXED_RATE_ORDER)}")
    if args.rate * args.duration > 100_000:
        parser.error("--rate x --duration above 100000 requests: keep a run bounded")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.load_at_start = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    bench = Bench(args)
    started = time.monotonic()
    try:
        print("Starting moto, the services and their workers on loopback ...", flush=True)
        bench.start()
        status = asyncio.run(bench.run())
    except (run_local.ChildFailed, RuntimeError, httpx.HTTPError) as error:
        print(f"bench-services: {type(error).__name__}: {error}", file=sys.stderr)
        status = 2
    except KeyboardInterrupt:
        print("bench-services: interrupted", file=sys.stderr)
        status = 2
    finally:
        received = bench.stop()
        if received:
            print(f"OTLP sink received: {received}")
    print(f"({time.monotonic() - started:.0f} s)")
    return status


if __name__ == "__main__":
    sys.exit(main())
