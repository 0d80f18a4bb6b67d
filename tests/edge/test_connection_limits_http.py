"""Connection floods: each listener holds at most `max_connections` connections, and at most
`max_connections_per_address` from one client address; past either, a new connection is
answered at once (503 or 429 TOO_MANY_CONNECTIONS, Retry-After) and closed, while the
connections already held, other addresses and the other listeners are served as before.
Raw sockets from several loopback addresses (all of 127.0.0.0/8 is local) against a running
edge whose every listener allows 6 connections, 3 per address."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator

import pytest

from edge.process import EdgeProcess
from tests.edge.conftest import EdgeKit
from tests.support.raw_http import exchange, parse_answer, read_until_closed

TOTAL, PER_ADDRESS = 6, 3
SLACK = 5.0
PING = b"GET /v1/ping HTTP/1.1\r\nHost: edge\r\n\r\n"
LIVEZ = b"GET /livez HTTP/1.1\r\nHost: edge\r\n\r\n"

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture(scope="module")
def capped_edge(
    edge_kit: EdgeKit,
) -> Iterator[EdgeProcess]:
    yield from edge_kit.serve(
        "capped-edge",
        # Held connections must outlive the test, not the idle bound.
        idle_timeout=60.0,
        max_connections=TOTAL,
        max_connections_per_address=PER_ADDRESS,
    )


@pytest.fixture
async def held() -> AsyncIterator[list[Connection]]:
    """Connections a test holds open; all closed after it, and their slots given back."""
    connections: list[Connection] = []
    yield connections
    for _, writer in connections:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    await asyncio.sleep(0.3)  # the edge sees the closes before the next test connects


async def _connect(edge: EdgeProcess, listener: str, source: str) -> Connection:
    return await asyncio.open_connection("127.0.0.1", edge.ports[listener], local_addr=(source, 0))


async def _hold(edge: EdgeProcess, held: list[Connection], listener: str, source: str) -> None:
    """A connection the edge accepted and serves: answered a request, kept alive."""
    reader, writer = await _connect(edge, listener, source)
    held.append((reader, writer))
    status, _, _ = await exchange(reader, writer, LIVEZ, SLACK)
    assert status.startswith("HTTP/1.1 200"), status


async def _refused(edge: EdgeProcess, listener: str, source: str) -> tuple[int, dict, dict]:
    """Connect and send nothing: the answer the edge gives at once, and that it closed."""
    reader, writer = await _connect(edge, listener, source)
    try:
        answer = await read_until_closed(reader, SLACK)
    finally:
        writer.close()
    status_line, headers, body = parse_answer(answer)
    return int(status_line.split()[1]), headers, json.loads(body)


async def test_past_the_per_address_limit_a_connection_gets_429_and_the_rest_are_served(
    capped_edge: EdgeProcess, held: list[Connection]
) -> None:
    for _ in range(PER_ADDRESS):
        await _hold(capped_edge, held, "public", "127.0.0.2")

    status, headers, error = await _refused(capped_edge, "public", "127.0.0.2")

    assert status == 429
    assert (error["code"], error["reason"]) == ("RESOURCE_EXHAUSTED", "TOO_MANY_CONNECTIONS")
    assert headers["retry-after"] == "1"
    assert headers["connection"] == "close"
    assert error["requestId"] == headers["x-request-id"]
    # The connections held are served as before, and so is another address.
    reader, writer = held[0]
    status_line, _, body = await exchange(reader, writer, PING, SLACK)
    assert status_line.startswith("HTTP/1.1 200"), body
    await _hold(capped_edge, held, "public", "127.0.0.3")


async def test_a_closed_connection_gives_its_slot_back(
    capped_edge: EdgeProcess, held: list[Connection]
) -> None:
    for _ in range(PER_ADDRESS):
        await _hold(capped_edge, held, "public", "127.0.0.4")
    _, writer = held.pop()
    writer.close()
    await writer.wait_closed()
    await asyncio.sleep(0.3)

    await _hold(capped_edge, held, "public", "127.0.0.4")


async def test_past_the_listener_limit_a_connection_gets_503_and_other_listeners_serve(
    capped_edge: EdgeProcess, held: list[Connection]
) -> None:
    for source in ("127.0.0.5", "127.0.0.6"):
        for _ in range(PER_ADDRESS):
            await _hold(capped_edge, held, "public", source)

    status, headers, error = await _refused(capped_edge, "public", "127.0.0.7")

    assert status == 503
    assert (error["code"], error["reason"]) == ("UNAVAILABLE", "TOO_MANY_CONNECTIONS")
    assert headers["retry-after"] == "1"
    # A flood of connections on the public listener leaves the others theirs.
    for listener in ("webhooks", "admin"):
        await _hold(capped_edge, held, listener, "127.0.0.7")


async def test_a_trusted_proxy_is_held_only_to_the_listener_total(
    capped_edge: EdgeProcess, held: list[Connection]
) -> None:
    # The admin listener believes 127.0.0.1 as its load balancer: its connections carry many
    # clients, so its address has no per-address limit, only the listener's.
    for _ in range(TOTAL):
        await _hold(capped_edge, held, "admin", "127.0.0.1")

    status, _, error = await _refused(capped_edge, "admin", "127.0.0.1")

    assert (status, error["reason"]) == (503, "TOO_MANY_CONNECTIONS")


def _in_child(script: str) -> subprocess.CompletedProcess[str]:
    # Open-file limits are per process: never lower pytest's own.
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_edge_raises_its_open_file_limit_to_fit_every_listener() -> None:
    done = _in_child("""
        import resource
        from edge.connections import RESERVED_FILES, ensure_open_files

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
        assert ensure_open_files([1000, 200, 100]) == 1300 + RESERVED_FILES
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == 1300 + RESERVED_FILES
        print("ok")
    """)
    assert done.stdout.strip() == "ok", done.stderr


def test_the_edge_refuses_to_start_when_its_listeners_cannot_fit() -> None:
    done = _in_child("""
        import resource
        from edge.connections import ensure_open_files
        from services.runtime.config import ConfigError

        resource.setrlimit(resource.RLIMIT_NOFILE, (512, 1024))
        try:
            ensure_open_files([4096, 256, 256])
        except ConfigError as exc:
            print(exc)
    """)
    assert "max_connections sum to 4608" in done.stdout, done.stderr
    assert "may open 1024" in done.stdout


async def test_a_refused_client_that_already_sent_its_request_reads_the_answer(
    capped_edge: EdgeProcess, held: list[Connection]
) -> None:
    # Clients send their request as soon as they connect, so a refused connection is closed
    # with the request unread, and such a close is a reset, not a FIN. The answer is
    # written before it and must reach the client all the same (the reset ends the stream
    # after the answer, it does not replace it).
    for _ in range(PER_ADDRESS):
        await _hold(capped_edge, held, "public", "127.0.0.8")
    body = b"{" + b" " * 60_000 + b"}"
    request = (
        b"POST /v1/echo HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    answers = []
    for _ in range(30):
        reader, writer = await _connect(capped_edge, "public", "127.0.0.8")
        writer.write(request)
        try:
            answers.append(await read_until_closed(reader, SLACK))
        finally:
            writer.close()
    statuses = [parse_answer(a)[0] if a else "reset before the answer" for a in answers]
    assert all(s.startswith("HTTP/1.1 429") for s in statuses), statuses
