"""The edge's HTTP/1.1 connections: uvicorn's httptools protocol with the bounds it lacks, so
that a client cannot hold a connection by sending slowly (slowloris), grow a request head
without end, nor hold more connections than a listener allows it.

uvicorn bounds nothing before a request's head is whole: a connection that sends nothing stays
open for good (its keep-alive timer is armed only after a response), and any byte, even a lone
CRLF or one byte of a head, cancels that timer. Here one timer per connection covers the time
no request is under way (`idle_timeout_seconds`: the connection is closed; nothing was asked,
so nothing is answered; a trusted proxy's connection has its own, longer
`proxy_idle_timeout_seconds`) and the time from a request's first byte until its head is
whole (`header_timeout_seconds`: 408 HEADER_TIMEOUT, then closed). Nor does httptools bound a
head's size (it buffers a header whatever its length: 160 MB in 5 s from one connection):
past `max_head_bytes`, 431 HEAD_TOO_LARGE, then closed. The body has its own bounds in the app
(400 REQUEST_TOO_LARGE, 408 BODY_TIMEOUT), so a request is bounded from its first byte to its
answer.

A request that is not well-formed HTTP/1.1 (bad framing or header syntax, no Host header or
several, a transfer coding other than chunked) gets the edge's JSON error like any refusal,
not uvicorn's plain text, and the connection is closed.

Each listener also counts the connections it holds (`ConnectionBudget`): past its
`max_connections`, or past `max_connections_per_address` from one client address, a new
connection is answered at once (503 or 429 TOO_MANY_CONNECTIONS, with Retry-After) and closed
without a request being read. Every connection is a file descriptor of the one edge process,
so the listeners' totals together must fit its open-file limit (`ensure_open_files`, at
start): a flood of connections on the public listener then leaves the admin and webhook
listeners what they are owed.
"""

from __future__ import annotations

import asyncio
import collections
import resource
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from edge.errors import EdgeError
from edge.netrules import SourceRules
from services.runtime.call import address_scope
from services.runtime.config import ConfigError
from services.runtime.logs import get_logger

log = get_logger()


@dataclass(frozen=True)
class HeadBounds:
    """One listener's bounds on its connections' idle time and request heads."""

    listener: str
    header_seconds: float
    idle_seconds: float
    # Idle bound of a trusted proxy's connection (a load balancer's): longer than the
    # proxy's own, or the edge may close a connection just as the proxy sends a request on
    # it, and the proxy answers its client 502.
    proxy_idle_seconds: float
    # A head larger than this is refused (431 HEAD_TOO_LARGE).
    max_head_bytes: int
    # One "request finished" line for each refusal here, as for any answered request.
    access_log: bool = True


# How long a connection answered mid-request is read (and what is read dropped) before it is
# closed, so that the answer is not lost to a reset (see BoundedHeadProtocol._answer_and_close).
LINGER_SECONDS = 2.0

# Descriptors the edge holds besides its listeners' connections: the listening sockets, the
# upstream channels, the Redis pool, logs, the interpreter's own files.
RESERVED_FILES = 256


