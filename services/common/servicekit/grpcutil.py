"""gRPC (grpc.aio) plumbing: correlation id in metadata both ways, and the `rpc.server.duration` RED histogram."""

from __future__ import annotations

import time
from typing import Any

import grpc
from grpc import aio

from .correlation import GRPC_METADATA_KEY, correlation_scope, current_correlation_id, from_grpc_metadata


def _with_correlation(details: aio.ClientCallDetails) -> aio.ClientCallDetails:
    cid = current_correlation_id()
    if not cid:
        return details
    metadata = aio.Metadata(*(details.metadata or ()))
    if GRPC_METADATA_KEY not in metadata:
        metadata.add(GRPC_METADATA_KEY, cid)
    return aio.ClientCallDetails(details.method, details.timeout, metadata, details.credentials, details.wait_for_ready)


class CorrelationUnaryUnary(aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await continuation(_with_correlation(client_call_details), request)


class CorrelationUnaryStream(aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await continuation(_with_correlation(client_call_details), request)


def client_interceptors() -> list[aio.ClientInterceptor]:
    return [CorrelationUnaryUnary(), CorrelationUnaryStream()]


def _split_method(full: str) -> tuple[str, str]:
    # "/mf.persona.v1.PersonaService/GetPersona" -> (service, method)
    parts = full.lstrip("/").split("/", 1)
    return (parts[0], parts[1]) if len(parts) == 2 else (full, "")


class ServiceServerInterceptor(aio.ServerInterceptor):
    """Restores the caller's correlation id and records `rpc.server.duration` (ms) per method and status."""

    def __init__(self, *, record_metrics: bool = True) -> None:
        self._histogram = None
        if record_metrics:
            from .tracing import get_meter

            self._histogram = get_meter("servicekit.grpc").create_histogram(
                "rpc.server.duration", unit="ms", description="Duration of inbound gRPC calls"
            )

    def _record(self, method: str, started: float, code: grpc.StatusCode) -> None:
        if self._histogram is None:
            return
        service, name = _split_method(method)
        self._histogram.record(
            (time.perf_counter() - started) * 1000.0,
            {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name, "rpc.grpc.status_code": code.value[0]},
        )

    @staticmethod
    def _code(context: Any, exc: BaseException | None) -> grpc.StatusCode:
        code = None
        try:
            code = context.code()
        except Exception:  # older contexts may not expose code()
            code = None
        if isinstance(code, grpc.StatusCode):
            return code
        return grpc.StatusCode.UNKNOWN if exc is not None and not isinstance(exc, aio.AbortError) else grpc.StatusCode.OK

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        incoming_cid = from_grpc_metadata(handler_call_details.invocation_metadata)

        if handler.response_streaming:
            behavior = handler.stream_stream if handler.request_streaming else handler.unary_stream
            factory = grpc.stream_stream_rpc_method_handler if handler.request_streaming else grpc.unary_stream_rpc_method_handler

            async def streaming(request, context):
                started = time.perf_counter()
                error = None
                with correlation_scope(incoming_cid):
                    try:
                        result = behavior(request, context)
                        if hasattr(result, "__aiter__"):
                            async for item in result:
                                yield item
                        else:
                            for item in await result:
                                yield item
                    except BaseException as exc:
                        error = exc
                        raise
                    finally:
                        self._record(method, started, self._code(context, error))

            wrapped = streaming
        else:
            behavior = handler.stream_unary if handler.request_streaming else handler.unary_unary
            factory = grpc.stream_unary_rpc_method_handler if handler.request_streaming else grpc.unary_unary_rpc_method_handler

            async def unary(request, context):
                started = time.perf_counter()
                error = None
                with correlation_scope(incoming_cid):
                    try:
                        return await behavior(request, context)
                    except BaseException as exc:
                        error = exc
                        raise
                    finally:
                        self._record(method, started, self._code(context, error))

            wrapped = unary
        return factory(wrapped, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)


_server_patched = False


def install_server_metrics() -> None:
    """Patch grpc.aio.server (once) so every server gets ServiceServerInterceptor, like OTel's own patch."""
    global _server_patched
    if _server_patched:
        return
    _server_patched = True
    original = aio.server

    def server(*args: Any, **kwargs: Any):
        interceptors = list(kwargs.get("interceptors") or ())
        if not any(isinstance(i, ServiceServerInterceptor) for i in interceptors):
            interceptors.append(ServiceServerInterceptor())
        kwargs["interceptors"] = interceptors
        return original(*args, **kwargs)

    aio.server = server
