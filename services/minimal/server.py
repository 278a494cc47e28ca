"""A minimal, dependency-free HTTP service: the placeholder image of every reference service until
the real services (issue 5) replace it. It behaves like one where the platform can see it: health
endpoints, JSON logs, and a graceful SIGTERM (turn not-ready, finish in-flight requests, exit).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SERVICE = os.environ.get("SERVICE_NAME", "service")
PORT = int(os.environ.get("PORT", "8080"))
# The edge path the load balancer routes to this service (e.g. /api/auth). The load balancer passes
# the path on unchanged, so the service answers under it too: /api/auth/health/ready is /health/ready.
PUBLIC_PATH = os.environ.get("PUBLIC_PATH", "").rstrip("/")
ready = threading.Event()


def log(level: str, message: str, **fields: object) -> None:
    print(json.dumps({"service": SERVICE, "level": level, "message": message, **fields}), flush=True)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = self.path.split("?", 1)[0]
        if PUBLIC_PATH and (path == PUBLIC_PATH or path.startswith(PUBLIC_PATH + "/")):
            path = path[len(PUBLIC_PATH):] or "/"
        if path == "/health/live":
            self._reply(200, {"status": "live"})
        elif path == "/health/ready":
            self._reply(200 if ready.is_set() else 503, {"status": "ready" if ready.is_set() else "draining"})
        else:
            self._reply(200, {"service": SERVICE, "placeholder": True})

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's signature)
        log("info", "request", path=self.path, status=args[1] if len(args) > 1 else None)


def main() -> None:
    server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    server.daemon_threads = False  # shutdown waits for in-flight requests

    def drain(signum: int, frame: object) -> None:
        log("info", "SIGTERM: not ready, draining")
        ready.clear()
        # Give the mesh and load balancer time to stop sending, then stop accepting and exit.
        threading.Thread(target=lambda: (time.sleep(float(os.environ.get("DRAIN_SECONDS", "5"))), server.shutdown())).start()

    signal.signal(signal.SIGTERM, drain)
    ready.set()
    log("info", "listening", port=PORT)
    server.serve_forever()
    server.server_close()
    log("info", "stopped")
    sys.exit(0)


if __name__ == "__main__":
    main()
