"""Fault injection for the cross-service tests, and the loopback servers those tests put behind it.

`FaultProxy` is an asyncio TCP proxy on 127.0.0.1 (ephemeral port) in front of a real upstream. Its
mode can be switched at any time from any thread and applies to new and already open connections:

- ``pass``:  forward both ways.
- ``delay``: forward each client->upstream chunk `delay_ms` after it arrived (order kept), like a slow link.
- ``drop``:  blackhole: accept, read and discard, never answer. A connection that lost data this way is
             dead for good: once the mode changes it is reset on its next chunk (its byte stream has a hole).
- ``reset``: abort with a TCP RST (SO_LINGER 0), on accept and on the next chunk of open connections.

`connections` and `bytes_from_clients` count what reached the proxy, so a test can prove a call never
touched the network (e.g. an open circuit breaker). The proxy runs its own event loop in a daemon thread,
so sync and async tests use it alike, and it shuts itself down after `max_lifetime_seconds`.

The rest of the module starts what the proxy sits in front of, all in-process on loopback: a moto server
set up by services/local/bootstrap.py, uvicorn serving an ASGI app, and persona's gRPC server.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
import struct
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import harness  # services/tests is on sys.path (conftest.py)

T = TypeVar("T")

MODES = ("pass", "delay", "drop", "reset")
_CHUNK = 65536


class LoopThread:
    """An asyncio event loop running in a daemon thread (servers that need a loop of their own)."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 15.0) -> T:
        """Run `coro` on the loop and wait for its result."""
        return self.submit(coro).result(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)


def _rst(writer: asyncio.StreamWriter | None) -> None:
    """Close with a TCP RST instead of a FIN: SO_LINGER on with a zero timeout, then close."""
    if writer is None or writer.transport.is_closing():
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Connection:
    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter | None) -> None:
        self.client = client
        self.upstream = upstream
        # Data was discarded in drop mode: the stream can never be forwarded correctly again.
        self.blackholed = upstream is None

    def reset(self) -> None:
        _rst(self.client)
        _rst(self.upstream)


