"""An event's effect runs once per event id, and is never lost: the event is marked done
only when its effect completed, so a delivery cancelled (a shutdown), killed or failing half
way leaves the redelivery to run it. Against the real Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from services.runtime.consumer import once_per_event


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url("redis://127.0.0.1:6379/0")
    yield client
    await client.aclose()


async def test_a_delivery_cancelled_half_way_leaves_its_redelivery_to_act(redis: Redis) -> None:
    key = f"test:seen:{uuid.uuid4().hex}"
    effects: list[str] = []
    started = asyncio.Event()

    async def hanging() -> None:
        started.set()
        await asyncio.sleep(10)  # the consumer is cancelled here (the service stops)
        effects.append("first")

    first = asyncio.ensure_future(once_per_event(redis, key, 60, hanging))
    await started.wait()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first

    async def act() -> None:
        effects.append("redelivered")

    assert await once_per_event(redis, key, 60, act)
    assert effects == ["redelivered"]
    # Done now: a late duplicate does nothing.
    assert not await once_per_event(redis, key, 60, act)
    assert effects == ["redelivered"]
    await redis.delete(key)


async def test_a_failed_delivery_leaves_its_redelivery_to_act(redis: Redis) -> None:
    key = f"test:seen:{uuid.uuid4().hex}"

    async def failing() -> None:
        raise ConnectionError("the database went away")

    with pytest.raises(ConnectionError):
        await once_per_event(redis, key, 60, failing)
    ran: list[bool] = []

    async def act() -> None:
        ran.append(True)

    assert await once_per_event(redis, key, 60, act) and ran == [True]
    await redis.delete(key)
