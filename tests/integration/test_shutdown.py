"""SIGTERM: in-flight RPCs finish, new ones are refused, the process exits 0."""

from __future__ import annotations

import asyncio
import signal
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2
from structlog.testing import capture_logs

from casino.echo.v1 import echo_pb2
from services.runtime.config import ListenConfig, ServiceConfig, ShutdownConfig
from services.runtime.server import ServiceRuntime
from tests.conftest import Pki
from tests.support.clients import echo_client


async def test_sigterm_during_a_slow_rpc_lets_it_finish_and_refuses_new_calls(
    launch, pki: Pki
) -> None:
    echo = launch(grace_seconds=10)
    await echo.wait_health(health_pb2.HealthCheckResponse.SERVING)
    async with echo_client(echo.ports["port"], pki.tls("games")) as client:
        slow = asyncio.ensure_future(
            client.Echo(
                echo_pb2.EchoRequest(request_id=uuid.uuid4().hex, message="slow", delay_ms=1500),
                timeout=10,
            )
        )
        await asyncio.sleep(0.3)  # the slow RPC is in its handler
        echo.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.Echo(
                echo_pb2.EchoRequest(request_id=uuid.uuid4().hex, message="late"), timeout=5
            )
        reply = await slow

    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert reply.record.message == "slow"
    assert await asyncio.to_thread(echo.proc.wait, 15) == 0
    events = [line.get("event") for line in echo.log_lines()]
    assert events.index("shutting down") < events.index("stopped")


async def test_in_flight_rpc_longer_than_the_grace_period_is_cancelled(launch, pki: Pki) -> None:
    echo = launch(grace_seconds=0.5)
    async with echo_client(echo.ports["port"], pki.tls("games")) as client:
        slow = asyncio.ensure_future(
            client.Echo(
                echo_pb2.EchoRequest(request_id=uuid.uuid4().hex, message="x", delay_ms=5000),
                timeout=10,
            )
        )
        await asyncio.sleep(0.3)
        echo.proc.send_signal(signal.SIGTERM)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await slow
    assert failure.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
    assert await asyncio.to_thread(echo.proc.wait, 15) == 0


async def test_calls_beyond_the_concurrency_cap_are_shed_not_queued(launch, pki: Pki) -> None:
    echo = launch(max_concurrent_rpcs=2)
    async with echo_client(echo.ports["port"], pki.tls("games")) as client:
        calls = [
            client.Echo(
                echo_pb2.EchoRequest(request_id=uuid.uuid4().hex, message="m", delay_ms=800),
                timeout=10,
            )
            for _ in range(5)
        ]
        results = await asyncio.gather(*calls, return_exceptions=True)
    shed = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(results) - len(shed) == 2
    assert {e.code() for e in shed} == {grpc.StatusCode.RESOURCE_EXHAUSTED}


class _StuckWorker:
    """A background worker stuck in a library call: it shrugs off its first cancellation,
    and its close never returns (as a broker connection reconnecting can)."""

    def __init__(self) -> None:
        self.cancelled = 0

    async def run(self) -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.cancelled += 1
                if self.cancelled > 1:
                    raise

    async def close(self) -> None:
        await asyncio.Event().wait()


async def test_a_stuck_background_worker_does_not_keep_the_service_from_stopping(
    pki: Pki,
) -> None:
    runtime = ServiceRuntime(
        ServiceConfig(
            name="echo",
            listen=ListenConfig(),
            tls=pki.tls("echo"),
            shutdown=ShutdownConfig(grace_seconds=0.1, workers_seconds=0.2),
        )
    )
    worker = _StuckWorker()
    runtime.add_background(worker)
    await runtime.start()
    await asyncio.sleep(0.1)  # the worker is in its loop
    with capture_logs() as logs:
        # Generous: without the bound, stop() never returns.
        async with asyncio.timeout(10):
            await runtime.stop()
    events = {entry["event"] for entry in logs}
    assert {"background worker did not stop", "background worker did not close"} <= events
    assert "stopped" in events
    assert worker.cancelled == 1
