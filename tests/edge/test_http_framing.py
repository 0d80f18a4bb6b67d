"""Requests that are not well-formed HTTP/1.1 get the edge's JSON error (code, reason, request
id, as every other refusal) and the connection closed, since what follows them cannot be told
apart from a request: bad framing or header syntax, an HTTP/1.1 request with no Host header or
several, a body in a transfer coding the edge cannot decode (501), and a head past the
listener's size bound (431). Nothing reaches a service. Raw sockets against the running edge:
an HTTP client would refuse to send these."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest

from edge.process import EdgeProcess
from tests.support.raw_http import exchange, parse_answer, read_until_closed

SLACK = 5.0

MALFORMED = {
    "content-length and chunked": (
        b"POST /v1/ping HTTP/1.1\r\nHost: e\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /v1/ping HTTP/1.1\r\nHost: e\r\n\r\n"
    ),
    "two content-lengths": (
        b"POST /v1/ping HTTP/1.1\r\nHost: e\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello"
    ),
    "signed content-length": (
        b"POST /v1/ping HTTP/1.1\r\nHost: e\r\nContent-Length: +5\r\n\r\nhello"
    ),
    "space before the colon": (
        b"POST /v1/ping HTTP/1.1\r\nHost: e\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"
    ),
    "NUL in a header": b"GET /v1/ping HTTP/1.1\r\nHost: e\r\nX-Note: a\x00b\r\n\r\n",
    "no host": b"GET /v1/ping HTTP/1.1\r\n\r\n",
    "two hosts": b"GET /v1/ping HTTP/1.1\r\nHost: edge\r\nHost: elsewhere\r\n\r\n",
}


async def _answer(edge: EdgeProcess, request: bytes) -> tuple[int, dict[str, str], dict]:
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.ports["public"])
    try:
        writer.write(request)
        await writer.drain()
        answer = await read_until_closed(reader, SLACK)  # fails if the edge keeps it open
    finally:
        writer.close()
    status_line, headers, body = parse_answer(answer)
    return int(status_line.split()[1]), headers, json.loads(body)


@pytest.mark.parametrize("request_bytes", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_malformed_request_gets_a_json_400_and_the_connection_closed(
    edge: EdgeProcess, request_bytes: bytes
) -> None:
    status, headers, error = await _answer(edge, request_bytes)

    assert status == 400
    assert (error["code"], error["reason"]) == ("INVALID_ARGUMENT", "MALFORMED_REQUEST")
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert error["requestId"] == headers["x-request-id"]


@pytest.mark.parametrize("coding", [b"gzip, chunked", b"gzip", b"deflate"])
async def test_a_body_in_a_transfer_coding_the_edge_cannot_decode_gets_501(
    edge: EdgeProcess, coding: bytes
) -> None:
    request = b"POST /v1/ping HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: " + coding
    status, _, error = await _answer(edge, request + b"\r\n\r\n0\r\n\r\n")

    assert (status, error["code"], error["reason"]) == (
        501,
        "UNIMPLEMENTED",
        "UNSUPPORTED_TRANSFER_CODING",
    )


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /v1/ping HTTP/1.0\r\n\r\n",  # HTTP/1.0 needs no Host
        b"GET http://edge/v1/ping HTTP/1.1\r\nHost: edge\r\n\r\n",  # absolute form
        b"POST /v1/ping HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ],
    ids=["http/1.0 without host", "absolute form", "chunked"],
)
async def test_well_formed_requests_are_still_served(
    edge: EdgeProcess, request_bytes: bytes
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.ports["public"])
    try:
        writer.write(request_bytes)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), SLACK)
    finally:
        writer.close()
    status_line, _, _ = parse_answer(head)
    assert status_line.split()[1] != "400", status_line
    assert not status_line.startswith("HTTP/1.1 5"), status_line


async def _send_head_in_pieces(edge: EdgeProcess, head: bytes) -> bytes:
    """Write `head` 4 KiB at a time (the edge may close before the end), then read its
    answer to the close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.ports["public"])
    try:
        with contextlib.suppress(ConnectionError):
            for at in range(0, len(head), 4096):
                writer.write(head[at : at + 4096])
                await writer.drain()
        return await read_until_closed(reader, SLACK)
    finally:
        writer.close()


@pytest.mark.parametrize(
    "head",
    [
        b"GET /v1/ping HTTP/1.1\r\nHost: e\r\n" + b"X-Pad: " + b"a" * 1_000_000 + b"\r\n\r\n",
        b"GET /v1/ping HTTP/1.1\r\nHost: e\r\n"
        + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(100))
        + b"\r\n",
        b"GET /v1/ping?" + b"q" * 100_000 + b" HTTP/1.1\r\nHost: e\r\n\r\n",
    ],
    ids=["one huge header", "many headers", "huge request line"],
)
async def test_a_head_past_the_bound_gets_431_and_the_connection_closed(
    edge: EdgeProcess, head: bytes
) -> None:
    # httptools buffers a head whatever its size: unbounded, one connection could send
    # hundreds of megabytes within the head's time bound and the edge would hold them.
    answer = await _send_head_in_pieces(edge, head)

    status_line, headers, body = parse_answer(answer)
    error = json.loads(body)
    assert status_line.startswith("HTTP/1.1 431"), status_line
    assert (error["code"], error["reason"]) == ("INVALID_ARGUMENT", "HEAD_TOO_LARGE")
    assert headers["connection"] == "close"


async def test_a_head_within_the_bound_is_served(edge: EdgeProcess) -> None:
    pad = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1000) for i in range(24))  # ~24 KiB
    reader, writer = await asyncio.open_connection("127.0.0.1", edge.ports["public"])
    try:
        status, _, _ = await exchange(
            reader, writer, b"GET /v1/ping HTTP/1.1\r\nHost: e\r\n" + pad + b"\r\n", SLACK
        )
    finally:
        writer.close()
    assert status.startswith("HTTP/1.1 200"), status
