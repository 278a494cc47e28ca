"""The placeholder service image's program, run for real on loopback: health and graceful shutdown."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from tests.assembly import REPO_ROOT

SERVER = REPO_ROOT / "services" / "minimal" / "server.py"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_serves_health_then_drains_and_exits_on_sigterm():
    port = _free_port()
    env = {**os.environ, "SERVICE_NAME": "auth", "PORT": str(port), "DRAIN_SECONDS": "1", "PUBLIC_PATH": "/api/auth"}
    process = subprocess.Popen([sys.executable, str(SERVER)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(50):
            try:
                status, body = _get(port, "/health/ready")
                break
            except OSError:
                time.sleep(0.1)
        assert (status, body) == (200, {"status": "ready"})
        assert _get(port, "/health/live") == (200, {"status": "live"})
        # Through the edge the path keeps its prefix: /api/auth/health/ready is the same endpoint.
        assert _get(port, "/api/auth/health/ready") == (200, {"status": "ready"})
        assert _get(port, "/api/authx/health/ready")[1] == {"service": "auth", "placeholder": True}

        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert _get(port, "/health/ready") == (503, {"status": "draining"})  # still answering, not ready
        assert process.wait(timeout=10) == 0
        logs = [json.loads(line) for line in process.stdout.read().splitlines()]
        assert all(entry["service"] == "auth" and "level" in entry for entry in logs)
        assert logs[-1]["message"] == "stopped"
    finally:
        process.kill()
