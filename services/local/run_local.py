"""`make run-local`: the three services and their workers against an in-memory moto server, each
process's output prefixed with its name. Ctrl-C (SIGINT), SIGTERM or closing the terminal (SIGHUP) stops
everything; on Linux the children also stop when the launcher is killed outright (SIGKILL).

    moto      http://127.0.0.1:5000     (DynamoDB, Secrets Manager, EventBridge, SQS)
    auth      http://127.0.0.1:8081
    persona   http://127.0.0.1:8082     gRPC 127.0.0.1:50051
    vc-start  http://127.0.0.1:8083
    + persona-worker, vc-start-worker   (consume the saga's events from SQS)

All state lives in moto's memory and is gone when this stops. Everything listens on 127.0.0.1 only:
the services get BIND_HOST=127.0.0.1 (servicekit's default, 0.0.0.0, is for their containers), so
nothing else on the network reaches them, their dev credentials or their data.
The launcher below is reused by bench/bench_services.py and the cross-service tests.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or imported by the benchmark
from bootstrap import bootstrap  # noqa: E402

SERVICES_DIR = Path(__file__).resolve().parents[1]
REGION = "eu-central-1"
LOOPBACK = "127.0.0.1"  # every child's listen address
STARTUP_TIMEOUT_SECONDS = 90.0  # imports (OpenTelemetry, grpc, boto3) are slow on a busy machine
STOP_TIMEOUT_SECONDS = 30.0  # longer than a service's drain + in-flight grace (0 + 20 s here)
WALKTHROUGH = "services/README.md, section \"Run it locally\""


class ChildFailed(RuntimeError):
    """A child process died (or never became ready); the message names it."""


class StartInterrupted(Exception):
    """Asked to stop (the ``stop`` event) while starting."""


@dataclass(frozen=True)
class Ports:
    moto: int = 5000
    auth: int = 8081
    persona: int = 8082
    persona_grpc: int = 50051
    vc_start: int = 8083

    def named(self) -> dict[str, int]:
        return {"moto": self.moto, "auth": self.auth, "persona": self.persona,
                "persona gRPC": self.persona_grpc, "vc-start": self.vc_start}


@dataclass(frozen=True)
class ProcessSpec:
    """How to start one child: argv, full environment, and the URL that says it is ready (if any)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    ready_url: str | None = None


@dataclass
class Child:
    spec: ProcessSpec
    process: subprocess.Popen[str]
    tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=30))
    reader: threading.Thread | None = None

    @property
    def name(self) -> str:
        return self.spec.name


# Linux: run by each child before its command. It asks the kernel to SIGTERM it when the launcher dies,
# however it dies (SIGKILL, out of memory), then becomes the command (exec keeps the pid, and the request
# survives exec). In the child, not in a preexec_fn: Python documents preexec_fn as unsafe while other
# threads run, and the output pumps do. The request is tied to the thread that started the child: start
# children from a thread that outlives them (every caller uses the main thread).
_DIE_WITH_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)\n"  # 1: PR_SET_PDEATHSIG; best effort
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(0)\n"  # the launcher died before the request: nothing would stop us
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def _launched(argv: list[str]) -> list[str]:
    if not sys.platform.startswith("linux"):
        return argv  # elsewhere a killed launcher leaves its children running
    return [sys.executable, "-I", "-S", "-c", _DIE_WITH_LAUNCHER, str(os.getpid()), *argv]


