"""Errors at the RPC surface: domain refusals as rich statuses, dependency outages as
UNAVAILABLE, and anything unexpected as INTERNAL with nothing of the internals."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import AsyncIterator

import grpc
import psycopg
import pytest
from sqlalchemy.exc import OperationalError

from casino.echo.v1 import echo_pb2, echo_pb2_grpc
from services.runtime.config import ListenConfig, ServiceConfig
from services.runtime.errors import InvalidArgument
from services.runtime.server import ServiceRuntime
from services.runtime.status import error_info
from tests.conftest import Pki
from tests.support.clients import echo_client


class Faulty(echo_pb2_grpc.EchoServiceServicer):
    async def Echo(self, request, context):  # type: ignore[no-untyped-def]
        if request.message == "bad":
            raise InvalidArgument("message", "message must not be 'bad'")
        if request.message == "db":
            raise OperationalError(
                "SELECT 1", {}, psycopg.OperationalError("connection to 10.0.0.5 refused")
            )
        if request.message == "conflict":
            raise OperationalError(
                "UPDATE x", {}, psycopg.errors.SerializationFailure("could not serialize access")
            )
        raise RuntimeError("password=hunter2 in /srv/wallet/secret.py line 42")


@pytest.fixture
async def faulty(pki: Pki) -> AsyncIterator[ServiceRuntime]:
    runtime = ServiceRuntime(ServiceConfig(name="echo", listen=ListenConfig(), tls=pki.tls("echo")))
    runtime.add_service(
        echo_pb2.DESCRIPTOR.services_by_name["EchoService"],
        Faulty(),
        echo_pb2_grpc.add_EchoServiceServicer_to_server,
    )
    await runtime.start()
    yield runtime
    await runtime.stop()


async def _call(runtime: ServiceRuntime, pki: Pki, message: str) -> grpc.aio.AioRpcError:
    async with echo_client(runtime.port, pki.tls("games")) as client:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await client.Echo(echo_pb2.EchoRequest(request_id="r", message=message), timeout=5)
    return failure.value


async def test_domain_error_becomes_its_status_with_reason_and_metadata(faulty, pki) -> None:
    error = await _call(faulty, pki, "bad")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "message must not be 'bad'"
    info = error_info(error)
    assert (info.reason, info.domain, dict(info.metadata)) == (  # type: ignore[union-attr]
        "INVALID_ARGUMENT",
        "echo.casino.local",
        {"field": "message"},
    )


async def test_lost_database_connection_is_unavailable_and_retryable(faulty, pki) -> None:
    error = await _call(faulty, pki, "db")
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(error).reason == "DEPENDENCY_UNAVAILABLE"  # type: ignore[union-attr]
    assert "10.0.0.5" not in (error.details() or "")


async def test_a_lost_transaction_conflict_is_aborted_and_retryable(faulty, pki) -> None:
    error = await _call(faulty, pki, "conflict")
    assert error.code() == grpc.StatusCode.ABORTED
    info = error_info(error)
    assert info is not None and info.reason == "TRANSACTION_CONFLICT"


async def test_unexpected_exception_is_internal_without_internals_and_logged_with_trace(
    faulty, pki, capfd
) -> None:
    error = await _call(faulty, pki, "boom")
    assert error.code() == grpc.StatusCode.INTERNAL
    info = error_info(error)
    assert info is not None and info.reason == "INTERNAL_ERROR"
    trace_id = info.metadata["trace_id"]
    client_visible = (error.details() or "") + str(error.trailing_metadata())
    for secret in ("hunter2", "secret.py", "RuntimeError", "Traceback"):
        assert secret not in client_visible

    logged = [
        json.loads(line) for line in capfd.readouterr().out.splitlines() if line.startswith("{")
    ]
    failure = next(line for line in logged if line["event"] == "unhandled exception in handler")
    assert failure["trace_id"] == trace_id
    assert failure["level"] == "error"
    assert "hunter2" in failure["exception"]  # the operator sees what the client does not


async def test_an_upstream_that_is_down_is_unavailable_not_internal(launch, pki: Pki) -> None:
    # A port nothing listens on: the relay's call upstream fails to connect. The caller is
    # told to retry later, not that this service is broken.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    relay = launch(upstream_port=closed)
    async with echo_client(relay.ports["port"], pki.tls("games")) as client:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await client.RelayEcho(
                echo_pb2.RelayEchoRequest(request_id=uuid.uuid4().hex, message="m"), timeout=5
            )
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    info = error_info(failure.value)
    assert info is not None and info.reason == "DEPENDENCY_UNAVAILABLE"
