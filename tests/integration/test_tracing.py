"""W3C trace context: a trace started by a caller reaches every hop's logs and spans."""

from __future__ import annotations

import asyncio
import json
import uuid

import grpc
from opentelemetry.sdk.trace import TracerProvider

from casino.echo.v1 import echo_pb2
from tests.conftest import Pki
from tests.support.clients import echo_client


async def _spans(path, trace_id: str, timeout: float = 10.0) -> list[dict]:
    for _ in range(int(timeout / 0.1)):
        if path.exists():
            spans = [json.loads(line) for line in path.read_text().splitlines()]
            found = [s for s in spans if s["trace_id"] == trace_id]
            if found:
                return found
        await asyncio.sleep(0.1)
    return []


async def test_trace_started_by_caller_appears_in_callee_log_line_and_span(
    launch, pki: Pki
) -> None:
    inner = launch()
    outer = launch(upstream_port=inner.ports["port"])
    provider = TracerProvider()
    tracer = provider.get_tracer("test-client")
    with tracer.start_as_current_span("player clicks spin") as span:
        trace_id = format(span.get_span_context().trace_id, "032x")
        async with echo_client(outer.ports["port"], pki.tls("games"), provider) as client:
            reply = await client.RelayEcho(
                echo_pb2.RelayEchoRequest(request_id=uuid.uuid4().hex, message="m"), timeout=5
            )

    assert reply.trace_id == trace_id
    assert reply.downstream.trace_id == trace_id

    inner_lines = [line for line in inner.log_lines() if line.get("trace_id") == trace_id]
    assert inner_lines, "the callee logged nothing under the caller's trace id"
    finished = [line for line in inner_lines if line["event"] == "rpc finished"]
    assert finished[0]["rpc"] == "/casino.echo.v1.EchoService/Echo"
    assert finished[0]["caller"] == "echo"
    assert finished[0]["grpc_code"] == "OK"
    assert finished[0]["service"] == "echo"

    inner_spans = await _spans(inner.trace_file, trace_id)
    outer_spans = await _spans(outer.trace_file, trace_id)
    assert [s["name"] for s in inner_spans] == ["/casino.echo.v1.EchoService/Echo"]
    assert {s["kind"] for s in outer_spans} == {"SERVER", "CLIENT"}
    # The callee's server span is a child of the relay's client span: one trace, linked.
    client_span = next(s for s in outer_spans if s["kind"] == "CLIENT")
    assert inner_spans[0]["parent_span_id"] == client_span["span_id"]


async def test_call_without_trace_context_gets_a_fresh_trace_id_in_logs(launch, pki) -> None:
    echo = launch()
    async with echo_client(echo.ports["port"], pki.tls("games")) as client:
        reply = await client.Echo(
            echo_pb2.EchoRequest(request_id=uuid.uuid4().hex, message="m"), timeout=5
        )
    assert len(reply.trace_id) == 32 and int(reply.trace_id, 16) != 0
    lines = [line for line in echo.log_lines() if line.get("event") == "rpc finished"]
    assert lines[-1]["trace_id"] == reply.trace_id


async def test_each_rpc_ends_its_server_span_with_its_status_code(launch, pki) -> None:
    # An answer, a domain refusal and a caller refused before the handler: three server
    # spans, each ended with its code; none is an error of the server's (OpenTelemetry's
    # conventions for gRPC servers: those are UNKNOWN, INTERNAL, UNAVAILABLE and the like).
    echo = launch()
    provider = TracerProvider()
    tracer = provider.get_tracer("test-client")
    traces: dict[str, str] = {}
    request_id = uuid.uuid4().hex
    for case, caller, message in (
        ("answered", "games", "m"),
        ("refused", "games", "another body, same request id"),
        ("denied", "wallet", "m"),
    ):
        with tracer.start_as_current_span(case) as span:
            traces[case] = format(span.get_span_context().trace_id, "032x")
            async with echo_client(echo.ports["port"], pki.tls(caller), provider) as client:
                try:
                    await client.Echo(
                        echo_pb2.EchoRequest(request_id=request_id, message=message), timeout=5
                    )
                except grpc.aio.AioRpcError as exc:
                    assert case != "answered", exc
    expected = {"answered": "0", "refused": "9", "denied": "7"}  # OK, FAILED_PRECONDITION, ...
    for case, trace_id in traces.items():
        (server,) = [s for s in await _spans(echo.trace_file, trace_id) if s["kind"] == "SERVER"]
        assert server["name"] == "/casino.echo.v1.EchoService/Echo"
        assert server["attributes"]["rpc.grpc.status_code"] == expected[case], case
        assert server["attributes"]["rpc.service"] == "casino.echo.v1.EchoService"
        assert server["attributes"]["rpc.method"] == "Echo"
        assert server["attributes"]["network.peer.address"] == "127.0.0.1"
        assert server["status"] == "UNSET", case
        assert server["end_unix_nano"] >= server["start_unix_nano"]