class FaultProxy:
    """TCP proxy 127.0.0.1:<port> -> upstream with switchable faults (see the module docstring)."""

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        mode: str = "pass",
        delay_ms: float = 0,
        max_lifetime_seconds: float = 120.0,
    ) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.max_lifetime_seconds = max_lifetime_seconds
        self.mode = "pass"
        self.delay_ms = 0.0
        self.set_mode(mode, delay_ms=delay_ms)
        self.connections = 0
        self.bytes_from_clients = 0
        self.port: int | None = None
        self._open: set[_Connection] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self._loop_thread: LoopThread | None = None

    # --- control (any thread) ----------------------------------------------------------------------

    def start(self) -> FaultProxy:
        self._loop_thread = LoopThread(f"faultproxy->{self.upstream_port}")
        self._server = self._loop_thread.run(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        # Bounded lifetime: a test that forgets to close the proxy does not leave it running.
        self._loop_thread.loop.call_soon_threadsafe(
            lambda: self._loop_thread.loop.call_later(self.max_lifetime_seconds, lambda: asyncio.ensure_future(self._shutdown()))
        )
        return self

    def set_mode(self, mode: str, *, delay_ms: float | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown proxy mode {mode!r}; expected one of {', '.join(MODES)}")
        if delay_ms is not None:
            self.delay_ms = float(delay_ms)
        self.mode = mode

    @property
    def address(self) -> str:
        """host:port to dial instead of the upstream (e.g. a gRPC target)."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def traffic(self) -> tuple[int, int]:
        """(connections accepted, bytes received from clients) so far."""
        return self.connections, self.bytes_from_clients

    def close(self) -> None:
        if self._loop_thread is None:
            return
        with contextlib.suppress(Exception):
            self._loop_thread.run(self._shutdown(), timeout=5.0)
        self._loop_thread.stop()
        self._loop_thread = None

    def __enter__(self) -> FaultProxy:
        return self.start() if self._loop_thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the loop ------------------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self._open):
            conn.reset()
        for task in list(self._tasks):
            task.cancel()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        conn = None
        try:
            if self.mode == "reset":
                _rst(writer)
                return
            upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
            if self.mode != "drop":
                try:
                    upstream = await asyncio.open_connection(self.upstream_host, self.upstream_port)
                except OSError:
                    _rst(writer)
                    return
            conn = _Connection(writer, upstream[1] if upstream else None)
            self._open.add(conn)
            pumps = [asyncio.ensure_future(self._from_client(reader, conn))]
            if upstream is not None:
                pumps.append(asyncio.ensure_future(self._to_client(upstream[0], conn)))
            try:
                # Either side ending (EOF, error, reset) ends the connection.
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        except (asyncio.CancelledError, ConnectionError, OSError):
            pass
        finally:
            if conn is not None:
                self._open.discard(conn)
                for side in (conn.client, conn.upstream):
                    if side is not None and not side.transport.is_closing():
                        side.close()
            elif not writer.transport.is_closing():
                writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def _from_client(self, reader: asyncio.StreamReader, conn: _Connection) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def send() -> None:
            # Each chunk leaves at (arrival + delay): a latency, not a throughput limit.
            while (item := await queue.get()) is not None:
                due, data = item
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                if self.mode in ("drop", "reset") or conn.upstream is None:
                    conn.blackholed = True  # the mode changed while it waited: this chunk is lost
                    continue
                conn.upstream.write(data)
                await conn.upstream.drain()

        sender = asyncio.ensure_future(send())
        try:
            while data := await reader.read(_CHUNK):
                self.bytes_from_clients += len(data)
                mode = self.mode
                if mode == "reset" or (conn.blackholed and mode != "drop"):
                    conn.reset()
                    return
                if mode == "drop":
                    conn.blackholed = True
                    continue
                delay = self.delay_ms / 1000.0 if mode == "delay" else 0.0
                queue.put_nowait((loop.time() + delay, data))
                if sender.done():
                    return  # upstream went away
            queue.put_nowait(None)
            await sender  # deliver what is still delayed before the connection closes
        finally:
            sender.cancel()

    async def _to_client(self, reader: asyncio.StreamReader, conn: _Connection) -> None:
        while data := await reader.read(_CHUNK):
            mode = self.mode
            if mode == "reset" or (conn.blackholed and mode != "drop"):
                conn.reset()
                return
            if mode == "drop":
                conn.blackholed = True
                continue
            conn.client.write(data)
            await conn.client.drain()


# --- loopback servers the proxy sits in front of ------------------------------------------------------

SERVICES_DIR = Path(__file__).resolve().parents[1]
REGION = "eu-central-1"
# moto accepts any credentials; real ones must never be picked up from the caller's environment.
FAKE_AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}
FAST_ARGON2 = {"argon2_time_cost": 1, "argon2_memory_kib": 1024}


def local_module(name: str) -> Any:
    """services/local/<name>.py (not a package: loaded by path, once per process, as ``local_<name>``)."""
    return harness.load_module(f"local_{name}", SERVICES_DIR / "local" / f"{name}.py")


@contextlib.contextmanager
def moto_environment() -> Iterator[dict[str, dict[str, str]]]:
    """A moto server on 127.0.0.1 (in this process; the repo's, local/moto_server.py, which applies one request
    at a time) holding everything local/bootstrap.py creates; yields bootstrap's per-service environment. The
    prefix is unique, so nothing collides with other tests that share moto's process-wide state."""
    import pytest

    with pytest.MonkeyPatch.context() as mp:
        for name, value in FAKE_AWS_ENV.items():
            mp.setenv(name, value)
        for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
            mp.delenv(name, raising=False)
        server = local_module("moto_server").make_server("127.0.0.1", 0)
        thread = threading.Thread(target=server.serve_forever, name="moto", daemon=True)
        thread.start()
        try:
            host, port = server.server_address[:2]
            prefix = "t" + uuid.uuid4().hex[:8]
            yield local_module("bootstrap").bootstrap(f"http://{host}:{port}", REGION, prefix)
        finally:
            server.shutdown()
            thread.join()
            server.server_close()


def settings_for(cls: type[T], service_env: dict[str, str], **overrides: Any) -> T:
    """A service's settings class built from bootstrap's env for it (+ overrides)."""
    return cls(**{name.lower(): value for name, value in service_env.items()}, **overrides)


class UvicornThread:
    """uvicorn serving an ASGI app on 127.0.0.1 (ephemeral port) from a LoopThread."""

    def __init__(self, app: Any, *, name: str = "uvicorn", startup_timeout: float = 15.0) -> None:
        import uvicorn

        self._loop = LoopThread(name)
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self._done = self._loop.submit(self.server.serve())
        deadline = time.monotonic() + startup_timeout
        while not self.server.started:
            if self._done.done():
                self._done.result()  # raises what stopped it
                raise RuntimeError("uvicorn exited during startup")
            if time.monotonic() > deadline:
                raise TimeoutError(f"uvicorn did not start within {startup_timeout} s")
            time.sleep(0.01)
        self.port: int = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        with contextlib.suppress(Exception):
            self._done.result(10)
        self._loop.stop()


def issue_token(http: Any, username: str | None = None, password: str = "correct horse battery") -> tuple[str, str]:
    """Register a user on auth and log in through its real API: (access_token, user_id).

    `http` is a sync httpx client for auth (e.g. `httpx.Client(base_url=...)` or a TestClient)."""
    username = username or f"user-{uuid.uuid4().hex[:10]}"
    created = http.post("/v1/users", json={"username": username, "password": password})
    assert created.status_code == 201, created.text
    login = http.post("/v1/tokens", json={"username": username, "password": password})
    assert login.status_code == 200, login.text
    return login.json()["access_token"], created.json()["user_id"]


class PersonaGrpcThread:
    """persona's real gRPC server (PersonaService + health) on 127.0.0.1 in a LoopThread, on the moto
    table of `settings`, verifying callers' tokens against auth's JWKS at `settings.auth_url`."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self._loop = LoopThread("persona-grpc")
        self._server, self.port, self.store, self._http = self._loop.run(self._start())
        self.target = f"127.0.0.1:{self.port}"

    async def _start(self) -> tuple[Any, int, Any, Any]:
        from persona_service.grpc_api import build_grpc_server
        from persona_service.store import PersonaStore
        from servicekit import aws
        from servicekit.auth import JwksVerifier
        from servicekit.health import Health
        from servicekit.resilience import ResilientHttpClient

        s = self.settings
        http = ResilientHttpClient(s.auth_url, name="auth-jwks", settings=s)
        verifier = JwksVerifier(s.jwks_url, issuer=s.jwt_issuer, audience=s.jwt_audience, http=http)
        store = PersonaStore(aws.client("dynamodb", s), s.table_name, hold_seconds=s.reservation_hold_seconds)
        server, port, _ = build_grpc_server(store, verifier, Health({}), bind="127.0.0.1:0")
        await server.start()
        return server, port, store, http

    async def _stop(self) -> None:
        await self._server.stop(0)
        await self._http.aclose()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._loop.run(self._stop(), timeout=10)
        self._loop.stop()