class Launcher:
    """Starts children in their own session (so a terminal's Ctrl-C reaches only us and we stop them
    in order), prefixes their output with their name, and stops them: SIGTERM, wait, SIGKILL.
    On Linux a child also gets SIGTERM when the launcher dies (_DIE_WITH_LAUNCHER)."""

    def __init__(self, output: Callable[[str], None] | None = print, log_dir: Path | None = None) -> None:
        self.output = output  # None: discard output (the benchmark); the last lines are kept anyway
        self.log_dir = log_dir  # also append each child's output to <log_dir>/<name>.log
        self.children: dict[str, Child] = {}
        self._lock = threading.Lock()
        self._width = 15

    def start(self, spec: ProcessSpec) -> Child:
        process = subprocess.Popen(  # noqa: S603 (argv built here, no shell)
            _launched(spec.argv), env=spec.env, cwd=SERVICES_DIR, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True)
        child = Child(spec, process)
        child.reader = threading.Thread(target=self._pump, args=(child,), name=f"out-{spec.name}", daemon=True)
        child.reader.start()
        self.children[spec.name] = child
        return child

    def _pump(self, child: Child) -> None:
        assert child.process.stdout is not None
        log = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log = (self.log_dir / f"{child.name}.log").open("a", encoding="utf-8")
        try:
            for line in child.process.stdout:
                line = line.rstrip("\n")
                child.tail.append(line)
                if log is not None:
                    log.write(line + "\n")
                with self._lock:
                    if self.output is not None:
                        try:
                            self.output(f"{child.name:>{self._width}} | {line}")
                        except OSError:  # the terminal is gone (EIO): stop echoing, keep draining the pipe
                            self.output = None
        finally:
            if log is not None:
                log.close()

    def dead(self) -> list[Child]:
        return [child for child in self.children.values() if child.process.poll() is not None]

    def raise_if_dead(self) -> None:
        for child in self.dead():
            raise ChildFailed(f"{child.name} exited with code {child.process.returncode}" + _last_lines(child))

    def wait_ready(self, names: Iterable[str], timeout: float = STARTUP_TIMEOUT_SECONDS,
                   stop: threading.Event | None = None) -> None:
        """Until every named child's ready URL answers 200; raises ChildFailed if one dies or times out."""
        pending = {name for name in names if self.children[name].spec.ready_url}
        deadline = time.monotonic() + timeout
        while pending:
            self.raise_if_dead()
            if stop is not None and stop.is_set():
                return
            pending = {name for name in pending if not _answers(self.children[name].spec.ready_url or "")}
            if pending and time.monotonic() > deadline:
                names_left = ", ".join(sorted(pending))
                raise ChildFailed(f"not ready after {timeout:g} s: {names_left}"
                                  + "".join(_last_lines(self.children[n]) for n in sorted(pending)))
            if pending:
                time.sleep(0.25)

    def stop(self, names: Iterable[str] | None = None, timeout: float = STOP_TIMEOUT_SECONDS) -> list[str]:
        """SIGTERM the named children (default: all) together, wait up to ``timeout``, SIGKILL the rest.
        Returns the names of those that had to be killed."""
        children = [self.children[n] for n in (self.children if names is None else names) if n in self.children]
        for child in children:
            if child.process.poll() is None:
                _signal(child.process, signal.SIGTERM)
        deadline, killed = time.monotonic() + timeout, []
        for child in children:
            try:
                child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal(child.process, signal.SIGKILL)
                child.process.wait(timeout=5)
                killed.append(child.name)
            if child.reader is not None:
                child.reader.join(timeout=2)
            self.children.pop(child.name, None)
        return killed


def _signal(process: subprocess.Popen[str], signum: int) -> None:
    try:
        process.send_signal(signum)
    except ProcessLookupError:
        pass


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (our own loopback URL)
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def _last_lines(child: Child) -> str:
    lines = list(child.tail)[-10:]
    return ("\n  last output of " + child.name + ":\n    " + "\n    ".join(lines)) if lines else ""


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))  # where the children listen (BIND_HOST, moto's -H)
        except OSError:
            return True
    return False


def free_ports(count: int) -> list[int]:
    """Ports the OS calls free right now (the benchmark's, so it never clashes with run-local)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def base_env(pythonpath: Iterable[str] = ()) -> dict[str, str]:
    """The caller's environment minus anything AWS (never real credentials or profiles against moto)
    and minus PUBLIC_PATH, plus moto's dummy credentials."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AWS_") and k not in ("PUBLIC_PATH", "PYTHONPATH", "PYTHONHOME")}
    env.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION,
                "AWS_EC2_METADATA_DISABLED": "true", "PYTHONUNBUFFERED": "1"})
    paths = [str(SERVICES_DIR / p) for p in pythonpath]
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


# moto's server, applying one AWS request at a time as DynamoDB applies each atomically (see moto_server.py).
MOTO_SERVER = Path(__file__).resolve().parent / "moto_server.py"


def moto_spec(port: int) -> ProcessSpec:
    # A process of its own, not a thread here: moto is busy under load and must not share our GIL.
    return ProcessSpec("moto", [sys.executable, str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)],
                       base_env(), f"http://127.0.0.1:{port}/moto-api/data.json")


