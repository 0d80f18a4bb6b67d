"""An outgoing call made while serving carries what is left of the incoming deadline; a call
past its deadline, or cancelled by its caller, is recorded as that."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest

from casino.echo.v1 import echo_pb2
from tests.conftest import Pki
from tests.support.clients import echo_client


async def test_outer_deadline_is_visible_reduced_on_the_inner_call(launch, pki: Pki) -> None:
    inner = launch()
    # The upstream default timeout (5 s) is longer than the caller's budget, so only
    # propagation can explain an inner deadline below the outer one.
    outer = launch(upstream_port=inner.ports["port"])
    async with echo_client(outer.ports["port"], pki.tls("games")) as client:
        reply = await client.RelayEcho(
            echo_pb2.RelayEchoRequest(request_id=uuid.uuid4().hex, message="m"), timeout=1.5
        )
    outer_ms, inner_ms = reply.deadline_remaining_ms, reply.downstream.deadline_remaining_ms
    assert 0 < outer_ms <= 1510
    # Without propagation the inner call would have the upstream's 5 s default. The wire
    # encoding of grpc-timeout rounds up by a few milliseconds, hence the slack.
    assert 0 < inner_ms <= outer_ms + 10, (outer_ms, inner_ms)
    assert reply.downstream.caller == "echo"


async def test_call_without_deadline_gets_the_upstream_default(launch, pki: Pki) -> None:
    inner = launch()
    outer = launch(upstream_port=inner.ports["port"])
    async with echo_client(outer.ports["port"], pki.tls("games")) as client:
        reply = await client.RelayEcho(
            echo_pb2.RelayEchoRequest(request_id=uuid.uuid4().hex, message="m"), timeout=None
        )
    assert reply.deadline_remaining_ms == 0
    assert 0 < reply.downstream.deadline_remaining_ms <= 5000


async def test_a_call_past_its_deadline_is_counted_as_such_not_as_ok(launch, pki: Pki) -> None:
    # What an SRE reads: grpc_server_handled_total by code and the "rpc finished" line. A call
    # the caller gave up on (its deadline) or cancelled must not count as answered.
    echo = launch()
    async with echo_client(echo.ports["port"], pki.tls("games")) as client:
        with pytest.raises(grpc.aio.AioRpcError) as late:
            await client.Echo(
                echo_pb2.EchoRequest(request_id=uuid.uuid4().hex, message="x", delay_ms=3000),
                timeout=0.3,
            )
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        dropped = asyncio.ensure_future(
            client.Echo(
                echo_pb2.EchoRequest(request_id=uuid.uuid4().hex, message="y", delay_ms=3000),
                timeout=10,
            )
        )
        await asyncio.sleep(0.3)
        dropped.cancel()
    finished: list[str] = []
    for _ in range(50):
        finished = [
            line["grpc_code"]
            for line in echo.log_lines()
            if line.get("event") == "rpc finished" and line.get("rpc", "").endswith("/Echo")
        ]
        if len(finished) == 2:
            break
        await asyncio.sleep(0.1)
    assert sorted(finished) == ["CANCELLED", "DEADLINE_EXCEEDED"]
