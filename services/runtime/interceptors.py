"""The per-RPC chassis. On the server, every handler is wrapped (a grpc.aio interceptor
cannot see the request or the handler's context, so wrapping the handler is the only place
these can live): caller authorisation from the contract, call context for logs and outgoing
calls, domain errors mapped to rich statuses, unexpected exceptions turned into INTERNAL
without leaking internals, and per-RPC metrics. On the client, outgoing calls inherit the
remaining deadline of the RPC being served (grpc Python does not do this itself)."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import grpc
import psycopg
import redis.exceptions
from opentelemetry import trace
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from services.runtime import metrics
from services.runtime.access import MethodAccess
from services.runtime.call import (
    EDGE_IDENTITY,
    PLAYER_METADATA,
    CallInfo,
    enter_call,
    leave_call,
)
from services.runtime.errors import DependencyUnavailable, DomainError, Overloaded
from services.runtime.identity import service_from_spiffe_id
from services.runtime.logs import get_logger
from services.runtime.status import abort, abort_with_error

log = get_logger()


def peer_service(context: grpc.aio.ServicerContext) -> str | None:
    """The caller's service identity from its verified client certificate's SPIFFE ID."""
    values = context.auth_context().get("peer_spiffe_id") or []
    return service_from_spiffe_id(values[0].decode()) if values else None


def _unavailable(exc: BaseException) -> DomainError | None:
    """The retryable refusal a failure of a dependency means, or None for anything else.

    Only connection-level database errors count (SQLSTATE class 08, admin shutdown 57P,
    too many connections 53300, or no SQLSTATE at all): a serialization failure is an
    OperationalError too, but it is the transaction's problem, not the database's."""
    if isinstance(exc, PoolTimeoutError):
        return Overloaded("database connection pool")
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return DependencyUnavailable("database")
        sqlstate = getattr(exc.orig, "sqlstate", None)
        if isinstance(exc.orig, psycopg.OperationalError | psycopg.InterfaceError) and (
            sqlstate is None or sqlstate.startswith(("08", "57P", "53300"))
        ):
            return DependencyUnavailable("database")
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return DependencyUnavailable("redis")
    return None


class _RpcScope:
    """One RPC's bookkeeping: authorisation, call context, error mapping, metrics."""

    def __init__(
        self,
        service: str,
        access: MethodAccess,
        context: grpc.aio.ServicerContext,
        access_log: bool,
    ) -> None:
        self.service = service
        self.access_log = access_log
        self.access = access
        self.context = context
        self.grpc_service, _, self.grpc_method = access.method.lstrip("/").rpartition("/")
        self.code = grpc.StatusCode.OK
        self.token: contextvars.Token[CallInfo | None] | None = None

    async def __aenter__(self) -> CallInfo:
        caller = peer_service(self.context)
        remaining = self.context.time_remaining()
        players = [
            value
            for key, value in self.context.invocation_metadata() or ()
            if key == PLAYER_METADATA
        ]
        self.info = CallInfo(
            service=self.service,
            method=self.access.method,
            caller=caller,
            deadline=None if remaining is None else time.monotonic() + remaining,
            player_id=str(players[0]) if len(players) == 1 and caller == EDGE_IDENTITY else None,
        )
        self.token = enter_call(self.info)
        self.log = log.bind(rpc=self.access.method, caller=caller)
        self.started = time.perf_counter()
        metrics.RPC_STARTED.labels(self.grpc_service, self.grpc_method).inc()
        if not self.access.allows(caller):
            await self._deny(
                f"caller {caller or 'without a platform identity'} may not call this RPC"
            )
        elif players and caller != EDGE_IDENTITY:
            # Only the edge authenticates players. Another service naming one is refused,
            # not ignored: a service that forwards the header would otherwise believe it
            # was acting for that player while the callee silently treats it as itself.
            await self._deny(f"caller {caller} may not name a player in {PLAYER_METADATA}")
        elif len(players) > 1 or (players and not players[0]):
            await self._deny(f"{PLAYER_METADATA} must carry exactly one non-empty player id")
        return self.info

    async def _deny(self, message: str) -> NoReturn:
        caller = self.info.caller
        metrics.CALLER_DENIED.labels(self.grpc_service, self.grpc_method, str(caller)).inc()
        self.log.warning("caller not allowed", detail=message)
        self.code = grpc.StatusCode.PERMISSION_DENIED
        try:
            await abort(
                self.context,
                self.code,
                "CALLER_NOT_ALLOWED",
                message,
                {"caller": caller or "", "rpc": self.access.method},
            )
        finally:
            self._finish()

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        try:
            if exc is None or isinstance(exc, asyncio.CancelledError):
                return False
            if isinstance(exc, grpc.aio.AbortError):
                # The handler called context.abort(): the status is already set.
                self.code = self.context.code() or grpc.StatusCode.UNKNOWN
                return False
            if isinstance(exc, DomainError):
                self.code = grpc.StatusCode[exc.code.value]
                await abort_with_error(self.context, exc)
            unavailable = _unavailable(exc)
            if unavailable is not None:
                self.code = grpc.StatusCode.UNAVAILABLE
                self.log.warning(unavailable.message, reason=unavailable.reason, error=str(exc))
                await abort_with_error(self.context, unavailable)
            self.code = grpc.StatusCode.INTERNAL
            trace_id = format(trace.get_current_span().get_span_context().trace_id, "032x")
            self.log.error("unhandled exception in handler", exc_info=exc)
            await abort(
                self.context,
                self.code,
                "INTERNAL_ERROR",
                "internal error; quote trace_id when reporting it",
                {"trace_id": trace_id},
            )
        finally:
            self._finish()

    def _finish(self) -> None:
        if self.token is None:
            return
        elapsed = time.perf_counter() - self.started
        metrics.RPC_HANDLED.labels(self.grpc_service, self.grpc_method, self.code.name).inc()
        metrics.RPC_LATENCY.labels(self.grpc_service, self.grpc_method).observe(elapsed)
        if self.access_log:
            self.log.info(
                "rpc finished", grpc_code=self.code.name, duration_ms=round(elapsed * 1000, 3)
            )
        leave_call(self.token)
        self.token = None


