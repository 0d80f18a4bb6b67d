"""Readiness: a dependency that was up leaves rotation only after several failed probes in a
row; one that never answered keeps the service out from the start."""

from __future__ import annotations

import pytest
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio

from services.runtime.health import NOT_SERVING, SERVING, Readiness

pytestmark = pytest.mark.asyncio


class Flaky:
    """A probe whose answers the test sets."""

    def __init__(self, up: bool) -> None:
        self.up = up

    async def __call__(self) -> None:
        if not self.up:
            raise ConnectionError("no answer")


async def status(servicer: health_aio.HealthServicer) -> int:
    reply = await servicer.Check(health_pb2.HealthCheckRequest(service=""), None)  # type: ignore[arg-type]
    return int(reply.status)


async def test_a_busy_dependency_is_not_reported_down_until_it_fails_three_probes_in_a_row() -> (
    None
):
    servicer = health_aio.HealthServicer()
    readiness = Readiness(servicer, [], interval=1.0, timeout=0.1, failure_threshold=3)
    database = Flaky(up=True)
    readiness.add_probe("database", database)
    assert await readiness.check_once()
    database.up = False
    assert await readiness.check_once()  # one slow answer: still in rotation
    assert await readiness.check_once()
    assert await status(servicer) == SERVING
    assert not await readiness.check_once()  # the third in a row
    assert await status(servicer) == NOT_SERVING
    database.up = True
    assert await readiness.check_once()
    assert await status(servicer) == SERVING


async def test_a_dependency_that_never_answered_keeps_the_service_out_at_once() -> None:
    servicer = health_aio.HealthServicer()
    readiness = Readiness(servicer, [], interval=1.0, timeout=0.1, failure_threshold=3)
    readiness.add_probe("database", Flaky(up=False))
    assert not await readiness.check_once()
    assert await status(servicer) == NOT_SERVING
