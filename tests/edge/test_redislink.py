"""The edge's Redis connection (edge.redislink): replies matched to requests in order against
the real Redis, errors as Redis gives them, and what happens to a connection that is lost,
refused, or stops answering (stand-in servers on loopback that misbehave on purpose)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from edge.redislink import RedisLink, ReplyError, encode, parse
from services.runtime.config import ConfigError
from tests.support.tcp_proxy import TcpProxy

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
async def link() -> AsyncIterator[RedisLink]:
    connection = RedisLink(REDIS_URL)
    yield connection
    await connection.close()


def test_replies_are_parsed_whole_or_not_at_all() -> None:
    reply = b"*5\r\n:1\r\n:-7\r\n$3\r\nabc\r\n$-1\r\n*2\r\n+OK\r\n-ERR nested\r\n"
    value, end = parse(reply)
    assert end == len(reply)
    assert value[:4] == [1, -7, b"abc", None]  # type: ignore[index]
    assert value[4][0] == b"OK"  # type: ignore[index]
    assert isinstance(value[4][1], ReplyError)  # type: ignore[index]
    for cut in range(1, len(reply)):  # a reply split anywhere by TCP waits for the rest
        with pytest.raises(Exception) as incomplete:
            parse(reply[:cut])
        assert type(incomplete.value).__name__ == "_Incomplete"
    error, _ = parse(b"-NOSCRIPT No matching script. Please use EVAL.\r\n")
    assert isinstance(error, ReplyError) and error.code == "NOSCRIPT"
    assert encode(("GET", b"k", 12)) == b"*3\r\n$3\r\nGET\r\n$1\r\nk\r\n$2\r\n12\r\n"


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:6379", "redis://127.0.0.1:6379/zero", "redis://127.0.0.1:port/0"]
)
def test_a_url_it_cannot_use_is_refused_at_start(url: str) -> None:
    with pytest.raises(ConfigError):
        RedisLink(url)


async def test_requests_made_together_run_in_the_order_made(link: RedisLink) -> None:
    key = f"test-redislink:{uuid.uuid4().hex}"
    try:
        replies = await asyncio.gather(*(link.call("INCR", key) for _ in range(200)))
        assert replies == list(range(1, 201))
        assert await link.call("PING") == b"PONG"
        assert await link.call("GET", key) == b"200"
        assert await link.call("GET", f"{key}:absent") is None
    finally:
        await link.call("DEL", key)


async def test_an_error_reply_fails_its_request_alone(link: RedisLink) -> None:
    results = await asyncio.gather(
        link.call("PING"),
        link.call("EVALSHA", "0" * 40, 0),
        link.call("PING"),
        return_exceptions=True,
    )
    assert results[0] == results[2] == b"PONG"
    assert isinstance(results[1], ReplyError) and results[1].code == "NOSCRIPT"


async def test_a_refused_set_up_is_a_connection_error() -> None:
    # This Redis has no password: AUTH is refused, and so is the connection.
    link = RedisLink(REDIS_URL, password="not-the-password")
    with pytest.raises(ConnectionError, match="set-up"):
        await link.call("PING")
    await link.close()


async def test_a_lost_connection_fails_what_waits_on_it_and_the_next_request_reconnects() -> None:
    proxy = TcpProxy("127.0.0.1", 6379)
    proxy.start()
    link = RedisLink(f"redis://127.0.0.1:{proxy.port}/0", connect_timeout=0.2)
    try:
        assert await link.call("PING") == b"PONG"
        waiting = asyncio.ensure_future(link.call("BLPOP", f"test:{uuid.uuid4().hex}", 5))
        await asyncio.sleep(0.1)
        proxy.cut()
        with pytest.raises(ConnectionError):
            await waiting
        with pytest.raises(ConnectionError):  # refused while the proxy is down
            await link.call("PING")
        proxy.start()
        assert await link.call("PING") == b"PONG"
    finally:
        await link.close()
        proxy.close()


Answer = Callable[[int, int], Awaitable[bytes | None]]


async def _stand_in(answer: Answer) -> tuple[asyncio.Server, list[int]]:
    """A server speaking just enough RESP: the n-th command (from 1) on its c-th connection
    (from 1) is answered with what `answer(c, n)` returns, or never (None). Returns it and
    the list of the connections it accepted."""
    connections: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(len(connections) + 1)
        connection, n = len(connections), 0
        try:
            while True:
                head = await reader.readline()  # *<count>
                if not head:
                    return
                for _ in range(int(head[1:]) * 2):  # $<len> and the argument, per argument
                    await reader.readline()
                n += 1
                reply = await answer(connection, n)
                if reply is not None:
                    writer.write(reply)
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, connections


async def test_a_reply_given_up_on_is_dropped_and_the_next_gets_its_own() -> None:
    async def slow_first(connection: int, n: int) -> bytes:
        if n == 1:
            await asyncio.sleep(0.3)
        return b":%d\r\n" % n

    server, _ = await _stand_in(slow_first)
    port = server.sockets[0].getsockname()[1]
    link = RedisLink(f"redis://127.0.0.1:{port}/0")
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(link.call("INCR", "a"), 0.05)
        assert await link.call("INCR", "a") == 2  # not the first command's late reply
    finally:
        await link.close()
        server.close()


async def test_a_connection_that_stopped_answering_is_replaced() -> None:
    # The first connection never answers (a Redis that hung, or vanished without closing
    # it); the second does.
    async def hung_first(connection: int, n: int) -> bytes | None:
        return None if connection == 1 else b"+PONG\r\n"

    server, connections = await _stand_in(hung_first)
    port = server.sockets[0].getsockname()[1]
    link = RedisLink(f"redis://127.0.0.1:{port}/0", stale_after=0.2)
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(link.call("PING"), 0.05)
        with pytest.raises(TimeoutError):  # still waiting on the first: the same connection
            await asyncio.wait_for(link.call("PING"), 0.05)
        assert connections == [1]
        await asyncio.sleep(0.3)
        # The oldest request has waited past stale_after: the next one reconnects.
        assert await asyncio.wait_for(link.call("PING"), 5) == b"PONG"
        assert connections == [1, 2]
    finally:
        await link.close()
        server.close()
