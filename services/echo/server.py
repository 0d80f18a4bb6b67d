"""RPC surface of the echo example: maps protobuf to the domain and back, nothing else."""

from __future__ import annotations

import asyncio

import grpc
from opentelemetry import trace
from sqlalchemy.ext.asyncio import AsyncEngine

from casino.echo.v1 import echo_pb2, echo_pb2_grpc
from services.echo import store
from services.echo.echoes import Echo, echo_command
from services.runtime.call import (
    CLIENT_COUNTRY_METADATA,
    authenticated_caller,
    current_call,
    from_edge,
)
from services.runtime.errors import InvalidArgument
from services.runtime.messages import timestamp
from services.runtime.pagination import decode_page_token, encode_page_token, page_size
from services.runtime.server import ServiceRuntime


def _record(echo: Echo) -> echo_pb2.EchoRecord:
    return echo_pb2.EchoRecord(
        name=echo.name,
        request_id=echo.request_id,
        message=echo.message,
        caller=echo.caller,
        create_time=timestamp(echo.create_time),
    )


def _deadline_ms() -> int:
    call = current_call()
    remaining = call.time_remaining() if call else None
    return 0 if remaining is None else max(1, int(remaining * 1000))


def _trace_id() -> str:
    return format(trace.get_current_span().get_span_context().trace_id, "032x")


class EchoService(echo_pb2_grpc.EchoServiceServicer):
    def __init__(self, engine: AsyncEngine, downstream: echo_pb2_grpc.EchoServiceStub | None):
        self._engine = engine
        self._downstream = downstream

    async def Echo(
        self, request: echo_pb2.EchoRequest, context: grpc.aio.ServicerContext
    ) -> echo_pb2.EchoResponse:
        command = echo_command(request.request_id, request.message, request.delay_ms)
        deadline_ms = _deadline_ms()
        if command.delay_ms:
            await asyncio.sleep(command.delay_ms / 1000)
        async with self._engine.begin() as conn:
            echo, replayed = await store.record(conn, command, authenticated_caller())
        return echo_pb2.EchoResponse(
            record=_record(echo),
            replayed=replayed,
            caller=authenticated_caller(),
            deadline_remaining_ms=deadline_ms,
            trace_id=_trace_id(),
            client_country=from_edge(context.invocation_metadata(), CLIENT_COUNTRY_METADATA) or "",
        )

    async def RelayEcho(
        self, request: echo_pb2.RelayEchoRequest, context: grpc.aio.ServicerContext
    ) -> echo_pb2.RelayEchoResponse:
        command = echo_command(request.request_id, request.message)
        if self._downstream is None:
            raise InvalidArgument("request", "this echo service has no downstream configured")
        deadline_ms = _deadline_ms()
        downstream = await self._downstream.Echo(
            echo_pb2.EchoRequest(request_id=command.request_id, message=command.message)
        )
        return echo_pb2.RelayEchoResponse(
            downstream=downstream, deadline_remaining_ms=deadline_ms, trace_id=_trace_id()
        )

    async def Ping(
        self, request: echo_pb2.PingRequest, context: grpc.aio.ServicerContext
    ) -> echo_pb2.PingResponse:
        return echo_pb2.PingResponse(payload=request.payload)

    async def Mirror(
        self, request: echo_pb2.MirrorRequest, context: grpc.aio.ServicerContext
    ) -> echo_pb2.MirrorResponse:
        metadata = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        return echo_pb2.MirrorResponse(
            request=request,
            caller=authenticated_caller(),
            deadline_remaining_ms=_deadline_ms(),
            player_id=metadata.get("x-casino-player-id", ""),
            request_id=metadata.get("x-request-id", ""),
        )

    async def ListEchoes(
        self, request: echo_pb2.ListEchoesRequest, context: grpc.aio.ServicerContext
    ) -> echo_pb2.ListEchoesResponse:
        size = page_size(request.page_size)
        filters = {"caller": request.caller}
        after = decode_page_token(request.page_token, filters)
        try:
            before = int(after[0]) if after else None
        except ValueError:
            raise InvalidArgument("page_token", "page_token is corrupt") from None
        async with self._engine.begin() as conn:
            # One extra row tells whether another page exists.
            rows = await store.list_echoes(
                conn,
                caller=request.caller or None,
                before_sequence=before,
                limit=size + 1,
            )
        page, more = rows[:size], len(rows) > size
        return echo_pb2.ListEchoesResponse(
            echoes=[_record(e) for e in page],
            next_page_token=encode_page_token(filters, [str(page[-1].sequence)]) if more else "",
        )


async def build(runtime: ServiceRuntime) -> None:
    downstream = (
        echo_pb2_grpc.EchoServiceStub(runtime.channel("echo"))
        if "echo" in runtime.config.upstreams
        else None
    )
    runtime.add_service(
        echo_pb2.DESCRIPTOR.services_by_name["EchoService"],
        EchoService(runtime.database(), downstream),
        echo_pb2_grpc.add_EchoServiceServicer_to_server,
    )
