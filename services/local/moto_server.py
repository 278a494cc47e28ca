"""moto's server as this repo runs it (`make run-local`, the cross-service tests, the benchmark): on
loopback, without its access log, and applying one AWS request at a time.

DynamoDB applies each request atomically: a TransactWriteItems or a conditional write never sees another
write half done. moto's server answers each request on a thread of its own (werkzeug, threaded) and its
DynamoDB does not lock, so requests that arrive together interleave. Concurrent session starts on a
persona with 2 slots then leave more than 2 slots taken: two transactions pass `reserved < max_sessions`
together, or a cancelled transaction's rollback puts back a copy of the table that drops another one's
write (tests/test_saga.py shows it). SerialDispatcher applies requests one after another, as
services/conftest.py's `atomic_moto` fixture does for in-process moto. That is a stand-in for
DynamoDB's atomicity, not a model of its throughput.

The one exception is SQS ReceiveMessage: with WaitTimeSeconds it waits inside moto for a message, which
only another request can bring; holding the lock meanwhile would stop every other call for up to 20 s.

    python local/moto_server.py -H 127.0.0.1 -p 5000
"""

from __future__ import annotations

import argparse
import io
import logging
import signal
import sys
import threading
from typing import Any
from urllib.parse import parse_qs

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer
from werkzeug.serving import make_server as make_wsgi_server


def may_wait(environ: dict[str, Any], body: bytes) -> bool:
    """True for SQS ReceiveMessage, which may long-poll: in SQS's JSON protocol (the header boto3 sends)
    or its query protocol (the Action field)."""
    if environ.get("HTTP_X_AMZ_TARGET") == "AmazonSQS.ReceiveMessage":
        return True
    form = environ.get("QUERY_STRING", "")
    if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        form += "&" + body.decode("utf-8", "replace")
    return "ReceiveMessage" in parse_qs(form).get("Action", [])


class SerialDispatcher(DomainDispatcherApplication):
    """moto's WSGI application, applying one request at a time (ReceiveMessage excepted, see the module)."""

    def __init__(self) -> None:
        super().__init__(create_backend_app)
        self.serial_lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        body = b""
        if environ.get("CONTENT_LENGTH"):
            # Read the body before taking the lock, never while holding it; moto reads it again from here.
            body = environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
            environ["wsgi.input"] = io.BytesIO(body)
        if may_wait(environ, body):
            return super().__call__(environ, start_response)
        with self.serial_lock:
            # moto builds the whole answer in here; werkzeug writes it to the socket after the lock is released.
            return super().__call__(environ, start_response)


def make_server(host: str = "127.0.0.1", port: int = 0) -> BaseWSGIServer:
    """moto's server (threaded, as moto.server runs it) with SerialDispatcher; `serve_forever()` runs it."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access line per AWS call would drown everything else
    return make_wsgi_server(host, port, SerialDispatcher(), threaded=True, request_handler=MotoRequestHandler)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="moto's server, one AWS request at a time")
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args(argv)
    for signum in (signal.SIGINT, signal.SIGTERM):  # how run_local and the tests stop it: exit 0, as moto.server does
        signal.signal(signum, lambda *_: sys.exit(0))
    make_server(args.host, args.port).serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
