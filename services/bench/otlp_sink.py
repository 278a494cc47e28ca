"""A do-nothing OTLP/gRPC collector for the benchmark: accepts traces, metrics and logs and counts
them. With it the instrumented services pay what they pay in ECS (batching, protobuf encoding,
gRPC export to the ADOT sidecar) instead of dropping spans for want of an endpoint.

    python otlp_sink.py PORT     # prints {"spans": n, "metric_requests": n} on SIGTERM
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

counts = {"spans": 0, "metric_requests": 0, "log_requests": 0}
lock = threading.Lock()


class Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):  # noqa: N802 (gRPC's naming)
        spans = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        with lock:
            counts["spans"] += spans
        return trace_service_pb2.ExportTraceServiceResponse()


class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def Export(self, request, context):  # noqa: N802
        with lock:
            counts["metric_requests"] += 1
        return metrics_service_pb2.ExportMetricsServiceResponse()


class Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def Export(self, request, context):  # noqa: N802
        with lock:
            counts["log_requests"] += 1
        return logs_service_pb2.ExportLogsServiceResponse()


def main(port: int) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    print(json.dumps({"listening": port}), flush=True)
    while not stop.wait(0.5):  # a timed wait, so the signal handler gets to run
        pass
    server.stop(grace=1).wait()
    with lock:
        print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]))
