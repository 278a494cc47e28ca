"""Graceful drain of a real server process on SIGTERM, and the worker's signal handling."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from servicekit.app import create_service_app
from servicekit import server as server_module
from servicekit.server import build_server
from servicekit.worker import RunnerFailed, serve_worker

COMMON = Path(__file__).resolve().parents[1]
# The drain lasts a second (room for the probes below on a loaded machine); the slow request outlasts it, so it
# is still in flight when the server stops accepting.
DRAIN_SECONDS = 1.0
SLOW_SECONDS = DRAIN_SECONDS + 0.5

APP = """
import asyncio
import os
import grpc
from fastapi import APIRouter
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from servicekit import server
from servicekit.app import create_service_app
from servicekit.settings import ServiceSettings

router = APIRouter()
SLOW_SECONDS = float(os.environ["SLOW_SECONDS"])

@router.get("/v1/slow")
async def slow():
    await asyncio.sleep(SLOW_SECONDS)
    return {"done": True}

def grpc_factory(settings):
    srv = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), srv)
    srv.add_insecure_port(settings.bind_address(settings.port + 1))
    return srv

settings = ServiceSettings()
server.run(create_service_app(settings, title="t", version="1", routers=[router]), settings, grpc_server_factory=grpc_factory)
"""


def _free_port_pair() -> int:
    while True:
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
        with socket.socket() as b:
            try:
                b.bind(("127.0.0.1", port + 1))
                return port
            except OSError:
                continue


def _grpc_health(port: int) -> int:
    async def check() -> int:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
            return reply.status

    return asyncio.run(check())


def test_sigterm_drains_then_finishes_in_flight_and_exits_zero():
    port = _free_port_pair()
    env = {
        **os.environ,
        "PYTHONPATH": str(COMMON),
        "PORT": str(port),
        "BIND_HOST": "127.0.0.1",
        "SERVICE_NAME": "drain-test",
        "DRAIN_SECONDS": str(DRAIN_SECONDS),
        "SLOW_SECONDS": str(SLOW_SECONDS),
        "SHUTDOWN_TIMEOUT_SECONDS": "5",
        "INSTRUMENTATION": "off",
    }
    proc = subprocess.Popen([sys.executable, "-c", APP], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{base}/health/ready", timeout=0.5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        assert _grpc_health(port + 1) == 1  # SERVING: the gRPC server runs alongside

        slow: dict = {}
        sent = threading.Event()

        def trace(event: str, _info: dict) -> None:
            if event == "http11.send_request_body.complete":
                sent.set()

        def call_slow() -> None:
            with httpx.Client(timeout=10) as client:
                slow["r"] = client.get(f"{base}/v1/slow", extensions={"trace": trace})

        thread = threading.Thread(target=call_slow)
        thread.start()
        assert sent.wait(5), "the slow request was never sent"  # in flight: SIGTERM must not lose it
        signaled_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)

        # Draining: no longer ready (once the child has handled the signal), but still serving.
        while (ready := httpx.get(f"{base}/health/ready", timeout=2)).status_code == 200:
            assert time.monotonic() - signaled_at < 5, "still ready 5 s after SIGTERM"
            time.sleep(0.02)
        assert ready.status_code == 503 and "draining" in ready.json()["error"]["message"]
        assert httpx.get(f"{base}/health/live", timeout=2).status_code == 200

        thread.join(10)
        assert slow["r"].status_code == 200 and slow["r"].json() == {"done": True}
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        output = proc.communicate()[0]
    assert "Traceback" not in output, output


async def test_worker_stops_on_sigterm_after_current_batch():
    class Consumer:
        batches = 0

        async def run_until(self, stop: asyncio.Event) -> None:
            while not stop.is_set():
                self.batches += 1
                await asyncio.sleep(0.01)

    consumer = Consumer()
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, os.kill, os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(serve_worker(consumer), 5)
    assert consumer.batches >= 1


class Batches:
    """A consumer stand-in that counts its batches and finishes the one in hand once stopped."""

    def __init__(self) -> None:
        self.batches, self.finished = 0, False

    async def run_until(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.batches += 1
            await asyncio.sleep(0.01)
        self.finished = True


async def test_runners_beside_the_consumer_get_the_same_stop():
    consumer, sweeper = Batches(), Batches()
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, stop.set)

    await asyncio.wait_for(serve_worker(consumer, stop, alongside=[sweeper]), 5)

    assert consumer.finished and sweeper.finished and sweeper.batches >= 1


async def test_a_runner_that_fails_stops_the_consumer_cleanly_and_the_error_ends_the_worker():
    class Failing:
        async def run_until(self, stop: asyncio.Event) -> None:
            await asyncio.sleep(0.03)
            raise RuntimeError("sweeper broke")

    consumer = Batches()
    with pytest.raises(RunnerFailed) as failed:
        await asyncio.wait_for(serve_worker(consumer, alongside=[Failing()]), 5)
    assert str(failed.value.__cause__) == "sweeper broke"
    assert consumer.finished  # stopped after its batch, not cancelled in the middle of it


async def test_lifespan_shutdown_waits_for_grpc_in_flight_calls(make_settings):
    # The app's shutdown hooks close clients that in-flight gRPC handlers still use.
    events: list[str] = []

    class SlowGrpcServer:
        async def stop(self, grace: float) -> None:
            await asyncio.sleep(0.3)  # an in-flight call finishing within the grace period
            events.append("grpc stopped")

    settings = make_settings(port=0, drain_seconds=0, instrumentation=False)
    app = create_service_app(settings, title="t", version="1", on_shutdown=[lambda: events.append("lifespan shutdown")])
    server = build_server(app, settings, grpc_server=SlowGrpcServer(), host="127.0.0.1")
    serving = asyncio.ensure_future(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    server.begin_drain()
    await asyncio.wait_for(serving, 5)
    assert events == ["grpc stopped", "lifespan shutdown"]


async def test_objects_built_at_start_up_are_frozen_out_of_garbage_collection_and_later_garbage_is_still_collected(make_settings):
    # The collector's full passes would otherwise walk every module, route and client on every run.
    import gc
    import weakref

    settings = make_settings(port=0, drain_seconds=0, instrumentation=False)
    app = create_service_app(settings, title="t", version="1")
    server = build_server(app, settings, host="127.0.0.1")
    gc.unfreeze()
    serving = asyncio.ensure_future(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        tracked = {id(obj) for obj in gc.get_objects()}
        assert gc.get_freeze_count() > 0
        assert id(app) not in tracked and id(app.router) not in tracked

        class Node:
            pass

        cycle = Node()
        cycle.itself = cycle  # garbage only the collector can free
        gone = weakref.ref(cycle)
        del cycle
        gc.collect()
        assert gone() is None
    finally:
        server.begin_drain()
        await asyncio.wait_for(serving, 5)
        gc.unfreeze()  # the other tests' objects go back to the collector


def test_http_server_listens_on_bind_host_every_interface_unless_set(make_settings, monkeypatch):
    monkeypatch.delenv("BIND_HOST", raising=False)
    app = create_service_app(make_settings(instrumentation=False), title="t", version="1")
    assert build_server(app, make_settings()).config.host == "0.0.0.0"  # containers: the ALB and the mesh reach the ENI
    assert build_server(app, make_settings(bind_host="127.0.0.1")).config.host == "127.0.0.1"
    monkeypatch.setenv("BIND_HOST", "127.0.0.1")
    assert build_server(app, make_settings()).config.host == "127.0.0.1"
    assert build_server(app, make_settings(), host="::1").config.host == "::1"  # an explicit host still wins


async def test_serve_listens_on_bind_host(make_settings, listening):
    # serve() (what `run` and so every service's main runs) binds BIND_HOST, not uvicorn's or our default 0.0.0.0.
    settings = make_settings(bind_host="127.0.0.1", port=0, drain_seconds=0, instrumentation=False)
    before = listening()
    serving = asyncio.ensure_future(server_module.serve(create_service_app(settings, title="t", version="1"), settings))
    try:
        deadline = time.monotonic() + 10
        while not (opened := listening() - before):
            assert not serving.done() and time.monotonic() < deadline, "serve() never listened"
            await asyncio.sleep(0.02)
        [(host, port)] = opened
        assert host == "127.0.0.1"
        async with httpx.AsyncClient() as client:  # and it is this app that answers there
            assert (await client.get(f"http://127.0.0.1:{port}/health/live")).status_code == 200
    finally:
        if not serving.done():
            os.kill(os.getpid(), signal.SIGTERM)  # serve() stops on SIGTERM, as in a container
        await asyncio.wait_for(serving, 10)
