"""The edge: player HTTP/JSON in, gRPC to the services out, on three listeners.

One process serves three ASGI apps (Starlette request/response primitives on uvicorn), each
on its own port with its own rules and its own in-flight budget: `public` (player traffic),
`webhooks` (PSP callbacks: PAYMENT_WEBHOOK operations only) and `admin` (ADMIN operations
only, from configured networks only). A request that finds its listener's budget spent is
refused at once with 503, so a flood on one listener never takes the others' capacity.

Per request: its head within the listener's bound (edge.connections: 408 when it does not
come), a request id (a valid X-Request-Id is kept, otherwise one is minted; echoed in the
response, the access log and the upstream call metadata), a span (trace starts here), the
route from the contracts, the access token (unless the class is AUTH or CATALOG; on the admin
listener an operator's token, never a player's), the rate limit of the class (per player or
operator, reading their token's revocation second in the same Redis call; refusals spend one
too: the client address's when there is no player, a refused source's on the admin
listener), the body read within the class's deadline budget (408 when it does not come), the
JSON decoded into the RPC's request (400 before any call when it does not fit), the call with
what is left of the budget as its timeout and the player in `x-casino-player-id` (or the
operator in `x-casino-operator-id` with their roles), the reply as proto3 JSON, one
access-log line. A player's or an anonymous read (GET) is decoded first and its call started
beside the rate-limit call rather than after it (ListenerApp._serve says when and why).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import parse_qsl

import grpc
import uvicorn
import uvloop
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Tracer
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from edge.auth import (
    Principal,
    TokenVerifier,
    TokenVerifierConfig,
    Unauthenticated,
    check_not_revoked,
    revocation_key,
)
from edge.config import (
    ADMIN,
    LISTENERS,
    OPERATOR_CLASSES,
    PUBLIC,
    UNAUTHENTICATED_CLASSES,
    WEBHOOKS,
    EdgeSettings,
    edge_settings,
)
from edge.connections import ConnectionBudget, HeadBounds, bounded_protocol, ensure_open_files
from edge.errors import EdgeError, bad_request, from_rpc_error, http_status, internal_error
from edge.geo import GeoConfig, GeoLocator
from edge.netrules import SourceRules
from edge.openapi import openapi_document
from edge.operators import (
    OperatorPrincipal,
    OperatorTokenConfig,
    OperatorTokenVerifier,
    missing_role,
)
from edge.operators import check_not_revoked as check_operator_not_revoked
from edge.operators import revocation_key as operator_revocation_key
from edge.ratelimit import UNROUTED, Decision, RateLimitConfig, RateLimiter
from edge.redislink import RedisLink
from edge.transcoding import (
    Binding,
    TranscodingError,
    bindings_for,
    decode_request,
    encode_response,
    load_contracts,
)
from services.runtime.call import (
    CLIENT_ADDRESS_METADATA,
    CLIENT_COUNTRY_METADATA,
    OPERATOR_METADATA,
    OPERATOR_ROLES_METADATA,
    PLAYER_METADATA,
)
from services.runtime.client import secure_channel
from services.runtime.config import ConfigError, ServiceConfig, build, load_config
from services.runtime.errors import DomainError
from services.runtime.heap import freeze_startup_heap
from services.runtime.logs import configure_logging, get_logger
from services.runtime.secrets import read_secret
from services.runtime.tracing import configure_tracing

log = get_logger()

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")
_JSON = "application/json"
# Probes answer on every listener to any source: they reveal nothing, and orchestrators probe
# from node addresses outside the admin networks.
_HEALTH_PATHS = ("/livez", "/readyz")


def listener_of(endpoint_class: str) -> str:
    """Which listener serves an endpoint class."""
    if endpoint_class == "PAYMENT_WEBHOOK":
        return WEBHOOKS
    if endpoint_class == "ADMIN":
        return ADMIN
    return PUBLIC


class Router:
    """Bindings by path template; a known path with another method is a 405."""

    def __init__(self, bindings: Sequence[Binding]) -> None:
        self.bindings = list(bindings)
        seen: dict[tuple[str, str], Binding] = {}
        for b in self.bindings:
            key = (b.http_method, b.path.regex.pattern)
            if key in seen:
                raise ValueError(
                    f"{b.http_method} {b.path.template} is bound by both "
                    f"{seen[key].operation_id} and {b.operation_id}"
                )
            seen[key] = b

    def match(self, method: str, path: str) -> tuple[Binding, dict[str, str]] | list[str]:
        """The binding and its variables, or the methods the path allows (empty: unknown).
        HEAD is served wherever GET is (RFC 9110): the same call, the body left out by the
        HTTP server."""
        wanted = "GET" if method == "HEAD" else method
        allowed = []
        for b in self.bindings:
            variables = b.path.match(path)
            if variables is None:
                continue
            if b.http_method == wanted:
                return b, variables
            allowed.append(b.http_method)
            if b.http_method == "GET":
                allowed.append("HEAD")
        return sorted(set(allowed))


class Readiness:
    """Ready when Redis answers PING and every upstream answers gRPC health SERVING; probed
    in the background so /readyz costs nothing."""

    def __init__(
        self,
        probes: dict[str, Callable[[], Awaitable[bool]]],
        interval: float,
        timeout: float,
    ) -> None:
        self._probes = probes
        self._interval = interval
        self._timeout = timeout
        self.ready = False
        self.failing: list[str] = list(probes)

    async def check_once(self) -> None:
        async def one(name: str, probe: Callable[[], Awaitable[bool]]) -> bool:
            try:
                return await asyncio.wait_for(probe(), self._timeout)
            except Exception:
                return False

        names = list(self._probes)
        results = await asyncio.gather(*(one(n, self._probes[n]) for n in names))
        failing = [n for n, ok in zip(names, results, strict=True) if not ok]
        if failing != self.failing:
            log.info("readiness changed", ready=not failing, failing=failing)
        self.failing, self.ready = failing, not failing

    async def run(self) -> None:
        while True:
            await self.check_once()
            await asyncio.sleep(self._interval)


def upstream_health_probe(channel: grpc.aio.Channel) -> Callable[[], Awaitable[bool]]:
    stub = health_pb2_grpc.HealthStub(channel)

    async def probe() -> bool:
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    return probe


@dataclass
class Route:
    binding: Binding
    call: Callable[..., Awaitable[Message]]  # the traced callable of services.runtime.client


class ListenerApp:
    """The ASGI app of one listener."""

    def __init__(
        self,
        name: str,
        settings: EdgeSettings,
        routes: Sequence[Route],
        verifier: TokenVerifier,
        operators: OperatorTokenVerifier,
        limiter: RateLimiter,
        readiness: Readiness,
        tracer: Tracer,
        geo: GeoLocator,
        *,
        required_roles: dict[str, list[str]] | None = None,
        access_log: bool = True,
    ) -> None:
        self.name = name
        self.settings = settings
        config = settings.listener(name)
        self.rules = SourceRules(config.allowed_networks, config.trusted_proxies, config.sources)
        self.max_in_flight = config.max_in_flight
        self.in_flight = 0
        self.router = Router([r.binding for r in routes])
        self.calls = {id(r.binding): r.call for r in routes}
        self.verifier = verifier
        self.operators = operators
        self.required_roles = required_roles or {}
        self.limiter = limiter
        self.readiness = readiness
        self.tracer = tracer
        self.geo = geo
        # One "request finished" line per request ([telemetry] access_log, as for services).
        self.access_log = access_log
        self.openapi = openapi_document(
            [r.binding for r in routes], title=f"Casino platform edge ({name})"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        headers = Headers(scope=scope)
        given = headers.get("x-request-id", "")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        method, path = scope["method"], scope["path"]
        peer = scope.get("client")
        peer_host = peer[0] if peer else None
        client = self.rules.client_address(peer_host, headers.get("x-forwarded-for"))
        route = ""
        with self.tracer.start_as_current_span(
            f"{method} edge.{self.name}", kind=SpanKind.SERVER
        ) as span:
            try:
                if path in _HEALTH_PATHS:
                    response = self._health(path)
                elif not self.rules.allows(client):
                    # Refused before routing, like an unknown path, and from the same
                    # per-address budget: a flood from a foreign network meets 429.
                    await self._refuse(
                        UNROUTED,
                        self.rules.rate_key(client),
                        EdgeError(
                            403,
                            "PERMISSION_DENIED",
                            "this listener does not serve your network",
                            "SOURCE_NOT_ALLOWED",
                        ),
                        "",
                    )
                elif path == "/openapi.json":
                    response = self._openapi(method)
                elif self.in_flight >= self.max_in_flight:
                    raise EdgeError(
                        503,
                        "UNAVAILABLE",
                        "the edge is at capacity; retry later",
                        "OVERLOADED",
                        {"resource": f"{self.name} listener"},
                        {"Retry-After": "1"},
                    )
                else:
                    self.in_flight += 1
                    try:
                        response, route = await self._serve(
                            scope,
                            receive,
                            headers,
                            request_id,
                            str(client or ""),
                            self.geo.country(
                                client, self.rules.through_trusted_proxy(peer_host), headers
                            ),
                            self.rules.rate_key(client),
                            started,
                        )
                    finally:
                        self.in_flight -= 1
            except EdgeError as exc:
                response = _error_response(exc, request_id)
                route = route or getattr(exc, "route", "")
            except Exception:
                log.exception("edge failure", request_id=request_id, path=path)
                response = _error_response(internal_error(), request_id)
            response.headers["X-Request-Id"] = request_id
            # Balances, histories, tokens: nothing the edge answers may be kept by a shared
            # cache or the browser's (the contract document says otherwise for itself).
            response.headers.setdefault("Cache-Control", "no-store")
            span.set_attribute("http.request.method", method)
            span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", response.status_code)
            span.set_attribute("casino.request_id", request_id)
            await response(scope, receive, send)
            if not self.access_log:
                return
            log.info(
                "request finished",
                listener=self.name,
                method=method,
                path=path,
                route=route,
                status=response.status_code,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
                request_id=request_id,
                client=str(client or ""),
            )

    def _health(self, path: str) -> Response:
        if path == "/livez":
            return Response(b'{"status":"ok"}', 200, media_type=_JSON)
        if self.readiness.ready:
            return Response(b'{"status":"ready"}', 200, media_type=_JSON)
        return Response(b'{"status":"not ready"}', 503, media_type=_JSON)

    def _openapi(self, method: str) -> Response:
        if method not in ("GET", "HEAD"):
            raise EdgeError(
                405,
                "UNIMPLEMENTED",
                f"{method} is not allowed here",
                "METHOD_NOT_ALLOWED",
                headers={"Allow": "GET, HEAD"},
            )
        return Response(
            self.openapi, 200, media_type=_JSON, headers={"Cache-Control": "public, max-age=300"}
        )

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        headers: Headers,
        request_id: str,
        client: str,
        country: str,
        anonymous_key: str,
        started: float,
    ) -> tuple[Response, str]:
        # Every request that gets this far spends one rate-limit budget, refusals included, so
        # a flood of bad tokens or unknown paths meets 429 like any other: a player's when the
        # token names one, else its client's (the client address's, or its named source's).
        method = scope["method"]
        match = self.router.match(method, scope["path"])
        if isinstance(match, list):
            await self._refuse(UNROUTED, anonymous_key, _unrouted(method, match), "")
        binding, variables = match
        route = f"{binding.http_method} {binding.path.template}"
        endpoint_class = binding.endpoint_class
        if not country and endpoint_class in self.geo.required_for:
            await self._refuse(
                endpoint_class,
                anonymous_key,
                EdgeError(
                    403,
                    "PERMISSION_DENIED",
                    "your location could not be determined; this service needs it",
                    "LOCATION_UNKNOWN",
                ),
                route,
            )
        caller = await self._caller(endpoint_class, headers, anonymous_key, route)
        budget_key = _budget_key(caller, anonymous_key)
        admission = self._admit(binding, route, caller, budget_key, request_id)
        metadata = _call_metadata(request_id, client, country, caller)
        operator = caller if isinstance(caller, OperatorPrincipal) else None
        ahead: asyncio.Future[Message] | None = None
        if operator is None and binding.safe:
            # A player's or an anonymous read. Within its limit as far as this replica has
            # counted, its call starts now and the Redis check (limit and revocation, one
            # round trip) runs beside it, not before it. The answer still waits for the
            # check and is never sent when the check refuses (the call is then cancelled): a
            # read leaves nothing to undo, and a key flooding past its limit reaches the
            # services at its limit per replica. Every read is decoded before its check,
            # whether its call goes ahead or not, so the checks reach Redis in the order this
            # replica counted them. (An operator's read waits: their roles are checked first,
            # so a back-office read without the role is never made.)
            try:
                request = await self._request(receive, headers, scope, binding, variables, started)
            except EdgeError as exc:
                raise _tag(exc, route, await admission) from None
            except BaseException:
                admission.close()
                raise
            if self.limiter.admits_here(endpoint_class, budget_key):
                ahead = asyncio.ensure_future(self._call(binding, request, metadata, started))
            try:
                limit_headers = await admission
            except BaseException:
                if ahead is not None:
                    _abandon(ahead)
                raise
        else:
            limit_headers = await admission
            try:
                request = await self._request(receive, headers, scope, binding, variables, started)
                if operator is not None:
                    _record_operator(request, operator)
            except EdgeError as exc:
                raise _tag(exc, route, limit_headers) from None
        call = ahead if ahead is not None else self._call(binding, request, metadata, started)
        try:
            reply: Message = await call
        except grpc.aio.AioRpcError as exc:
            error = from_rpc_error(exc)
            if error.status >= 500:
                log.warning(
                    "upstream call failed",
                    request_id=request_id,
                    rpc=binding.grpc_path,
                    grpc_code=exc.code().name,
                    details=exc.details(),
                )
            raise _tag(error, route, limit_headers) from None
        return (
            Response(encode_response(binding, reply), 200, media_type=_JSON, headers=limit_headers),
            route,
        )

    async def _caller(
        self, endpoint_class: str, headers: Headers, anonymous_key: str, route: str
    ) -> Principal | OperatorPrincipal | None:
        """Who asks: nobody for the unauthenticated classes (AUTH, CATALOG, PAYMENT_WEBHOOK),
        an operator on the back office (a player's token is refused there), else a player.
        The token's signature is checked here, in process; a request with no usable token is
        refused, charged to the class's budget of its client."""
        if endpoint_class in UNAUTHENTICATED_CLASSES:
            return None
        try:
            if endpoint_class in OPERATOR_CLASSES:
                return self.operators.decode(headers.get("authorization"))
            return self.verifier.decode(headers.get("authorization"))
        except Unauthenticated as exc:
            await self._refuse(endpoint_class, anonymous_key, from_domain_error(exc), route)

    async def _admit(
        self,
        binding: Binding,
        route: str,
        caller: Principal | OperatorPrincipal | None,
        budget_key: str,
        request_id: str,
    ) -> dict[str, str]:
        """The rate-limit headers of a request its caller may make now, else its refusal: a
        revoked token (401; the revocation instant is read by the rate limiter's Redis call,
        one round trip for both), over the class's limit (429), an operator without a role
        the operation needs (403)."""
        endpoint_class = binding.endpoint_class
        try:
            if caller is None:
                decision = await self.limiter.check(endpoint_class, budget_key)
            elif isinstance(caller, OperatorPrincipal):
                decision, revoked_before = await self.limiter.check_and_read(
                    endpoint_class, budget_key, operator_revocation_key(caller.operator_id)
                )
                check_operator_not_revoked(caller, revoked_before)
            else:
                decision, revoked_before = await self.limiter.check_and_read(
                    endpoint_class, budget_key, revocation_key(caller)
                )
                check_not_revoked(caller, endpoint_class, revoked_before)
        except DomainError as exc:
            raise _tag(from_domain_error(exc), route) from None
        limit_headers = dict(decision.headers)
        if not decision.allowed:
            raise _tag(_rate_limited(decision, endpoint_class), route)
        if isinstance(caller, OperatorPrincipal):
            needed = missing_role(self.required_roles, binding.grpc_path.lstrip("/"), caller)
            if needed is not None:
                log.warning(
                    "operator lacks the role for an operation",
                    request_id=request_id,
                    operator=caller.operator_id,
                    rpc=binding.grpc_path,
                    required_roles=needed,
                )
                raise _tag(_role_required(needed), route, limit_headers)
        return limit_headers

    async def _request(
        self,
        receive: Receive,
        headers: Headers,
        scope: Scope,
        binding: Binding,
        variables: dict[str, str],
        started: float,
    ) -> Message:
        """The RPC's request from the path variables, the query string and the JSON body: 400
        when they do not fit it, before any call. The body arrives within what is left of the
        class's deadline budget, or the request ends (408): a client that withholds its body
        must not hold an in-flight slot."""
        limit = self.settings.max_body_bytes
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            raise _too_large(limit)
        if length is None and "transfer-encoding" not in headers:
            # No body: an HTTP/1.1 request has one only when one of the two says so (RFC 9112
            # 6.3), so a GET is not made to wait for one.
            body = b""
        else:
            remaining = self.settings.deadline(binding.endpoint_class) - (
                time.perf_counter() - started
            )
            body = await _read_body(receive, limit, remaining)
        try:
            query = parse_qsl(
                scope["query_string"].decode("latin-1"),
                keep_blank_values=True,
                encoding="utf-8",
                errors="strict",
            )
            return decode_request(binding, variables, query, body)
        except TranscodingError as exc:
            raise bad_request(exc.message, exc.field) from None
        except UnicodeDecodeError:
            raise bad_request("query string is not UTF-8") from None

    def _call(
        self,
        binding: Binding,
        request: Message,
        metadata: list[tuple[str, str]],
        started: float,
    ) -> Awaitable[Message]:
        """The upstream call, with what is left of the class's deadline budget as its
        timeout."""
        budget = self.settings.deadline(binding.endpoint_class) - (time.perf_counter() - started)
        return self.calls[id(binding)](request, timeout=max(budget, 0.001), metadata=metadata)

    async def _refuse(self, budget: str, key: str, refusal: EdgeError, route: str) -> NoReturn:
        """Answers a request the edge refuses before knowing its player (from a network the
        listener does not serve, unrouted, unlocated, no usable token) with `refusal`, after
        spending `key`'s `budget`: 429 once it is spent, so refusals cost an attacker what
        requests cost everyone else."""
        decision = await self.limiter.check(budget, key)
        if not decision.allowed:
            raise _tag(_rate_limited(decision, budget), route)
        raise _tag(refusal, route, dict(decision.headers))


def _abandon(call: asyncio.Future[Any]) -> None:
    """Cancels an upstream call whose answer will not be sent; one that has already ended
    is read, so its failure is not reported as never retrieved."""
    if not call.cancel() and not call.cancelled():
        call.exception()


def _budget_key(caller: Principal | OperatorPrincipal | None, anonymous_key: str) -> str:
    """Whose rate-limit budget a request spends: its player's, its operator's, else its
    client's (the client address's, or its named source's)."""
    if caller is None:
        return anonymous_key
    if isinstance(caller, OperatorPrincipal):
        return f"operator:{caller.operator_id}"
    return f"player:{caller.player_id}"


def _call_metadata(
    request_id: str, client: str, country: str, caller: Principal | OperatorPrincipal | None
) -> list[tuple[str, str]]:
    metadata: list[tuple[str, str]] = [("x-request-id", request_id)]
    if client:
        metadata.append((CLIENT_ADDRESS_METADATA, client))
    if country:
        metadata.append((CLIENT_COUNTRY_METADATA, country))
    if isinstance(caller, OperatorPrincipal):
        metadata.append((OPERATOR_METADATA, caller.operator_id))
        if caller.roles:
            metadata.append((OPERATOR_ROLES_METADATA, ",".join(sorted(caller.roles))))
    elif caller is not None:
        metadata.append((PLAYER_METADATA, caller.player_id))
    return metadata


def _unrouted(method: str, allowed: list[str]) -> EdgeError:
    if not allowed:
        return EdgeError(404, "NOT_FOUND", "no such route", "ROUTE_NOT_FOUND")
    return EdgeError(
        405,
        "UNIMPLEMENTED",
        f"{method} is not allowed here; allowed: {', '.join(allowed)}",
        "METHOD_NOT_ALLOWED",
        headers={"Allow": ", ".join(allowed)},
    )


def _role_required(roles: list[str]) -> EdgeError:
    return EdgeError(
        403,
        "PERMISSION_DENIED",
        "this operation needs one of the roles in required_roles; the operator holds none",
        "OPERATOR_ROLE_REQUIRED",
        {"required_roles": ",".join(roles)},
    )


def _record_operator(request: Any, operator: OperatorPrincipal) -> None:
    """An operation that records its operator (a top-level `operator_id`) records the
    token's: filled in when left out, refused when it names someone else. The service checks
    the same again (services.runtime.call.require_operator)."""
    field = request.DESCRIPTOR.fields_by_name.get("operator_id")
    if field is None or field.type != field.TYPE_STRING or field.is_repeated:
        return
    given = request.operator_id
    if not given:
        request.operator_id = operator.operator_id
    elif given != operator.operator_id:
        raise EdgeError(
            403,
            "PERMISSION_DENIED",
            "an operator may record only themselves as the operator of a change",
            "OPERATOR_MISMATCH",
            {"operator_id": given},
        )


def _rate_limited(decision: Decision, budget: str) -> EdgeError:
    headers = decision.headers
    what = "requests refused before routing" if budget == UNROUTED else f"{budget} requests"
    return EdgeError(
        429,
        "RESOURCE_EXHAUSTED",
        f"too many {what}; retry after the Retry-After seconds",
        "RATE_LIMITED",
        {"policy": decision.policy, "retry_after": headers.get("Retry-After", "1")},
        headers,
    )


def _tag(error: EdgeError, route: str, headers: dict[str, str] | None = None) -> EdgeError:
    error.route = route  # type: ignore[attr-defined]
    if headers:
        error.headers = {**headers, **error.headers}
    return error


def from_domain_error(error: DomainError) -> EdgeError:
    """An edge-side refusal (token, revocation store) in the one error shape."""
    code = grpc.StatusCode[error.code.value]
    status = http_status(code, error.reason)
    return EdgeError(status, code.name, error.message, error.reason, error.metadata)


def _too_large(limit: int) -> EdgeError:
    return bad_request(f"request body is larger than {limit} bytes", "", "REQUEST_TOO_LARGE")


async def _read_body(receive: Receive, limit: int, timeout: float) -> bytes:
    """The request body, if it all arrives within `timeout` seconds (else 408)."""
    try:
        async with asyncio.timeout(max(timeout, 0.0)):
            return await _receive_body(receive, limit)
    except TimeoutError:
        raise EdgeError(
            408,
            "DEADLINE_EXCEEDED",
            "the request body did not arrive within the request's deadline",
            "BODY_TIMEOUT",
            # The rest of the body may still come: it must not be read as the next request.
            headers={"Connection": "close"},
        ) from None


async def _receive_body(receive: Receive, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise EdgeError(499, "CANCELLED", "the client went away", "CLIENT_CLOSED")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _error_response(error: EdgeError, request_id: str) -> Response:
    return Response(error.body(request_id), error.status, media_type=_JSON, headers=error.headers)


def tracer(provider: Any) -> Tracer:
    return trace.get_tracer("edge", tracer_provider=provider)


class _Server(uvicorn.Server):
    """One listener's server. Signals are the Edge's business (three servers share them)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Edge:
    """The edge process: built from its config, serving until stopped."""

    def __init__(self, config: ServiceConfig) -> None:

        self.config = config
        configure_logging(config.name, config.telemetry.log_level)
        self.tracer_provider = configure_tracing(config.name, config.telemetry)
        self.settings = settings = edge_settings(config)
        load_contracts()
        if not config.redis.url:
            raise ConfigError("edge: [redis] url is required (rate limits, revocation)")
        password = read_secret(config.redis.password_file) if config.redis.password_file else None
        # Every call is bounded where it is made (the limiter's breaker, 50 ms; the readiness
        # probe's timeout).
        self.redis = RedisLink(config.redis.url, password)
        self.channels: dict[str, grpc.aio.Channel] = {}
        for upstream in sorted(set(settings.services.values())):
            cfg = config.upstreams[upstream]
            self.channels[upstream] = secure_channel(
                cfg.target,
                config.tls,
                cfg.service,
                default_timeout=cfg.timeout_seconds,
                tracer_provider=self.tracer_provider,
            )
        auth = build(TokenVerifierConfig, settings.auth, "edge.auth", config.config_dir)
        self.verifier = TokenVerifier.from_config(auth)
        operator_auth = build(
            OperatorTokenConfig, settings.operator_auth, "edge.operator_auth", config.config_dir
        )
        check_token_realms(auth, operator_auth)
        self.operators = OperatorTokenVerifier.from_config(operator_auth, auth.issuer)
        limits = build(RateLimitConfig, settings.ratelimit, "edge.ratelimit", config.config_dir)
        self.limiter = RateLimiter(self.redis, limits)
        redis = self.redis

        async def redis_ready() -> bool:
            return bool(await redis.call("PING") == b"PONG")

        self.readiness = Readiness(
            {
                "redis": redis_ready,
                **{f"upstream:{n}": upstream_health_probe(c) for n, c in self.channels.items()},
            },
            settings.readiness_interval_seconds,
            settings.readiness_timeout_seconds,
        )
        routes: dict[str, list[Route]] = {name: [] for name in LISTENERS}
        for service, upstream in settings.services.items():
            channel = self.channels[upstream]
            for binding in bindings_for(service):
                call = channel.unary_unary(
                    binding.grpc_path,
                    request_serializer=binding.request_class.SerializeToString,
                    response_deserializer=binding.response_class.FromString,
                )
                routes[listener_of(binding.endpoint_class)].append(Route(binding, call))
        admin_operations = {r.binding.grpc_path.lstrip("/") for r in routes[ADMIN]}
        unknown = sorted(set(operator_auth.required_roles) - admin_operations)
        if unknown:
            raise ConfigError(
                f"edge.operator_auth.required_roles: {unknown} are not admin operations served "
                f"here ({sorted(admin_operations)})"
            )
        if admin_operations and operator_auth.public_key_dir is None:
            log.warning(
                "no [edge.operator_auth] public_key_dir: no operator can be authenticated, "
                "the admin listener refuses every operation"
            )
        provider_tracer = tracer(self.tracer_provider)
        geo = GeoLocator.from_config(build(GeoConfig, settings.geo, "edge.geo", config.config_dir))
        self.apps = {
            name: ListenerApp(
                name,
                settings,
                routes[name],
                self.verifier,
                self.operators,
                self.limiter,
                self.readiness,
                provider_tracer,
                geo,
                required_roles=operator_auth.required_roles,
                access_log=config.telemetry.access_log,
            )
            for name in LISTENERS
        }
        # Every listener's connections at once must fit the process's descriptors, or a flood
        # on one could leave another unable to accept.
        ensure_open_files([settings.listener(name).max_connections for name in LISTENERS])
        self.ports: dict[str, int] = {}

    async def serve(self, stop: asyncio.Event) -> None:
        await self.limiter.load_script()
        servers, tasks = [], []
        for name, app in self.apps.items():
            listen = self.settings.listener(name)
            # proto IPPROTO_TCP: asyncio turns Nagle off (TCP_NODELAY) on accepted sockets
            # only when their proto says TCP; with 0 every small response waits ~40 ms for
            # the client's delayed ACK. Set on the listener too (Linux: inherited).
            sock = socket.socket(
                socket.AF_INET6 if ":" in listen.host else socket.AF_INET,
                socket.SOCK_STREAM,
                socket.IPPROTO_TCP,
            )
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.bind((listen.host, listen.port))
            self.ports[name] = sock.getsockname()[1]
            head_bounds = HeadBounds(
                name,
                listen.header_timeout_seconds,
                listen.idle_timeout_seconds,
                listen.proxy_idle_timeout_seconds,
                listen.max_head_bytes,
                access_log=self.config.telemetry.access_log,
            )
            budget = ConnectionBudget(
                listen.max_connections, listen.max_connections_per_address, app.rules
            )
            server = _Server(
                uvicorn.Config(
                    app,
                    http=bounded_protocol(head_bounds, budget),
                    lifespan="off",
                    access_log=False,
                    log_config=None,
                    server_header=False,
                    proxy_headers=False,
                    timeout_graceful_shutdown=int(self.config.shutdown.grace_seconds),
                )
            )
            servers.append(server)
            tasks.append(asyncio.create_task(server.serve(sockets=[sock]), name=f"edge-{name}"))
        await self.readiness.check_once()
        readiness = asyncio.create_task(self.readiness.run(), name="readiness")
        while not all(s.started for s in servers):
            if any(t.done() for t in tasks):
                break
            await asyncio.sleep(0.01)
        log.info(
            "edge started",
            **{f"{name}_port": port for name, port in self.ports.items()},
            routes={n: len(a.router.bindings) for n, a in self.apps.items()},
            ready=self.readiness.ready,
        )
        stop_task = asyncio.create_task(stop.wait())
        await asyncio.wait([stop_task, *tasks], return_when=asyncio.FIRST_COMPLETED)
        log.info("shutting down", grace_seconds=self.config.shutdown.grace_seconds)
        for server in servers:
            server.should_exit = True
        results = await asyncio.gather(*tasks, return_exceptions=True)
        stop_task.cancel()
        readiness.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await readiness
        for channel in self.channels.values():
            await channel.close()
        await self.redis.close()
        self.tracer_provider.shutdown()
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise failed[0]
        log.info("stopped")


def check_token_realms(players: TokenVerifierConfig, operators: OperatorTokenConfig) -> None:
    """Players' and operators' tokens must never be mistaken for one another: their own keys,
    issuer and audience."""
    if operators.issuer == players.issuer or operators.audience == players.audience:
        raise ConfigError(
            "edge.operator_auth: issuer and audience must differ from edge.auth's (players')"
        )
    if (
        operators.public_key_dir is not None
        and operators.public_key_dir.resolve() == players.public_key_dir.resolve()
    ):
        raise ConfigError(
            "edge.operator_auth.public_key_dir must not be the players' key directory"
        )


def run(config_path: Path) -> None:
    """`python -m edge --config FILE`: serve until SIGTERM/SIGINT."""
    config = load_config(config_path)

    async def main() -> None:
        edge = Edge(config)
        log.info("startup heap frozen", objects=freeze_startup_heap())
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await edge.serve(stop)

    # The services' loop (services.runtime.server.run_service), for uvicorn's sockets too.
    uvloop.run(main())
