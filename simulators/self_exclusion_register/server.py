"""A stand-in for the national self-exclusion register (GAMSTOP-style), served over real
HTTP/1.1 on loopback so the compliance service's adapter is tested against a network peer.

The register answers `POST /v2/check` (form-encoded or JSON: firstName, lastName,
dateOfBirth as YYYY-MM-DD, email, postcode, mobile) for callers presenting the right
`X-API-Key`, with `{"exclusion": "Y"|"N"|"P", "requestId": uuid}` and the same id in the
`X-Unique-Id` header. A person matches a registry entry case-insensitively on
(lastName, dateOfBirth, postcode), postcode spaces ignored, or on email.

Test control, not part of the real register (unauthenticated: the server binds loopback
only):

- `POST /_sim/faults` `{"mode": ..., "delay_ms": N, "variant": ...}` changes how later
  checks are answered: `ok`; `slow` (answer after delay_ms); `timeout` (never answer: hold
  the connection until the client gives up); `error500`; `reset` (close without
  answering); `malformed` with variant `not_json` (default), `missing_fields` (no
  exclusion), `bad_exclusion` (an exclusion value outside Y/N/P) or `truncated` (body
  shorter than its Content-Length). `GET /_sim/faults` shows the current setting.
- `POST /_sim/persons` adds a registry entry (same shape as the registry file).
- `GET /_sim/requests` lists the checks answered so far: requestId, exclusion, and
  whether the key was accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hmac
import json
import re
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

HOST = "127.0.0.1"
MAX_BODY = 64 * 1024
EXCLUSION_VALUES = ("Y", "N", "P")
FAULT_MODES = ("ok", "slow", "timeout", "error500", "reset", "malformed")
MALFORMED_VARIANTS = ("not_json", "missing_fields", "bad_exclusion", "truncated")
CHECK_FIELDS = ("firstName", "lastName", "dateOfBirth", "email", "postcode", "mobile")
# Fields a check must carry (non-empty); postcode and mobile may be blank.
REQUIRED_FIELDS = ("firstName", "lastName", "dateOfBirth", "email")
# When one query matches several entries, the strongest answer wins.
_STRENGTH = {"Y": 2, "P": 1, "N": 0}

_REASONS = {
    200: "OK",
    201: "Created",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Content Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
}
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _valid_date(value: str) -> bool:
    if not _DATE.fullmatch(value):
        return False
    try:
        datetime.date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _norm(value: str) -> str:
    return value.strip().casefold()


def _norm_postcode(value: str) -> str:
    return "".join(value.split()).casefold()


@dataclass(frozen=True)
class Person:
    last_name: str
    date_of_birth: str
    postcode: str
    email: str
    exclusion: str

    @classmethod
    def from_json(cls, raw: Any) -> Person:
        if not isinstance(raw, dict):
            raise ValueError("a person must be a JSON object")
        values = {k: raw.get(k, "") for k in (*CHECK_FIELDS, "exclusion")}
        if not all(isinstance(v, str) for v in values.values()):
            raise ValueError("person fields must be strings")
        if values["exclusion"] not in EXCLUSION_VALUES:
            raise ValueError(f"exclusion must be one of {EXCLUSION_VALUES}")
        if values["dateOfBirth"] and not _valid_date(values["dateOfBirth"]):
            raise ValueError("dateOfBirth must be YYYY-MM-DD")
        by_identity = values["lastName"] and values["dateOfBirth"] and values["postcode"]
        if not (by_identity or values["email"]):
            raise ValueError("a person needs lastName+dateOfBirth+postcode or an email")
        return cls(
            last_name=_norm(values["lastName"]),
            date_of_birth=values["dateOfBirth"],
            postcode=_norm_postcode(values["postcode"]),
            email=_norm(values["email"]),
            exclusion=values["exclusion"],
        )

    def matches(self, query: dict[str, str]) -> bool:
        if self.email and self.email == _norm(query["email"]):
            return True
        postcode = _norm_postcode(query["postcode"])
        return bool(
            self.last_name
            and postcode
            and self.last_name == _norm(query["lastName"])
            and self.date_of_birth == query["dateOfBirth"]
            and self.postcode == postcode
        )


class Registry:
    def __init__(self, persons: list[Person] | None = None) -> None:
        self._persons = list(persons or [])

    @classmethod
    def load(cls, path: Path) -> Registry:
        raw = json.loads(path.read_text())
        if isinstance(raw, dict):
            raw = raw.get("persons")
        if not isinstance(raw, list):
            raise ValueError(f"{path}: expected a JSON list of persons")
        return cls([Person.from_json(p) for p in raw])

    def add(self, person: Person) -> None:
        self._persons.append(person)

    def __len__(self) -> int:
        return len(self._persons)

    def lookup(self, query: dict[str, str]) -> str:
        found = [p.exclusion for p in self._persons if p.matches(query)]
        return max(found, key=_STRENGTH.__getitem__, default="N")


@dataclass
class Faults:
    mode: str = "ok"
    delay_ms: int = 0
    variant: str = "not_json"

    @classmethod
    def from_json(cls, raw: Any) -> Faults:
        if not isinstance(raw, dict):
            raise ValueError("faults must be a JSON object")
        mode = raw.get("mode", "ok")
        delay_ms = raw.get("delay_ms", 0)
        variant = raw.get("variant", "not_json")
        if mode not in FAULT_MODES:
            raise ValueError(f"mode must be one of {FAULT_MODES}")
        if not isinstance(delay_ms, int) or isinstance(delay_ms, bool) or delay_ms < 0:
            raise ValueError("delay_ms must be a non-negative integer")
        if variant not in MALFORMED_VARIANTS:
            raise ValueError(f"variant must be one of {MALFORMED_VARIANTS}")
        return cls(mode, delay_ms, variant)


@dataclass
class Request:
    method: str
    path: str
    version: str
    headers: dict[str, str]
    body: bytes

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return connection == "keep-alive"
        return connection != "close"


@dataclass
class Response:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    # Declared length when it must differ from the body (the truncated-body fault).
    content_length: int | None = None

    @classmethod
    def json(cls, status: int, payload: Any, **headers: str) -> Response:
        return cls(
            status,
            json.dumps(payload).encode(),
            {"Content-Type": "application/json", **headers},
        )


class _Hang(Exception):
    """Answer nothing: hold the connection until the client goes away."""


class _Reset(Exception):
    """Close the connection without an answer."""


class RegisterSimulator:
    def __init__(self, api_key: str, registry: Registry) -> None:
        if not api_key:
            raise ValueError("the API key must not be empty")
        self._api_key = api_key.encode()
        self.registry = registry
        self.faults = Faults()
        self.requests: list[dict[str, Any]] = []
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self, port: int = 0) -> int:
        self._server = await asyncio.start_server(self._connection, HOST, port)
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while True:
                try:
                    request = await _read_request(reader)
                except BadRequest as exc:
                    _write(writer, Response.json(exc.status, {"error": exc.message}), False)
                    await writer.drain()
                    return
                if request is None:
                    return
                try:
                    response = await self._dispatch(request)
                except _Hang:
                    while await reader.read(65536):
                        pass
                    return
                except _Reset:
                    writer.transport.abort()
                    return
                keep_alive = request.keep_alive and response.content_length is None
                _write(writer, response, keep_alive)
                await writer.drain()
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # Only close() cancels a connection: end it quietly (the stream machinery
            # would log a cancelled handler as an error).
            pass
        finally:
            self._connections.discard(task)
            writer.close()

    async def _dispatch(self, request: Request) -> Response:
        routes = {
            "/v2/check": ("POST", self._check),
            "/_sim/faults": ("GET POST", self._faults),
            "/_sim/persons": ("POST", self._persons),
            "/_sim/requests": ("GET", self._requests),
        }
        path = request.path.split("?", 1)[0]
        if path not in routes:
            return Response.json(404, {"error": "not found"})
        methods, handler = routes[path]
        if request.method not in methods.split():
            return Response.json(
                405, {"error": "method not allowed"}, Allow=methods.replace(" ", ", ")
            )
        try:
            return await handler(request)
        except BadRequest as exc:
            return Response.json(exc.status, {"error": exc.message})

    async def _check(self, request: Request) -> Response:
        key = request.headers.get("x-api-key", "").encode()
        if not hmac.compare_digest(key, self._api_key):
            self.requests.append({"requestId": None, "exclusion": None, "authorised": False})
            return Response.json(403, {"error": "invalid API key"})
        query = _check_fields(request)
        faults = self.faults
        if faults.mode == "timeout":
            raise _Hang
        if faults.mode == "reset":
            raise _Reset
        if faults.mode == "slow":
            await asyncio.sleep(faults.delay_ms / 1000)
        request_id = str(uuid.uuid4())
        exclusion = self.registry.lookup(query)
        self.requests.append({"requestId": request_id, "exclusion": exclusion, "authorised": True})
        if faults.mode == "error500":
            return Response.json(500, {"error": "internal error"}, **{"X-Unique-Id": request_id})
        if faults.mode == "malformed":
            return _malformed(faults.variant, request_id)
        return Response.json(
            200, {"exclusion": exclusion, "requestId": request_id}, **{"X-Unique-Id": request_id}
        )

    async def _faults(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                self.faults = Faults.from_json(_json_body(request))
            except ValueError as exc:
                raise BadRequest(400, str(exc)) from None
        return Response.json(200, asdict(self.faults))

    async def _persons(self, request: Request) -> Response:
        try:
            self.registry.add(Person.from_json(_json_body(request)))
        except ValueError as exc:
            raise BadRequest(400, str(exc)) from None
        return Response.json(201, {"persons": len(self.registry)})

    async def _requests(self, request: Request) -> Response:
        return Response.json(200, self.requests)


def _malformed(variant: str, request_id: str) -> Response:
    headers = {"X-Unique-Id": request_id}
    if variant == "missing_fields":
        return Response.json(200, {"requestId": request_id}, **headers)
    if variant == "bad_exclusion":
        return Response.json(200, {"exclusion": "Q", "requestId": request_id}, **headers)
    if variant == "truncated":
        body = json.dumps({"exclusion": "N", "requestId": request_id}).encode()
        return Response(
            200,
            body[: len(body) // 2],
            {"Content-Type": "application/json", **headers},
            content_length=len(body),
        )
    return Response(
        200,
        b"<html><body>Service temporarily unavailable</body></html>",
        {"Content-Type": "text/html", **headers},
    )


def _json_body(request: Request) -> Any:
    try:
        return json.loads(request.body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest(400, "body is not JSON") from None


def _check_fields(request: Request) -> dict[str, str]:
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    values: dict[str, Any]
    if content_type == "application/json":
        raw = _json_body(request)
        if not isinstance(raw, dict):
            raise BadRequest(400, "body must be a JSON object")
        values = raw
    elif content_type == "application/x-www-form-urlencoded":
        try:
            form = parse_qs(request.body.decode(), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise BadRequest(400, "body is not UTF-8") from None
        values = {k: v[0] for k, v in form.items()}
    else:
        raise BadRequest(400, "Content-Type must be form-encoded or JSON")
    query = {name: values.get(name, "") for name in CHECK_FIELDS}
    if not all(isinstance(v, str) for v in query.values()):
        raise BadRequest(400, "fields must be strings")
    missing = [name for name in REQUIRED_FIELDS if not query[name].strip()]
    if missing:
        raise BadRequest(400, f"missing fields: {', '.join(missing)}")
    if not _valid_date(query["dateOfBirth"]):
        raise BadRequest(400, "dateOfBirth must be YYYY-MM-DD")
    return query


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    """One request off the connection; None when the client closed it between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise BadRequest(400, "incomplete request head") from None
    except asyncio.LimitOverrunError:
        raise BadRequest(400, "request head too large") from None
    try:
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise BadRequest(400, "bad request line") from None
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise BadRequest(400, "unsupported HTTP version")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest(400, "bad header line")
        headers[name.lower()] = value.strip()
    if "transfer-encoding" in headers:
        raise BadRequest(501, "chunked requests are not supported")
    length_header = headers.get("content-length", "0" if method in ("GET", "HEAD") else "")
    if not length_header:
        raise BadRequest(411, "Content-Length required")
    if not length_header.isdigit():
        raise BadRequest(400, "bad Content-Length")
    length = int(length_header)
    if length > MAX_BODY:
        raise BadRequest(413, "body too large")
    body = await reader.readexactly(length)
    return Request(method, target, version, headers, body)


def _write(writer: asyncio.StreamWriter, response: Response, keep_alive: bool) -> None:
    length = response.content_length if response.content_length is not None else len(response.body)
    headers = {
        **response.headers,
        "Content-Length": str(length),
        "Connection": "keep-alive" if keep_alive else "close",
    }
    head = f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Unknown')}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    writer.write(head.encode("latin-1") + b"\r\n" + response.body)


def read_api_key(path: Path) -> str:
    key = path.read_text().strip()
    if not key:
        raise ValueError(f"{path}: empty API key file")
    return key


async def serve(port: int, api_key_file: Path, registry_file: Path) -> None:
    """Listen until cancelled, announcing the port as one JSON line on stdout."""
    simulator = RegisterSimulator(read_api_key(api_key_file), Registry.load(registry_file))
    bound = await simulator.start(port)
    print(json.dumps({"event": "listening", "port": bound}), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        with contextlib.suppress(Exception):
            await simulator.close()
