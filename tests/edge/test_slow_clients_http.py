"""Clients that hold connections without finishing a request (slowloris): on every listener a
request head (request line and headers) must arrive within a bound of its first byte, else
408 `HEADER_TIMEOUT` and the connection closed; a connection with no request under way is
closed after an idle bound (a trusted load balancer's after a longer one); a keep-alive client
pausing between requests is served as before. Raw sockets against a running edge with short
bounds (0.5 s for a head, 2 s idle, 8 s idle for a trusted proxy)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator

import pytest

from edge.process import EdgeProcess
from tests.edge.conftest import EdgeKit
from tests.support.raw_http import exchange, parse_answer, read_until_closed

HEADER_TIMEOUT = 0.5
IDLE_TIMEOUT = 2.0
PROXY_IDLE_TIMEOUT = 8.0
# What "within the bound" allows on a slow machine: the bound plus this.
SLACK = 5.0
PING = b"GET /v1/ping HTTP/1.1\r\nHost: edge\r\n\r\n"


@pytest.fixture(scope="module")
def guarded_edge(
    edge_kit: EdgeKit,
) -> Iterator[EdgeProcess]:
    yield from edge_kit.serve(
        "guarded-edge",
        header_timeout=HEADER_TIMEOUT,
        idle_timeout=IDLE_TIMEOUT,
        proxy_idle_timeout=PROXY_IDLE_TIMEOUT,
    )


def _assert_header_timeout(answer: bytes) -> None:
    status_line, headers, body = parse_answer(answer)
    assert status_line.startswith("HTTP/1.1 408"), answer
    assert headers["connection"] == "close"
    assert headers["content-type"] == "application/json"
    assert headers["cache-control"] == "no-store"
    error = json.loads(body)
    assert (error["code"], error["reason"]) == ("DEADLINE_EXCEEDED", "HEADER_TIMEOUT")
    assert error["requestId"] == headers["x-request-id"]


@pytest.mark.parametrize("listener", ["public", "webhooks", "admin"])
async def test_half_a_request_line_gets_408_and_the_connection_closed(
    guarded_edge: EdgeProcess, listener: str
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", guarded_edge.ports[listener])
    try:
        writer.write(b"GET /v1/pi")
        await writer.drain()
        answer = await read_until_closed(reader, HEADER_TIMEOUT + SLACK)
    finally:
        writer.close()
    _assert_header_timeout(answer)


async def test_a_head_dribbled_a_byte_at_a_time_is_cut_at_the_bound(
    guarded_edge: EdgeProcess,
) -> None:
    # Every byte arrives well within the bound of the one before: only a deadline on the
    # whole head stops this client holding the connection for as long as it likes.
    reader, writer = await asyncio.open_connection("127.0.0.1", guarded_edge.ports["public"])

    async def dribble() -> None:
        with contextlib.suppress(ConnectionError):
            writer.write(b"GET /v1/ping HTTP/1.1\r\nHost: edge\r\nX-Slow: ")
            while True:
                await asyncio.sleep(0.05)
                writer.write(b"a")
                await writer.drain()

    dribbler = asyncio.create_task(dribble())
    try:
        answer = await read_until_closed(reader, HEADER_TIMEOUT + SLACK)
    finally:
        dribbler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await dribbler
        writer.close()
    _assert_header_timeout(answer)


@pytest.mark.parametrize("listener", ["public", "admin"])
async def test_a_connection_that_sends_nothing_is_closed(
    guarded_edge: EdgeProcess, listener: str
) -> None:
    # Not from 127.0.0.1, the admin listener's trusted proxy (its bound is the proxy one).
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", guarded_edge.ports[listener], local_addr=("127.0.0.2", 0)
    )
    try:
        # Nothing was asked, so nothing is answered: the edge just closes.
        assert await read_until_closed(reader, IDLE_TIMEOUT + SLACK) == b""
    finally:
        writer.close()


async def test_a_keep_alive_client_pausing_between_requests_is_served(
    guarded_edge: EdgeProcess,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", guarded_edge.ports["public"])
    try:
        status, headers, _ = await exchange(reader, writer, PING, SLACK)
        assert status.startswith("HTTP/1.1 200"), status
        assert headers.get("connection") != "close"
        # Longer than the head bound, shorter than the idle one: the head's clock starts at
        # its first byte, not when the connection went idle.
        await asyncio.sleep(HEADER_TIMEOUT * 2)
        status, _, _ = await exchange(reader, writer, PING, SLACK)
        assert status.startswith("HTTP/1.1 200"), status
        # A head in pieces is fine as long as it is whole within the bound.
        writer.write(PING[:10])
        await writer.drain()
        await asyncio.sleep(HEADER_TIMEOUT / 5)
        status, _, body = await exchange(reader, writer, PING[10:], SLACK)
        assert status.startswith("HTTP/1.1 200"), status
        assert json.loads(body) is not None
    finally:
        writer.close()


async def test_a_trusted_proxys_idle_connection_outlives_the_client_idle_bound(
    guarded_edge: EdgeProcess,
) -> None:
    # The admin listener believes 127.0.0.1 as its load balancer. A balancer reuses its idle
    # connections for its clients' requests: closed under it at the client bound, a request
    # it is sending at that moment would fail (the balancer answers 502). Its connection is
    # kept for the proxy bound; another address's is not.
    proxy = await asyncio.open_connection(
        "127.0.0.1", guarded_edge.ports["admin"], local_addr=("127.0.0.1", 0)
    )
    client = await asyncio.open_connection(
        "127.0.0.1", guarded_edge.ports["admin"], local_addr=("127.0.0.2", 0)
    )
    try:
        assert await read_until_closed(client[0], IDLE_TIMEOUT + SLACK) == b""
        await asyncio.sleep(1.0)  # past the client bound, well within the proxy's
        status, _, _ = await exchange(*proxy, b"GET /livez HTTP/1.1\r\nHost: edge\r\n\r\n", SLACK)
        assert status.startswith("HTTP/1.1 200"), status
        # Bounded all the same: idle again, it is closed after the proxy bound.
        assert await read_until_closed(proxy[0], PROXY_IDLE_TIMEOUT + SLACK) == b""
    finally:
        proxy[1].close()
        client[1].close()
