"""Rate limits against the real Redis: GCRA per (endpoint class, key) in one script call on
the edge's Redis connection, and the stricter local limiter while Redis is unreachable (a
proxy in front of Redis is cut; the shared Redis keeps running)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from edge.ratelimit import Decision, RateLimitConfig, RateLimiter
from edge.redislink import RedisLink
from tests.support.tcp_proxy import TcpProxy

REDIS_URL = "redis://127.0.0.1:6379/0"


def _config(**overrides: object) -> RateLimitConfig:
    # A key prefix per test: parallel runs and earlier runs never share a budget.
    return RateLimitConfig(key_prefix=f"test-ratelimit-{uuid.uuid4().hex}", **overrides)  # type: ignore[arg-type]


@pytest.fixture
async def redis_client() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
    yield client
    await client.aclose()


@pytest.fixture
async def link() -> AsyncIterator[RedisLink]:
    connection = RedisLink(REDIS_URL)
    yield connection
    await connection.close()


@pytest.fixture
def redis_proxy() -> Iterator[TcpProxy]:
    proxy = TcpProxy("127.0.0.1", 6379)
    proxy.start()
    yield proxy
    proxy.close()


async def _burst(
    limiter: RateLimiter, endpoint_class: str, key: str, n: int
) -> tuple[list[Decision], float]:
    started = time.perf_counter()
    decisions = [await limiter.check(endpoint_class, key) for _ in range(n)]
    return decisions, time.perf_counter() - started


async def _started(limiter: RateLimiter) -> RateLimiter:
    """As the edge starts it: connected, its script loaded, so the first checks are not
    timed out by the connecting and loading (on a busy machine they were)."""
    await limiter.load_script()
    return limiter


async def test_51st_wallet_request_within_a_second_is_refused_with_retry_after(
    link: RedisLink,
) -> None:
    limiter = await _started(RateLimiter(link, _config()))
    # Until the first refusal: on a slow machine the burst takes longer and GCRA refills one
    # request per 20 ms of it, so the refusal may come a little after the 51st.
    started = time.perf_counter()
    decisions: list[Decision] = []
    while len(decisions) < 500 and (not decisions or decisions[-1].allowed):
        decisions.append(await limiter.check("PLAYER_WALLET", "player-a"))
    elapsed = time.perf_counter() - started

    allowed = [d.allowed for d in decisions]
    assert all(allowed[:50])
    assert 50 <= allowed.count(True) <= 50 + int(elapsed * 50)
    refused = decisions[-1]
    assert not refused.allowed
    assert refused.headers["Retry-After"] == "1"
    assert refused.headers["RateLimit-Policy"] == '"player_wallet";q=50;w=1'
    assert refused.headers["RateLimit"] == '"player_wallet";r=0;t=1'
    assert 0 < refused.retry_after_seconds <= 0.02
    assert not refused.local
    assert decisions[0].headers["RateLimit"] == '"player_wallet";r=49;t=1'
    assert "Retry-After" not in decisions[0].headers


async def test_another_player_and_catalog_traffic_are_unaffected(link: RedisLink) -> None:
    limiter = await _started(RateLimiter(link, _config()))
    await _burst(limiter, "PLAYER_WALLET", "player-a", 60)
    assert not (await limiter.check("PLAYER_WALLET", "player-a")).allowed

    other, _ = await _burst(limiter, "PLAYER_WALLET", "player-b", 50)
    assert all(d.allowed for d in other)
    catalog, _ = await _burst(limiter, "CATALOG", "player-a", 100)
    assert all(d.allowed for d in catalog)
    assert catalog[0].headers["RateLimit-Policy"] == '"catalog";q=200;w=1'


async def test_replicas_share_one_budget_in_redis(link: RedisLink) -> None:
    config = _config()
    other = RedisLink(REDIS_URL)  # another replica's connection
    first = await _started(RateLimiter(link, config))
    second = await _started(RateLimiter(other, config))
    try:
        await _burst(first, "PAYMENT", "player-a", 10)
        assert not (await second.check("PAYMENT", "player-a")).allowed
    finally:
        await other.close()


async def test_budget_refills_at_the_configured_rate(link: RedisLink) -> None:
    limiter = await _started(RateLimiter(link, _config()))
    await _burst(limiter, "AUTH", "198.51.100.7", 6)  # 5/s per IP
    refused = await limiter.check("AUTH", "198.51.100.7")
    assert not refused.allowed
    # Poll until the refill; it must come no later than one emission interval (200 ms).
    deadline = time.monotonic() + 1.0
    while not (await limiter.check("AUTH", "198.51.100.7")).allowed:
        assert time.monotonic() < deadline, "AUTH budget did not refill within a second"
        await asyncio.sleep(0.02)


async def test_script_reloaded_after_redis_forgets_it(link: RedisLink, redis_client: Redis) -> None:
    # AUTH's 5/s: a token comes back every 200 ms, far longer than this test's two calls
    # (GAMEPLAY's 200/s refilled one within the 5 ms a reload can take).
    limiter = await _started(RateLimiter(link, _config()))
    assert (await limiter.check("AUTH", "client-a")).allowed
    await redis_client.script_flush()  # as after a Redis restart
    decision = await limiter.check("AUTH", "client-a")
    assert decision.allowed and not decision.local
    assert decision.remaining == 3  # the second request of the same key: state kept


async def test_checks_made_together_count_exactly_in_the_order_made(link: RedisLink) -> None:
    limiter = await _started(RateLimiter(link, _config()))
    started = time.perf_counter()
    decisions = await asyncio.gather(
        *(limiter.check("PAYMENT", "player-a") for _ in range(30)),
        *(limiter.check("PAYMENT", "player-b") for _ in range(3)),
    )
    elapsed = time.perf_counter() - started

    a, b = decisions[:30], decisions[30:]
    # 10/s, burst 10: the first ten made, in order, then refusals (GCRA refills one per
    # 100 ms, so a slow machine may let one more through).
    allowed = [d.allowed for d in a]
    assert allowed[:10] == [True] * 10
    assert 10 <= allowed.count(True) <= 10 + int(elapsed * 10)
    assert [d.remaining for d in a[:10]] == list(range(9, -1, -1))
    assert all(d.headers["Retry-After"] == "1" for d in a if not d.allowed)
    assert all(d.allowed for d in b) and [d.remaining for d in b] == [9, 8, 7]
    assert not any(d.local for d in decisions)


async def test_checks_in_flight_reload_the_script_after_redis_forgets_it(
    link: RedisLink, redis_client: Redis
) -> None:
    limiter = await _started(RateLimiter(link, _config()))
    assert (await limiter.check("AUTH", "client-a")).allowed
    await redis_client.script_flush()  # as after a Redis restart

    decisions = await asyncio.gather(*(limiter.check("AUTH", "client-a") for _ in range(3)))

    assert all(d.allowed and not d.local for d in decisions)
    assert [d.remaining for d in decisions] == [3, 2, 1]  # state kept, each counted once


async def test_an_edge_starting_without_redis_starts_and_limits_locally(
    redis_proxy: TcpProxy,
) -> None:
    redis_proxy.cut()
    client = RedisLink(f"redis://127.0.0.1:{redis_proxy.port}/0", connect_timeout=0.05)
    limiter = RateLimiter(client, _config())
    try:
        await limiter.load_script(timeout=0.2)  # logged, not raised

        decision = await limiter.check("PLAYER_WALLET", "player-a")
        assert decision.allowed and decision.local
    finally:
        await client.close()


async def test_redis_down_stricter_local_limits_apply_then_redis_again(
    redis_proxy: TcpProxy,
) -> None:
    client = RedisLink(f"redis://127.0.0.1:{redis_proxy.port}/0", connect_timeout=0.05)
    limiter = await _started(RateLimiter(client, _config(breaker_reset_seconds=0.2)))
    try:
        assert not (await limiter.check("PLAYER_WALLET", "player-a")).local

        redis_proxy.cut()
        # The checks made together fail together: each falls back and is counted locally.
        gathered = await asyncio.gather(
            *(limiter.check("PLAYER_WALLET", "player-d") for _ in range(15))
        )
        assert all(d.local for d in gathered)
        assert [d.allowed for d in gathered].count(True) == 12
        decisions, _ = await _burst(limiter, "PLAYER_WALLET", "player-a", 20)
        # Never unlimited: 50/s burst 50 divided by 4 -> burst 12, and the headers say so.
        assert all(d.local for d in decisions)
        assert [d.allowed for d in decisions].count(True) == 12
        refused = decisions[-1]
        assert not refused.allowed
        assert refused.headers["RateLimit-Policy"] == '"player_wallet-local";q=12;w=1'
        assert refused.headers["Retry-After"] == "1"
        # Each player still has a budget of their own; the open breaker spares them a call
        # to Redis each.
        assert (await limiter.check("PLAYER_WALLET", "player-b")).allowed
        assert limiter.breaker_state == "open"

        redis_proxy.start()
        deadline = time.monotonic() + 5
        while (decision := await limiter.check("CATALOG", "player-c")).local:
            assert time.monotonic() < deadline, "limiter did not go back to Redis"
            await asyncio.sleep(0.05)
        assert decision.allowed
        assert decision.headers["RateLimit-Policy"] == '"catalog";q=200;w=1'
    finally:
        await client.close()
