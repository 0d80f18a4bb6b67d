from __future__ import annotations

import asyncio

import pytest

from services.runtime.breaker import AsyncBreaker, CircuitOpen


async def test_async_failures_open_the_breaker_and_it_recovers() -> None:
    breaker = AsyncBreaker("t", fail_max=2, reset_timeout=0.2)
    calls = 0

    async def failing() -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        await breaker.call(failing)
    with pytest.raises((ConnectionError, CircuitOpen)):
        await breaker.call(failing)
    assert breaker.state == "open"
    with pytest.raises(CircuitOpen):
        await breaker.call(failing)
    assert calls == 2  # the open breaker did not call through

    await asyncio.sleep(0.25)

    async def healthy() -> str:
        await asyncio.sleep(0)
        return "ok"

    assert await breaker.call(healthy) == "ok"
    assert breaker.state == "closed"


async def test_slow_calls_count_as_failures() -> None:
    breaker = AsyncBreaker("slow", fail_max=1, reset_timeout=10, call_timeout=0.01)
    with pytest.raises((TimeoutError, CircuitOpen)):
        await breaker.call(lambda: asyncio.sleep(1))
    assert breaker.state == "open"


async def test_callers_giving_up_neither_open_the_breaker_nor_lose_their_cancellation() -> None:
    breaker = AsyncBreaker("cancelled", fail_max=2, reset_timeout=10)
    started = asyncio.Event()

    async def slow() -> None:
        started.set()
        await asyncio.sleep(10)

    for _ in range(3):
        started.clear()
        call = asyncio.ensure_future(breaker.call(slow))
        await started.wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):  # not CircuitOpen
            await call
    assert breaker.state == "closed"

    async def healthy() -> str:
        return "ok"

    assert await breaker.call(healthy) == "ok"
