"""The edge's HTTP/1.1 connections: uvicorn's httptools protocol with the two bounds it lacks,
so that a client cannot hold a connection by sending slowly (slowloris).

uvicorn bounds nothing before a request's head is whole: a connection that sends nothing stays
open for good (its keep-alive timer is armed only after a response), and any byte, even a lone
CRLF or one byte of a head, cancels that timer. Here one timer per connection covers the time
no request is under way (`idle_timeout_seconds`: the connection is closed; nothing was asked,
so nothing is answered) and the time from a request's first byte until its head is whole
(`header_timeout_seconds`: 408 HEADER_TIMEOUT, then closed). The body has its own bound in the
app (408 BODY_TIMEOUT), so a request is bounded from its first byte to its answer.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from edge.errors import EdgeError
from services.runtime.logs import get_logger

log = get_logger()


@dataclass(frozen=True)
class HeadBounds:
    """One listener's bounds, in seconds."""

    listener: str
    header_seconds: float
    idle_seconds: float
    # One "request finished" line for a head that timed out, as for any answered request.
    access_log: bool = True


class BoundedHeadProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with `bounds` on how long a connection may wait for a
    request head (see the module's docstring)."""

    bounds: ClassVar[HeadBounds]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        # loop.time() of the first byte of a request whose head is not whole yet.
        self._head_began: float | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.loop.time() + self.bounds.idle_seconds, self._idle_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Armed here, not when the head begins: a head that comes whole in one read (nearly
        # every one) costs no timer at all.
        began = self._head_began
        if began is not None and self._timer is None and not self.transport.is_closing():
            self._arm(began + self.bounds.header_seconds, self._head_timed_out)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # The idle bound ends at a request's first byte (not at any byte: leading CRLFs, or
        # the unread rest of an answered request's body, do not keep a connection open).
        self._disarm()
        self._head_began = self.loop.time()

    def on_headers_complete(self) -> None:
        self._head_began = None
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.timeout_keep_alive_task is not None:
            # uvicorn went idle and armed its keep-alive timer, which any byte cancels: the
            # idle bound instead (unless the next head has begun: its own bound runs).
            self._unset_keepalive_if_required()
            if self._head_began is None:
                self._arm(self.loop.time() + self.bounds.idle_seconds, self._idle_timed_out)

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
        request_id = uuid.uuid4().hex
        error = EdgeError(
            408,
            "DEADLINE_EXCEEDED",
            f"the request head did not arrive within {self.bounds.header_seconds:g} seconds",
            "HEADER_TIMEOUT",
        )
        body = error.body(request_id)
        headers = [
            *self.server_state.default_headers,
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id.encode()),
            (b"cache-control", b"no-store"),
            # The rest of the head may still come: it must not be read as a request.
            (b"connection", b"close"),
        ]
        self.transport.write(
            b"".join([STATUS_LINE[408], *(n + b": " + v + b"\r\n" for n, v in headers), b"\r\n"])
            + body
        )
        self.transport.close()
        if self.bounds.access_log:
            waited = self.loop.time() - (self._head_began or self.loop.time())
            log.info(
                "request finished",
                listener=self.bounds.listener,
                method="",
                path="",
                route="",
                status=408,
                reason="HEADER_TIMEOUT",
                duration_ms=round(waited * 1000, 3),
                request_id=request_id,
                client=self.client[0] if self.client else "",
            )


def bounded_protocol(bounds: HeadBounds) -> type[BoundedHeadProtocol]:
    """The protocol class of one listener (uvicorn makes one instance per connection)."""
    listener_bounds = bounds

    class ListenerProtocol(BoundedHeadProtocol):
        bounds = listener_bounds

    return ListenerProtocol
