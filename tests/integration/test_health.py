"""Readiness follows the dependencies, on the plaintext probe port and the mTLS port."""

from __future__ import annotations

import asyncio
import urllib.request
import uuid

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from casino.echo.v1 import echo_pb2
from services.runtime.client import secure_channel
from tests.conftest import Pki
from tests.support.clients import echo_client
from tests.support.tcp_proxy import TcpProxy
from tests.wallet.conftest import admin_dsn

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def db_proxy():
    proxy = TcpProxy("127.0.0.1", 5432)
    proxy.start()
    yield proxy
    proxy.close()


async def test_health_goes_not_serving_while_database_is_unreachable_and_back(
    launch, db_proxy: TcpProxy
) -> None:
    echo = launch(db_port=db_proxy.port)
    await echo.wait_health(SERVING)
    assert await echo.health("casino.echo.v1.EchoService") == SERVING

    db_proxy.cut()
    await echo.wait_health(NOT_SERVING)
    assert await echo.health("casino.echo.v1.EchoService") == NOT_SERVING
    assert any(
        line.get("event") == "dependency down" and line.get("dependency") == "database"
        for line in echo.log_lines()
    )

    db_proxy.start()
    await echo.wait_health(SERVING)
    assert await echo.health("casino.echo.v1.EchoService") == SERVING


async def test_health_on_the_mtls_port_matches_the_probe_port(launch, pki: Pki) -> None:
    echo = launch()
    await echo.wait_health(SERVING)
    async with secure_channel(f"127.0.0.1:{echo.ports['port']}", pki.tls("games"), "echo") as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=5
        )
    assert reply.status == SERVING


async def test_metrics_port_exports_per_rpc_counts_and_latency(launch, pki: Pki) -> None:
    echo = launch()
    async with echo_client(echo.ports["port"], pki.tls("games")) as client:
        await client.Echo(echo_pb2.EchoRequest(request_id=uuid.uuid4().hex, message="m"), timeout=5)
    async with echo_client(echo.ports["port"], pki.tls("wallet")) as client:
        with pytest.raises(grpc.aio.AioRpcError):  # the denial has its own test
            await client.Echo(echo_pb2.EchoRequest(request_id="x", message="m"), timeout=5)
    url = f"http://127.0.0.1:{echo.ports['metrics_port']}/metrics"
    denied = 'grpc_code="PERMISSION_DENIED",grpc_method="Echo"'
    # A call is counted as it finishes on the server, which can be a moment after the
    # client has its answer: scrape until it shows (as Prometheus would, next time).
    for _ in range(50):
        body = await asyncio.to_thread(
            lambda: urllib.request.urlopen(url, timeout=5).read().decode()
        )
        if denied in body:
            break
        await asyncio.sleep(0.1)
    assert (
        'grpc_server_handled_total{grpc_code="OK",grpc_method="Echo",'
        'grpc_service="casino.echo.v1.EchoService"} 1.0' in body
    )
    assert denied in body
    assert 'grpc_server_handling_seconds_bucket{grpc_method="Echo"' in body
    assert 'casino_dependency_up{dependency="database"} 1.0' in body


async def test_redis_dependency_gates_readiness_like_the_database(pki: Pki) -> None:
    # In-process runtime declaring only Redis, reached through a proxy the test can cut.
    from services.runtime.config import HealthConfig, ListenConfig, RedisConfig, ServiceConfig
    from services.runtime.process import wait_for_health
    from services.runtime.server import ServiceRuntime

    proxy = TcpProxy("127.0.0.1", 6379)
    proxy.start()
    runtime = ServiceRuntime(
        ServiceConfig(
            name="echo",
            listen=ListenConfig(),
            tls=pki.tls("echo"),
            redis=RedisConfig(url=f"redis://127.0.0.1:{proxy.port}/0"),
            health=HealthConfig(probe_interval_seconds=0.2),
        )
    )
    runtime.redis()
    await runtime.start()
    try:
        await wait_for_health(runtime.health_port, SERVING, timeout=10)
        proxy.cut()
        await wait_for_health(runtime.health_port, NOT_SERVING, timeout=10)
        proxy.start()
        await wait_for_health(runtime.health_port, SERVING, timeout=10)
    finally:
        await runtime.stop()
        proxy.close()


async def test_reflection_lists_the_services_to_an_authenticated_client(launch, pki) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    echo = launch()
    async with secure_channel(f"127.0.0.1:{echo.ports['port']}", pki.tls("games"), "echo") as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        responses = [r async for r in stub.ServerReflectionInfo(iter([request]), timeout=5)]
    names = {s.name for s in responses[0].list_services_response.service}
    assert {"casino.echo.v1.EchoService", "grpc.health.v1.Health"} <= names


async def test_a_service_says_at_start_when_its_database_runs_without_autovacuum(
    launch,
) -> None:
    # Whatever this machine's server does, the service tells it as it is: a warning exactly
    # when autovacuum is off (the dev machine's image turns it off).
    async with await psycopg.AsyncConnection.connect(admin_dsn()) as conn:
        setting = (await (await conn.execute("SHOW autovacuum")).fetchone() or ("",))[0]
    echo = launch()
    await echo.wait_health(health_pb2.HealthCheckResponse.SERVING)

    warnings = [
        line
        for line in echo.log_lines()
        if line.get("event") == "database server runs without autovacuum"
    ]
    if setting == "on":
        assert warnings == []
    else:
        (warning,) = warnings
        assert (warning["level"], warning["autovacuum"]) == ("warning", setting)
