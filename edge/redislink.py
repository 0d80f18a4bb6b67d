"""The edge's Redis connection: one connection per process, every request written on it as
it comes (the writes of one loop turn in one send) and the replies matched to the requests
in order, as Redis answers them (RESP2).

Why not redis-py's asyncio client here: per command it takes a connection from its pool and
goes through its lock and retry wrappers and a StreamWriter: 122-127 us of client CPU per
EVALSHA round trip against 37-45 us for this connection (sequential calls, 2-core dev
machine at ~120 ns per `sum((1,2,3))`). And with a pool, two checks the edge counted in one
order can run in Redis in the other, on two connections; on one connection Redis runs them
in the order they were sent, which the edge's reads-ahead gate relies on (edge/app.py).

Failures: an error reply raises ReplyError (NOSCRIPT recognisable by its code); a refused,
lost or closed connection raises ConnectionError (the builtin) in every request waiting on
it, and the next request connects again. Time limits are the caller's: a request given up
(cancelled) leaves its reply to be read and dropped when it comes, keeping the order. A
connection whose oldest request has waited `stale_after` seconds without a reply (a stalled
or vanished Redis that never closed it) is dropped by the next request, which reconnects.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import ssl
import time
from typing import Any
from urllib.parse import unquote, urlsplit

from services.runtime.config import ConfigError

Value = bytes | int | list[Any] | None


class ReplyError(Exception):
    """An error reply of Redis ("NOSCRIPT No matching script", "OOM ...", "LOADING ...")."""

    @property
    def code(self) -> str:
        return str(self).split(" ", 1)[0]


class _Incomplete(Exception):
    """The buffer holds only part of a reply."""


def encode(args: tuple[bytes | str | int, ...]) -> bytes:
    """One command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def parse(buffer: bytes | bytearray, start: int = 0) -> tuple[Value | ReplyError, int]:
    """The reply beginning at `start` and where it ends; _Incomplete when it has not all
    arrived. An error reply comes back as a ReplyError value (inside an array too)."""
    end = buffer.find(b"\r\n", start)
    if end < 0:
        raise _Incomplete
    kind, line = buffer[start : start + 1], bytes(buffer[start + 1 : end])
    after = end + 2
    if kind == b":":
        return int(line), after
    if kind == b"$":
        length = int(line)
        if length < 0:
            return None, after
        if len(buffer) < after + length + 2:
            raise _Incomplete
        return bytes(buffer[after : after + length]), after + length + 2
    if kind == b"*":
        count = int(line)
        if count < 0:
            return None, after
        items: list[Any] = []
        for _ in range(count):
            item, after = parse(buffer, after)
            items.append(item)
        return items, after
    if kind == b"+":
        return line, after
    if kind == b"-":
        return ReplyError(line.decode(errors="replace")), after
    raise ConnectionError(f"redis protocol: unexpected reply type {kind!r}")


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        # (reply, when sent), oldest first: Redis answers in this order.
        self.waiting: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self.buffer = bytearray()
        self.outgoing: list[bytes] = []
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, command: bytes) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        reply = loop.create_future()
        if not self.outgoing:
            loop.call_soon(self._flush)
        self.outgoing.append(command)
        self.waiting.append((reply, time.monotonic()))
        return reply

    def _flush(self) -> None:
        data, self.outgoing = b"".join(self.outgoing), []
        if not self.lost and self.transport is not None:
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        start = 0
        try:
            while start < len(self.buffer):
                value, start = parse(self.buffer, start)
                if not self.waiting:
                    raise ConnectionError("redis protocol: a reply nobody asked for")
                reply, _ = self.waiting.popleft()
                if reply.done():  # given up by its caller
                    continue
                if isinstance(value, ReplyError):
                    reply.set_exception(value)
                else:
                    reply.set_result(value)
        except _Incomplete:
            pass
        except (ConnectionError, ValueError) as exc:
            self.close(ConnectionError(f"redis protocol: {exc}"))
            return
        del self.buffer[:start]

    def connection_lost(self, exc: Exception | None) -> None:
        self.close(ConnectionError(f"redis connection lost: {exc!r}" if exc else "redis closed"))

    def close(self, error: ConnectionError) -> None:
        if self.lost:
            return
        self.lost = True
        while self.waiting:
            reply, _ = self.waiting.popleft()
            if not reply.done():
                reply.set_exception(error)
        if self.transport is not None:
            self.transport.abort()

    def stalled(self, stale_after: float) -> bool:
        return bool(self.waiting) and time.monotonic() - self.waiting[0][1] > stale_after


