"""What servicekit's instrumentation costs per request, measured in one process without a network:
a steadier figure than `make bench-services` on a shared machine, where other processes move the
throughput of a run by tens of percent.

Two apps from `create_service_app` with the same small JSON endpoint, one with INSTRUMENTATION=on
(server span, RED histogram, JSON access line; spans go to a BatchSpanProcessor with an exporter
that drops them, logs to /dev/null), one off. Requests are driven straight through ASGI, in
alternating batches; each side's figure is its fastest batch in thread CPU time, which filters out
the moments other processes took the CPU (and most garbage collection: the means over all batches,
printed after it, include that). Start-up objects are frozen (gc.freeze) as servicekit.server does. It measures the middleware stack only: uvicorn, sockets
and the endpoint's own work are the same in both arms of the real benchmark.

    .venv-services/bin/python services/bench/stack_cost.py                      # production default sampler
    .venv-services/bin/python services/bench/stack_cost.py --sampler parentbased_always_on
    .venv-services/bin/python services/bench/stack_cost.py --no-freeze                  # without gc.freeze
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "common"))

from fastapi import APIRouter  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from servicekit.app import create_service_app  # noqa: E402
from servicekit.logging import configure_logging  # noqa: E402
from servicekit.startup import freeze_startup_objects  # noqa: E402
from servicekit.settings import ServiceSettings  # noqa: E402
from servicekit.tracing import DEFAULT_TRACES_SAMPLER  # noqa: E402

BATCH = 200


class VerifyRequest(BaseModel):
    token: str


class DroppingExporter(SpanExporter):
    def export(self, spans) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def build_app(instrumentation: bool, sampler: str):
    router = APIRouter()

    @router.post("/v1/tokens/verify")
    async def verify(body: VerifyRequest) -> dict:
        return {"active": True, "claims": {"sub": "user-1", "scope": "personas sessions"}}

    settings = ServiceSettings(service_name="stack-cost", aws_region="us-east-1", table_name="unused",
                               instrumentation=instrumentation, otel_traces_sampler=sampler)
    app = create_service_app(settings, title="stack-cost", version="1", routers=[router])
    if instrumentation:
        app.state.telemetry.tracer_provider.add_span_processor(BatchSpanProcessor(DroppingExporter()))
    return app


BODY = b'{"token": "' + b"x" * 600 + b'"}'  # about the size of one of auth's tokens
HEADERS = [(b"host", b"127.0.0.1:8081"), (b"user-agent", b"stack-cost"), (b"content-type", b"application/json"),
           (b"content-length", str(len(BODY)).encode())]


async def request(app) -> None:
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/tokens/verify", "raw_path": b"/v1/tokens/verify", "query_string": b"", "root_path": "",
             "headers": HEADERS, "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8081)}
    messages = [{"type": "http.request", "body": BODY, "more_body": False}]
    status = []

    async def receive():
        return messages.pop() if messages else {"type": "http.disconnect"}

    async def send(message) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope, receive, send)
    if status != [200]:
        raise RuntimeError(f"the endpoint answered {status}")


async def measure(rounds: int, sampler: str, freeze: bool = True) -> tuple[dict[str, float], dict[str, float]]:
    """Each side's fastest batch and its mean over all batches (the mean includes garbage collection)."""
    apps = {"off": build_app(False, sampler), "on": build_app(True, sampler)}
    with open("/dev/null", "w") as devnull:
        # The JSON lines of the "on" app, written (to nowhere) as in production; "off" writes none.
        configure_logging("stack-cost", "INFO", stream=devnull)
        for app in apps.values():
            for _ in range(BATCH):  # warm-up
                await request(app)
        if freeze:
            freeze_startup_objects()  # as servicekit.server does once started
        best, total = dict.fromkeys(apps, float("inf")), dict.fromkeys(apps, 0.0)
        for index in range(rounds):
            for name in ("off", "on") if index % 2 == 0 else ("on", "off"):
                started = time.thread_time()
                for _ in range(BATCH):
                    await request(apps[name])
                elapsed = time.thread_time() - started
                best[name] = min(best[name], elapsed / BATCH)
                total[name] += elapsed
        configure_logging("stack-cost", "INFO")
    return best, {name: total[name] / (rounds * BATCH) for name in apps}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sampler", default=DEFAULT_TRACES_SAMPLER, help=f"OTEL_TRACES_SAMPLER of the 'on' app ({DEFAULT_TRACES_SAMPLER})")
    parser.add_argument("--rounds", type=int, default=60, help=f"batches of {BATCH} requests per side (60)")
    parser.add_argument("--no-freeze", action="store_true", help="leave start-up objects to the collector (no gc.freeze)")
    args = parser.parse_args(argv)
    best, mean = asyncio.run(measure(args.rounds, args.sampler, freeze=not args.no_freeze))
    print(f"middleware stack, CPU per request: off {1e6 * best['off']:.1f} us, on {1e6 * best['on']:.1f} us"
          f" (instrumentation +{1e6 * (best['on'] - best['off']):.1f} us; sampler {args.sampler});"
          f" means incl. garbage collection: off {1e6 * mean['off']:.1f} us, on {1e6 * mean['on']:.1f} us"
          f" (+{1e6 * (mean['on'] - mean['off']):.1f} us){'' if not args.no_freeze else '; no gc.freeze'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
