"""HTTP/1.1 over raw sockets, for tests of what the edge does to connections themselves
(slow heads, idle connections, connection limits), where an HTTP client library would hide
the bytes, the timing and the close."""

from __future__ import annotations

import asyncio
import contextlib


async def read_until_closed(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the edge sends until it closes the connection (a reset after its answer
    counts as closed: a client still writing may get one), failing after `timeout` s."""
    received = bytearray()

    async def drain() -> None:
        with contextlib.suppress(ConnectionResetError):
            while chunk := await reader.read(65536):
                received.extend(chunk)

    await asyncio.wait_for(drain(), timeout)
    return bytes(received)


def parse_answer(answer: bytes) -> tuple[str, dict[str, str], bytes]:
    """(status line, headers by lower-case name, body) of one whole answer."""
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return status_line, headers, body


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes, timeout: float
) -> tuple[str, dict[str, str], bytes]:
    """One request and its answer on a kept-alive connection."""
    writer.write(request)
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    status_line, headers, _ = parse_answer(head)
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), timeout)
    return status_line, headers, body