class RedisLink:
    """Requests to one Redis on one connection, opened on first use and again after a loss.
    `url`: redis://[user@]host[:port][/db] or rediss:// (TLS, the system's trust store);
    the password comes from its file, never the URL."""

    def __init__(
        self,
        url: str,
        password: str | None = None,
        *,
        connect_timeout: float = 1.0,
        stale_after: float = 2.0,
    ) -> None:
        parts = urlsplit(url)
        database = parts.path.strip("/") or "0"
        if parts.scheme not in ("redis", "rediss") or not database.isdigit():
            raise ConfigError(f"redis url must be redis[s]://[user@]host[:port][/db], not {url!r}")
        self._host = parts.hostname or "127.0.0.1"
        try:
            self._port = parts.port or 6379
        except ValueError:
            raise ConfigError(f"redis url has no valid port: {url!r}") from None
        self._user = unquote(parts.username) if parts.username else None
        self._db = int(database)
        self._tls = ssl.create_default_context() if parts.scheme == "rediss" else None
        self._password = password
        self._connect_timeout = connect_timeout
        self._stale_after = stale_after
        self._connection: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None

    async def call(self, *args: bytes | str | int) -> Any:
        """The reply to one command (bytes, int, list, None); ReplyError for an error
        reply, ConnectionError when Redis cannot be reached or the connection is lost."""
        connection = self._connection
        if connection is None or connection.lost or connection.stalled(self._stale_after):
            connection = await self._connected()
        return await connection.send(encode(args))

    async def close(self) -> None:
        if self._connection is not None:
            self._connection.close(ConnectionError("redis link closed"))
            self._connection = None

    async def _connected(self) -> _Connection:
        if self._connection is not None and not self._connection.lost:
            self._connection.close(ConnectionError("redis stopped answering; reconnecting"))
        self._connection = None
        if self._connecting is None:
            # One attempt shared by every request arriving meanwhile; shielded, so one of
            # them timing out does not abort it for the others.
            self._connecting = asyncio.ensure_future(self._connect())
            self._connecting.add_done_callback(self._connect_ended)
        return await asyncio.shield(self._connecting)

    def _connect_ended(self, attempt: asyncio.Future[_Connection]) -> None:
        self._connecting = None
        if attempt.cancelled():
            return
        if attempt.exception() is None:
            self._connection = attempt.result()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        connection: _Connection | None = None
        try:
            async with asyncio.timeout(self._connect_timeout):
                transport, connection = await loop.create_connection(
                    _Connection, self._host, self._port, ssl=self._tls
                )
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                if self._password is not None:
                    user = () if self._user is None else (self._user,)
                    await connection.send(encode(("AUTH", *user, self._password)))
                if self._db:
                    await connection.send(encode(("SELECT", self._db)))
            return connection
        except BaseException as exc:
            if connection is not None:
                connection.close(ConnectionError("redis connection set-up failed"))
            if isinstance(exc, TimeoutError):
                raise ConnectionError(
                    f"redis at {self._host}:{self._port} did not answer in time"
                ) from None
            if isinstance(exc, ReplyError):
                raise ConnectionError(f"redis refused the connection's set-up: {exc}") from None
            raise
