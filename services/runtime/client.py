"""Outgoing gRPC: mutual-TLS channels that verify the upstream's identity, carry the trace
context, and inherit the remaining deadline of the RPC being served.

Both are done by a thin wrapper around each method's callable rather than by grpc.aio
client interceptors: an intercepted call in grpc.aio runs through extra tasks and call
objects, which measured 0.09 ms of CPU and 0.17 ms of latency per call on the 2-core dev
machine (a third of a bare call), paid on every hop of every request."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.semconv.trace import SpanAttributes
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider

from services.runtime.call import current_call
from services.runtime.config import TLSConfig
from services.runtime.tls import channel_credentials

Metadata = Sequence[tuple[str, str | bytes]]


def secure_channel(
    target: str,
    tls: TLSConfig,
    upstream_service: str,
    *,
    default_timeout: float | None = 5.0,
    tracer_provider: TracerProvider | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """A channel to `target` that only accepts a server holding `upstream_service`'s
    certificate (its DNS SAN is the service name), authenticating as the identity in `tls`.
    Unary calls made on it get at most the time left of the RPC being served (else
    `default_timeout`) and a CLIENT span whose context travels in the call metadata."""
    channel = grpc.aio.secure_channel(
        target,
        channel_credentials(tls),
        options=[
            ("grpc.ssl_target_name_override", upstream_service),
            ("grpc.default_authority", upstream_service),
            ("grpc.keepalive_time_ms", 30_000),
            *options,
        ],
    )
    return CallingChannel(
        channel, default_timeout, trace.get_tracer(__name__, None, tracer_provider)
    )


def call_timeout(requested: float | None, default: float | None) -> float | None:
    """The timeout of an outgoing call: the one asked for (else the upstream's default),
    never more than what is left of the deadline of the RPC being served."""
    timeout = requested if requested is not None else default
    call = current_call()
    remaining = call.time_remaining() if call else None
    if remaining is not None:
        remaining = max(remaining, 0.0)
        timeout = remaining if timeout is None else min(timeout, remaining)
    return timeout


class _TracedUnaryUnary:
    """A unary method's callable: `await stub.Method(request, ...)` returns the response
    or raises grpc.aio.AioRpcError, as grpc.aio's own callable does."""

    __slots__ = ("_attributes", "_call", "_channel", "_method")

    def __init__(
        self, call: grpc.aio.UnaryUnaryMultiCallable, channel: CallingChannel, method: str
    ) -> None:
        self._call, self._channel, self._method = call, channel, method
        service, _, name = method.lstrip("/").partition("/")
        self._attributes = {
            SpanAttributes.RPC_SYSTEM: "grpc",
            SpanAttributes.RPC_SERVICE: service,
            SpanAttributes.RPC_METHOD: name,
        }

    async def __call__(
        self,
        request: Any,
        *,
        timeout: float | None = None,
        metadata: Metadata | None = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        channel = self._channel
        with channel.tracer.start_as_current_span(
            self._method,
            kind=SpanKind.CLIENT,
            attributes=self._attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            try:
                response = await self._call(
                    request,
                    timeout=call_timeout(timeout, channel.default_timeout),
                    metadata=[*(metadata or ()), *carrier.items()],
                    credentials=credentials,
                    wait_for_ready=wait_for_ready,
                    compression=compression,
                )
            except grpc.aio.AioRpcError as exc:
                span.set_attribute(SpanAttributes.RPC_GRPC_STATUS_CODE, exc.code().value[0])
                span.set_status(Status(StatusCode.ERROR, exc.code().name))
                raise
            span.set_attribute(SpanAttributes.RPC_GRPC_STATUS_CODE, grpc.StatusCode.OK.value[0])
            return response


class _TimedUnaryStream:
    """A server-streaming method's callable: the deadline rule only (the stream is read by
    the caller, long after this returns)."""

    __slots__ = ("_call", "_channel")

    def __init__(self, call: grpc.aio.UnaryStreamMultiCallable, channel: CallingChannel) -> None:
        self._call, self._channel = call, channel

    def __call__(self, request: Any, *, timeout: float | None = None, **kwargs: Any) -> Any:
        return self._call(
            request, timeout=call_timeout(timeout, self._channel.default_timeout), **kwargs
        )


class CallingChannel(grpc.aio.Channel):
    """grpc.aio.Channel with the platform's call rules on its unary and server-streaming
    methods (the only shapes our contracts use); everything else is the wrapped channel's."""

    def __init__(
        self, channel: grpc.aio.Channel, default_timeout: float | None, tracer: trace.Tracer
    ) -> None:
        self._channel = channel
        self.default_timeout = default_timeout
        self.tracer = tracer

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _TracedUnaryUnary(self._channel.unary_unary(method, *args, **kwargs), self, method)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return _TimedUnaryStream(self._channel.unary_stream(method, *args, **kwargs), self)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._channel.stream_unary(method, *args, **kwargs)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._channel.stream_stream(method, *args, **kwargs)

    async def __aenter__(self) -> CallingChannel:
        await self._channel.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._channel.__aexit__(*exc_info)

    async def close(self, grace: float | None = None) -> None:
        await self._channel.close(grace)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self._channel.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self._channel.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self._channel.channel_ready()