def ensure_open_files(max_connections: Sequence[int]) -> int:
    """Make sure the process may hold every listener's `max_connections` at once (plus
    RESERVED_FILES): raise the soft open-file limit up to the hard one if need be, or refuse
    to start, naming the numbers. Returns the soft limit in force."""
    needed = sum(max_connections) + RESERVED_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return soft
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise ConfigError(
            f"edge.listeners: max_connections sum to {sum(max_connections)}, which with"
            f" {RESERVED_FILES} other files needs {needed} open files; this process may open"
            f" {hard} (ulimit -n): lower max_connections or raise the limit"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return needed


@dataclass
class ConnectionBudget:
    """The connections one listener holds: in all, and per client address (an IPv6 client's
    /64, all of which it controls). A trusted proxy's connections (a load balancer's, each
    carrying many clients) count only to the total."""

    max_connections: int
    max_per_address: int
    rules: SourceRules
    open: int = 0
    by_address: collections.Counter[str] = field(default_factory=collections.Counter)

    def admit(self, peer: str) -> tuple[str | None, EdgeError | None]:
        """Count a new connection from `peer`: the key it is counted under (None: only to
        the total), or why it is refused (then nothing is counted)."""
        if self.open >= self.max_connections:
            return None, EdgeError(
                503,
                "UNAVAILABLE",
                f"this listener holds its limit of {self.max_connections} connections",
                "TOO_MANY_CONNECTIONS",
                headers={"retry-after": "1"},
            )
        key = None
        if not self.rules.through_trusted_proxy(peer):
            key = address_scope(peer)
            if self.by_address[key] >= self.max_per_address:
                return None, EdgeError(
                    429,
                    "RESOURCE_EXHAUSTED",
                    f"this listener holds its limit of {self.max_per_address} connections"
                    " from one address",
                    "TOO_MANY_CONNECTIONS",
                    headers={"retry-after": "1"},
                )
            self.by_address[key] += 1
        self.open += 1
        return key, None

    def release(self, key: str | None) -> None:
        self.open -= 1
        if key is not None:
            self.by_address[key] -= 1
            if not self.by_address[key]:
                del self.by_address[key]


class BoundedHeadProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with `bounds` on how long a connection may wait for a
    request head and `budget` on how many connections the listener holds (see the module's
    docstring)."""

    bounds: ClassVar[HeadBounds]
    budget: ClassVar[ConnectionBudget]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        # loop.time() of the first byte of a request whose head is not whole yet, and the
        # bytes read of it so far.
        self._head_began: float | None = None
        self._head_bytes = 0
        # Counted in the listener's budget, under this address key (None: the total only).
        self._counted = False
        self._address_key: str | None = None
        self._idle_seconds = self.bounds.idle_seconds
        # Answered and closing: reading only to drop (see `_answer_and_close`).
        self._lingering = False
        # Why the request whose head just ended is refused (see `_framing_refusal`).
        self._refusal: EdgeError | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        key, refusal = self.budget.admit(self.client[0] if self.client else "")
        if refusal is not None:
            self._answer_and_close(refusal, self.loop.time(), linger=False)
            return
        self._counted, self._address_key = True, key
        # A connection counted under no address is a trusted proxy's.
        self._idle_seconds = (
            self.bounds.proxy_idle_seconds if key is None else self.bounds.idle_seconds
        )
        self._arm(self.loop.time() + self._idle_seconds, self._idle_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._counted:
            self.budget.release(self._address_key)
            self._counted = False
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # answered and closing: what the client still sends is dropped
        super().data_received(data)
        began = self._head_began
        if began is None or self._lingering or self.transport.is_closing():
            return
        # The head is still incomplete after this read: all of it was head (but for a
        # pipelined request's tail before it). httptools buffers a head whatever its size,
        # so one still growing is counted here and refused past the bound, at most one read
        # over it; one that came whole is measured in on_headers_complete.
        self._head_bytes += len(data)
        if self._head_bytes > self.bounds.max_head_bytes:
            self._answer_and_close(self._head_too_large(), began)
            return
        # Armed here, not when the head begins: a head that comes whole in one read (nearly
        # every one) costs no timer at all.
        if self._timer is None:
            self._arm(began + self.bounds.header_seconds, self._head_timed_out)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # The idle bound ends at a request's first byte (not at any byte: leading CRLFs, or
        # the unread rest of an answered request's body, do not keep a connection open).
        self._disarm()
        self._head_began = self.loop.time()
        self._head_bytes = 0

    def on_headers_complete(self) -> None:
        self._head_began = None
        self._disarm()
        # A head that came whole within reads was not counted as it grew: its size here.
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.bounds.max_head_bytes:
            self._refusal = self._head_too_large()
        else:
            self._refusal = _framing_refusal(self.parser.get_http_version(), self.headers)
        if self._refusal is not None:
            # httptools turns this into a parser error: uvicorn then answers through
            # send_400_response (below) and reads nothing more of the connection.
            raise ValueError(self._refusal.message)
        super().on_headers_complete()

    def _head_too_large(self) -> EdgeError:
        return EdgeError(
            431,
            "INVALID_ARGUMENT",
            f"the request head is larger than {self.bounds.max_head_bytes} bytes",
            "HEAD_TOO_LARGE",
        )

    def send_400_response(self, msg: str) -> None:
        """A request uvicorn's parser (or `_framing_refusal`) found malformed: the edge's JSON
        error, with a request id and an access-log line, not uvicorn's plain text."""
        error = self._refusal or EdgeError(
            400, "INVALID_ARGUMENT", "the request is not well-formed HTTP/1.1", "MALFORMED_REQUEST"
        )
        self._answer_and_close(error, self._head_began or self.loop.time())

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.timeout_keep_alive_task is not None:
            # uvicorn went idle and armed its keep-alive timer, which any byte cancels: the
            # idle bound instead (unless the next head has begun: its own bound runs).
            self._unset_keepalive_if_required()
            if self._head_began is None:
                self._arm(self.loop.time() + self._idle_seconds, self._idle_timed_out)

    def _arm(self, when: float, callback: Callable[[], None]) -> None:
        self._disarm()
        self._timer = self.loop.call_at(when, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _idle_timed_out(self) -> None:
        self._timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def _head_timed_out(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # The slow head is pipelined behind a request still being answered: a 408 cannot
            # go out before that answer, so the connection closes after it instead.
            self.cycle.keep_alive = False
            return
        error = EdgeError(
            408,
            "DEADLINE_EXCEEDED",
            f"the request head did not arrive within {self.bounds.header_seconds:g} seconds",
            "HEADER_TIMEOUT",
        )
        self._answer_and_close(error, self._head_began or self.loop.time())

    def _answer_and_close(self, error: EdgeError, since: float, *, linger: bool = True) -> None:
        """Answer `error` with no request read (what comes after must not be read as one),
        close, and log it as any answered request is.

        A client cut off mid-request is still sending: closed at once with its bytes unread,
        the connection would be reset, and a reset can reach the client before it reads the
        answer (it then sees only "connection reset"). So, lingering: the answer goes out
        with a FIN (write_eof), what the client still sends is read and dropped, and the
        connection is closed when the client closes it or after LINGER_SECONDS, whichever
        comes first. Not for a connection refused on arrival (`linger=False`): it was never
        counted in the listener's budget, so it must not stay open at all."""
        request_id = uuid.uuid4().hex
        body = error.body(request_id)
        headers = [
            *self.server_state.default_headers,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id.encode()),
            (b"cache-control", b"no-store"),
            *((k.encode(), v.encode()) for k, v in error.headers.items()),
            (b"connection", b"close"),
        ]
        self.transport.write(
            b"".join(
                [STATUS_LINE[error.status], *(n + b": " + v + b"\r\n" for n, v in headers), b"\r\n"]
            )
            + body
        )
        if linger and self.transport.can_write_eof():
            self._lingering = True
            self.transport.write_eof()
            self._arm(self.loop.time() + LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()
        if self.bounds.access_log:
            log.info(
                "request finished",
                listener=self.bounds.listener,
                method="",
                path="",
                route="",
                status=error.status,
                reason=error.reason,
                duration_ms=round((self.loop.time() - since) * 1000, 3),
                request_id=request_id,
                client=self.client[0] if self.client else "",
            )


def _framing_refusal(http_version: str, headers: list[tuple[bytes, bytes]]) -> EdgeError | None:
    """What the parser lets through and HTTP/1.1 (RFC 9112) does not: an HTTP/1.1 request
    with no Host header, any request with several (a proxy in front may route by one and
    the edge see another), and a body in a transfer coding the edge cannot decode (it would
    read gzip as JSON). Header names come lower-cased."""
    hosts = sum(1 for name, _ in headers if name == b"host")
    if hosts > 1 or (hosts == 0 and http_version == "1.1"):
        return EdgeError(
            400,
            "INVALID_ARGUMENT",
            "an HTTP/1.1 request has exactly one Host header",
            "MALFORMED_REQUEST",
        )
    codings = [value for name, value in headers if name == b"transfer-encoding"]
    if codings and [c.strip().lower() for c in codings] != [b"chunked"]:
        return EdgeError(
            501,
            "UNIMPLEMENTED",
            "the edge accepts request bodies with no transfer coding or chunked alone",
            "UNSUPPORTED_TRANSFER_CODING",
        )
    return None


def bounded_protocol(bounds: HeadBounds, budget: ConnectionBudget) -> type[BoundedHeadProtocol]:
    """The protocol class of one listener (uvicorn makes one instance per connection)."""
    listener_bounds, listener_budget = bounds, budget

    class ListenerProtocol(BoundedHeadProtocol):
        bounds = listener_bounds
        budget = listener_budget

    return ListenerProtocol