def service_specs(resources: dict[str, dict[str, str]], ports: Ports,
                  extra_env: dict[str, dict[str, str]] | None = None) -> list[ProcessSpec]:
    """The five application processes with the environment each needs. ``resources`` is what
    bootstrap() returned; ``extra_env`` maps a process name to variables to add or override."""
    auth_url = f"http://127.0.0.1:{ports.auth}"
    # Loopback only (servicekit's default is every interface); nothing routes to these locally: stop at once.
    common = {"BIND_HOST": LOOPBACK, "DRAIN_SECONDS": "0"}
    plan = [
        ("auth", "auth_service", "auth", "auth", {"PORT": str(ports.auth)}, ports.auth),
        ("persona", "persona_service", "persona", "persona",
         {"PORT": str(ports.persona), "GRPC_PORT": str(ports.persona_grpc), "AUTH_URL": auth_url}, ports.persona),
        ("vc-start", "vc_start", "vc-start", "vc-start",
         {"PORT": str(ports.vc_start), "AUTH_URL": auth_url,
          "PERSONA_GRPC_TARGET": f"127.0.0.1:{ports.persona_grpc}"}, ports.vc_start),
        # Workers serve no HTTP: nothing to probe; they share their service's table and queue.
        ("persona-worker", "persona_service.worker", "persona", "persona", {"AUTH_URL": auth_url}, None),
        ("vc-start-worker", "vc_start.worker", "vc-start", "vc-start",
         {"AUTH_URL": auth_url, "PERSONA_GRPC_TARGET": f"127.0.0.1:{ports.persona_grpc}"}, None),
    ]
    specs = []
    for name, module, folder, service, own, http_port in plan:
        env = base_env(["common", folder])
        env.update(common)
        env.update(resources[service])
        env.update(own)
        env["SERVICE_NAME"] = name
        env.update((extra_env or {}).get(name, {}))
        ready = f"http://127.0.0.1:{http_port}/health/ready" if http_port else None
        specs.append(ProcessSpec(name, [sys.executable, "-m", module], env, ready))
    return specs


def start_stack(launcher: Launcher, ports: Ports, extra_env: dict[str, dict[str, str]] | None = None,
                stop: threading.Event | None = None, moto: ProcessSpec | None = None,
                ) -> tuple[dict[str, dict[str, str]], list[ProcessSpec]]:
    """moto (``moto`` replaces the default server process), its resources, then every service and
    worker; returns (bootstrap result, service specs) once every /health/ready answers. Raises
    ChildFailed naming a child that died or hung, StartInterrupted when ``stop`` is set meanwhile."""

    def check() -> None:
        if stop is not None and stop.is_set():
            raise StartInterrupted

    launcher.start(moto or moto_spec(ports.moto))
    launcher.wait_ready(["moto"], timeout=30, stop=stop)
    check()
    resources = bootstrap(f"http://127.0.0.1:{ports.moto}", REGION)
    specs = service_specs(resources, ports, extra_env)
    for spec in specs:
        launcher.start(spec)
    launcher.wait_ready([spec.name for spec in specs], stop=stop)
    check()
    time.sleep(0.5)  # the workers have no ready URL: give a crash on start-up the chance to show
    launcher.raise_if_dead()
    return resources, specs


def stop_stack(launcher: Launcher) -> list[str]:
    """Applications first (they drain against a live moto), then moto."""
    killed = launcher.stop([name for name in launcher.children if name != "moto"])
    return killed + launcher.stop(["moto"], timeout=5)


def banner(ports: Ports) -> str:
    return "\n".join([
        "",
        "Ready (state is in memory and goes away on Ctrl-C):",
        f"  auth      http://127.0.0.1:{ports.auth}      (OpenAPI: /docs)",
        f"  persona   http://127.0.0.1:{ports.persona}      gRPC 127.0.0.1:{ports.persona_grpc}",
        f"  vc-start  http://127.0.0.1:{ports.vc_start}",
        f"  moto      http://127.0.0.1:{ports.moto}      (AWS_ENDPOINT_URL; credentials: testing/testing)",
        f"Walkthrough (create a user, log in, create a persona, start a session): {WALKTHROUGH}.",
        "Ctrl-C stops everything.",
        "",
    ])


def _say(text: str, stream: TextIO | None = None) -> None:
    """print, unless the terminal is gone: after it closed, writing to it fails (EIO), and stopping must go on."""
    try:
        print(text, file=stream or sys.stdout, flush=True)
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    stop = threading.Event()
    # First: from here on a signal stops us in order. SIGHUP: the terminal closed (the shell hangs up its jobs);
    # the children, in sessions of their own, get nothing from it and would keep running.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.set())
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args(argv)
    ports = Ports()
    busy = [f"{name} ({port})" for name, port in ports.named().items() if port_in_use(port)]
    if busy:
        _say(f"run-local: port in use: {', '.join(busy)}; stop whatever holds it and retry", sys.stderr)
        return 2

    launcher = Launcher()
    status = 0
    try:
        start_stack(launcher, ports, stop=stop)
        _say(banner(ports))
        while not stop.wait(0.5):
            launcher.raise_if_dead()
    except StartInterrupted:
        pass  # Ctrl-C while starting: stop what runs, exit 0
    except ChildFailed as error:
        _say(f"run-local: {error}", sys.stderr)
        status = 1
    except Exception as error:  # e.g. bootstrap against moto failed: still stop what runs
        _say(f"run-local: {type(error).__name__}: {error}", sys.stderr)
        status = 1
    finally:
        _say("run-local: stopping...", sys.stderr)
        killed = stop_stack(launcher)
        if killed:
            _say(f"run-local: killed after {STOP_TIMEOUT_SECONDS:g} s: {', '.join(killed)}", sys.stderr)
    _say("run-local: stopped" + (" (after a failure)" if status else ""), sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