class RuntimeServerInterceptor(grpc.aio.ServerInterceptor):
    def __init__(
        self, service: str, policies: dict[str, MethodAccess], *, access_log: bool = True
    ) -> None:
        self._service = service
        self._policies = policies
        self._access_log = access_log

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        access = self._policies.get(details.method)
        if handler is None or access is None:
            # Health and reflection: open to any caller that passed the mTLS handshake.
            return handler
        service, access_log = self._service, self._access_log
        des, ser = handler.request_deserializer, handler.response_serializer

        if handler.unary_unary:
            uu = handler.unary_unary

            async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                async with _RpcScope(service, access, context, access_log):
                    return await uu(request, context)

            return grpc.unary_unary_rpc_method_handler(unary_unary, des, ser)
        if handler.unary_stream:
            us = handler.unary_stream

            async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                async with _RpcScope(service, access, context, access_log):
                    async for item in us(request, context):
                        yield item

            return grpc.unary_stream_rpc_method_handler(unary_stream, des, ser)
        if handler.stream_unary:
            su = handler.stream_unary

            async def stream_unary(requests: Any, context: grpc.aio.ServicerContext) -> Any:
                async with _RpcScope(service, access, context, access_log):
                    return await su(requests, context)

            return grpc.stream_unary_rpc_method_handler(stream_unary, des, ser)
        ss = handler.stream_stream

        async def stream_stream(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            async with _RpcScope(service, access, context, access_log):
                async for item in ss(requests, context):
                    yield item

        return grpc.stream_stream_rpc_method_handler(stream_stream, des, ser)
