"""Adapter to the national self-exclusion register (GAMSTOP-style): asks whether a person is
excluded and never lets the answer be anything it cannot vouch for.

`SelfExclusionRegister.check` posts the person's details to `<base_url>/v2/check` with the
API key (read once from a secret file) and maps the register's `exclusion` value
(Y / N / P) to EXCLUDED / NOT_EXCLUDED / PREVIOUSLY_EXCLUDED, keeping the register's
request id for the verdict log. Everything else (unreachable, no answer within the hard
total timeout, a status other than 200, an answer that is not the documented JSON) comes
back as UNAVAILABLE with a detail naming the failure, never as an exception: the caller
denies on UNAVAILABLE (REGISTER_UNAVAILABLE), which is what makes registration fail
closed. Only the caller's own cancellation propagates.

Plain HTTP/1.1 over asyncio streams (TLS for https URLs), one connection per check. The
detail never carries the person's data or the API key.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import ssl
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlencode, urlsplit

from services.runtime.secrets import read_secret

RegisterStatus = Literal["EXCLUDED", "NOT_EXCLUDED", "PREVIOUSLY_EXCLUDED", "UNAVAILABLE"]

DEFAULT_TIMEOUT_SECONDS = 2.0
MAX_ANSWER_BYTES = 64 * 1024
_STATUSES: dict[str, RegisterStatus] = {
    "Y": "EXCLUDED",
    "N": "NOT_EXCLUDED",
    "P": "PREVIOUSLY_EXCLUDED",
}


@dataclass(frozen=True)
class RegisterAnswer:
    """The register's answer. `request_id` is the register's id for the check (its
    `requestId` / `X-Unique-Id`), or "" when none was obtained. `detail` says what went
    wrong for UNAVAILABLE, prefixed by its kind: "unreachable:", "timeout:", "http <code>:",
    "connection:", "malformed:"; "" otherwise."""

    status: RegisterStatus
    request_id: str
    detail: str = ""

    @property
    def available(self) -> bool:
        return self.status != "UNAVAILABLE"


class _Unavailable(Exception):
    def __init__(self, detail: str, request_id: str = "") -> None:
        super().__init__(detail)
        self.detail = detail
        self.request_id = request_id


@dataclass(frozen=True)
class _HttpAnswer:
    status: int
    headers: dict[str, str]
    body: bytes


class SelfExclusionRegister:
    """Client of the register at `base_url` (http:// or https://, optionally with a path
    prefix), authenticating with the key in `api_key_file` (mode 0600, see
    `services.runtime.secrets`). `timeout` bounds a whole check: connect, send, answer."""

    def __init__(
        self,
        base_url: str,
        api_key_file: str | os.PathLike[str],
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        url = urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"register URL must be http(s)://host[:port][/prefix]: {base_url!r}")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._host = url.hostname
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._ssl: ssl.SSLContext | None = None
        if url.scheme == "https":
            self._ssl = ssl_context or ssl.create_default_context()
        default_port = (url.scheme == "https" and self._port == 443) or self._port == 80
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._host_header = host if default_port else f"{host}:{self._port}"
        self._path = url.path.rstrip("/") + "/v2/check"
        self._timeout = timeout
        self._api_key = read_secret(api_key_file)
        if not self._api_key or not self._api_key.isprintable():
            raise ValueError("the register API key file must hold one printable line")

    async def check(
        self,
        *,
        given_name: str,
        family_name: str,
        birth_date: dt.date,
        email: str,
        postcode: str = "",
        mobile: str = "",
        timeout: float | None = None,
    ) -> RegisterAnswer:
        """Ask the register about one person. `timeout`, when given, shortens the configured
        one (e.g. to what is left of the caller's deadline); it never lengthens it."""
        form = {
            "firstName": given_name,
            "lastName": family_name,
            "dateOfBirth": birth_date.isoformat(),
            "email": email,
            "postcode": postcode,
            "mobile": mobile,
        }
        limit = self._timeout if timeout is None else max(0.0, min(timeout, self._timeout))
        try:
            async with asyncio.timeout(limit):
                answer = await self._post(urlencode(form).encode())
            return _interpret(answer)
        except TimeoutError:
            return RegisterAnswer("UNAVAILABLE", "", f"timeout: no answer within {limit:g} s")
        except _Unavailable as exc:
            return RegisterAnswer("UNAVAILABLE", exc.request_id, exc.detail)
        except Exception as exc:
            return RegisterAnswer("UNAVAILABLE", "", f"connection: {type(exc).__name__}")

    async def _post(self, body: bytes) -> _HttpAnswer:
        try:
            reader, writer = await asyncio.open_connection(
                self._host,
                self._port,
                ssl=self._ssl,
                server_hostname=self._host if self._ssl else None,
            )
        except (OSError, ssl.SSLError) as exc:
            raise _Unavailable(f"unreachable: {_describe(exc)}") from None
        try:
            head = (
                f"POST {self._path} HTTP/1.1\r\n"
                f"Host: {self._host_header}\r\n"
                f"X-API-Key: {self._api_key}\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n"
                f"Content-Length: {len(body)}\r\n"
                "Accept: application/json\r\n"
                "Connection: close\r\n"
                "User-Agent: casino-compliance\r\n"
                "\r\n"
            )
            writer.write(head.encode("latin-1") + body)
            await writer.drain()
            return await _read_answer(reader)
        except (OSError, ssl.SSLError) as exc:
            raise _Unavailable(f"connection: {_describe(exc)}") from None
        finally:
            # Abort rather than close: nothing more is owed to the peer, and a graceful TLS
            # close could wait on a peer that has stopped answering.
            writer.transport.abort()


def _describe(exc: BaseException) -> str:
    reason = getattr(exc, "strerror", None) or str(exc)
    return f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__


async def _read_answer(reader: asyncio.StreamReader) -> _HttpAnswer:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise _Unavailable("connection: closed by the register without an answer") from None
        raise _Unavailable("malformed: truncated HTTP head") from None
    except asyncio.LimitOverrunError:
        raise _Unavailable("malformed: HTTP head too large") from None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise _Unavailable("malformed: not an HTTP/1.x status line")
    status = int(parts[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    request_id = headers.get("x-unique-id", "")
    if status != 200:
        raise _Unavailable(f"http {status}: the register did not answer 200", request_id)
    try:
        body = await _read_body(reader, headers)
    except asyncio.IncompleteReadError:
        raise _Unavailable("malformed: truncated body", request_id) from None
    except (ValueError, asyncio.LimitOverrunError):
        raise _Unavailable("malformed: bad body framing", request_id) from None
    return _HttpAnswer(status, headers, body)


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                # Trailers (if any) end with an empty line.
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_ANSWER_BYTES:
                raise ValueError("answer too large")
            chunks.append(await reader.readexactly(size))
            if await reader.readexactly(2) != b"\r\n":
                raise ValueError("bad chunk end")
    length = headers.get("content-length")
    if length is not None:
        if not length.isdigit() or int(length) > MAX_ANSWER_BYTES:
            raise ValueError("bad Content-Length")
        return await reader.readexactly(int(length))
    body = b""
    while chunk := await reader.read(65536):
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            raise ValueError("answer too large")
    return body


def _interpret(answer: _HttpAnswer) -> RegisterAnswer:
    header_id = answer.headers.get("x-unique-id", "")
    try:
        payload = json.loads(answer.body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _Unavailable("malformed: body is not JSON", header_id) from None
    if not isinstance(payload, dict):
        raise _Unavailable("malformed: body is not a JSON object", header_id)
    exclusion = payload.get("exclusion")
    request_id = payload.get("requestId")
    if not isinstance(request_id, str) or not request_id:
        raise _Unavailable("malformed: no requestId", header_id)
    if header_id and header_id != request_id:
        raise _Unavailable("malformed: X-Unique-Id differs from requestId", header_id)
    if exclusion is None:
        raise _Unavailable("malformed: no exclusion value", request_id)
    if not isinstance(exclusion, str) or exclusion not in _STATUSES:
        raise _Unavailable(f"malformed: unknown exclusion value {exclusion!r:.20}", request_id)
    return RegisterAnswer(_STATUSES[exclusion], request_id, "")
