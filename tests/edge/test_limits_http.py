"""Rate limits as a player meets them: real HTTP through a running edge with the default
per-class limits, its Redis reached through a proxy the test can cut; refusals (no usable
token, no such route) spend the client address's budget like any other request."""

from __future__ import annotations

import asyncio
import time
import tomllib
import uuid
from collections.abc import Iterator

import httpx
import pytest
from redis.asyncio import Redis

from casino.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from edge.process import EdgeProcess
from services.runtime.client import secure_channel
from services.runtime.process import ServiceProcess
from tests.conftest import Pki
from tests.edge.conftest import EdgeKit, TokenMinter
from tests.support.tcp_proxy import TcpProxy

WALLET_RATE = 50  # the PLAYER_WALLET default, per player per second


@pytest.fixture(scope="module")
def limited_edge(
    edge_kit: EdgeKit,
) -> Iterator[EdgeProcess]:
    # The default limits, and a Redis timeout no stall of this shared machine reaches: a
    # rate-limit call past its timeout fails a money read closed (503), which is the Redis
    # tests' subject (edge_behind_cuttable_redis), not this module's arithmetic.
    yield from edge_kit.serve(
        "limited-edge",
        limits="redis_timeout_ms = 2000",
    )


# Small budgets, so that a flood is met within a few requests.
STRICT_LIMITS = """
[edge.ratelimit.classes.PLAYER_WALLET]
rate = 1
burst = 5
[edge.ratelimit.classes.UNROUTED]
rate = 1
burst = 5
"""


@pytest.fixture(scope="module")
def strict_edge(edge_kit: EdgeKit) -> Iterator[EdgeProcess]:
    yield from edge_kit.serve("strict-edge", limits=STRICT_LIMITS)


@pytest.fixture(scope="module")
def edge_behind_cuttable_redis(
    edge_kit: EdgeKit,
    redis_proxy: TcpProxy,
) -> Iterator[EdgeProcess]:
    yield from edge_kit.serve(
        "cuttable-edge",
        limits="",  # the defaults
        redis_url=f"redis://127.0.0.1:{redis_proxy.port}/0",
    )


async def open_account(edge_services: dict[str, ServiceProcess], pki: Pki) -> str:
    player_id = f"player-{uuid.uuid4().hex[:12]}"
    async with secure_channel(
        f"127.0.0.1:{edge_services['wallet'].ports['port']}",
        pki.tls("identity"),
        "wallet",
        default_timeout=10,
    ) as channel:
        await wallet_pb2_grpc.WalletServiceStub(channel).OpenAccount(
            wallet_pb2.OpenAccountRequest(player_id=player_id, currency_code="EUR")
        )
    return player_id


async def burst(http: httpx.AsyncClient, path: str, n: int, **kw: object) -> list[httpx.Response]:
    """`n` GETs, ten in flight at a time: a player's app in a hurry."""
    gate = asyncio.Semaphore(10)

    async def one() -> httpx.Response:
        async with gate:
            return await http.get(path, **kw)  # type: ignore[arg-type]

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def test_a_players_51st_wallet_request_in_a_second_is_refused_and_no_one_elses(
    limited_edge: EdgeProcess,
    tokens: TokenMinter,
    edge_services: dict[str, ServiceProcess],
    pki: Pki,
) -> None:
    hasty, other = await open_account(edge_services, pki), await open_account(edge_services, pki)
    async with httpx.AsyncClient(base_url=limited_edge.url(), timeout=10) as http:
        loop = asyncio.get_running_loop()
        started = loop.time()
        replies = await burst(
            http,
            f"/v1/players/{hasty}/accounts/EUR/balance",
            # Four seconds' worth: on a slow machine the burst takes longer and the rate
            # refills, yet some of it still comes faster than 50/s.
            WALLET_RATE * 4,
            headers=tokens.bearer(hasty),
        )
        elapsed = loop.time() - started
        served = [r for r in replies if r.status_code == 200]
        refused = [r for r in replies if r.status_code == 429]
        assert len(served) + len(refused) == len(replies), {r.text for r in replies}
        # The burst allowance, plus what the rate refilled while the burst was in flight.
        assert WALLET_RATE <= len(served) <= WALLET_RATE + int(elapsed * WALLET_RATE) + 1
        assert refused
        limited = refused[0]
        assert limited.json()["reason"] == "RATE_LIMITED"
        assert int(limited.headers["Retry-After"]) >= 1
        assert '"player_wallet";q=50;w=1' in limited.headers["RateLimit-Policy"]
        assert "RateLimit" in limited.headers
        # Another player's budget, and the catalog's, are their own.
        theirs = await http.get(
            f"/v1/players/{other}/accounts/EUR/balance", headers=tokens.bearer(other)
        )
        assert theirs.status_code == 200, theirs.text
        assert (await http.get("/v1/ping")).status_code == 200


async def test_with_redis_down_stricter_local_limits_apply_and_money_reads_fail_closed(
    edge_behind_cuttable_redis: EdgeProcess,
    tokens: TokenMinter,
    edge_services: dict[str, ServiceProcess],
    pki: Pki,
    redis_proxy: TcpProxy,
) -> None:
    player = await open_account(edge_services, pki)
    redis_proxy.cut()
    try:
        async with httpx.AsyncClient(base_url=edge_behind_cuttable_redis.url(), timeout=10) as http:
            # The catalog needs no token and stays open, under a local limiter at a quarter
            # of its rate and burst (200 -> 50): never unlimited.
            loop = asyncio.get_running_loop()
            started = loop.time()
            replies = await burst(http, "/v1/ping", 200)
            elapsed = loop.time() - started
            served = [r for r in replies if r.status_code == 200]
            refused = [r for r in replies if r.status_code == 429]
            assert len(served) + len(refused) == len(replies), {r.status_code for r in replies}
            # The local burst, plus what its rate refilled while the burst was in flight.
            assert refused and len(served) <= 50 + int(elapsed * 50) + 1
            assert "catalog-local" in refused[0].headers["RateLimit-Policy"]
            # A money read cannot check the token's revocation: refused, not waved through.
            wallet = await http.get(
                f"/v1/players/{player}/accounts/EUR/balance", headers=tokens.bearer(player)
            )
            assert wallet.status_code == 503, wallet.text
            assert wallet.json()["reason"] == "DEPENDENCY_UNAVAILABLE"
    finally:
        redis_proxy.start()


async def test_a_token_issued_before_its_players_logout_is_refused_through_the_edge(
    limited_edge: EdgeProcess,
    tokens: TokenMinter,
    edge_services: dict[str, ServiceProcess],
    pki: Pki,
) -> None:
    # The revocation instant is read by the same Redis call as the rate limit: a revoked
    # token is refused with 401 TOKEN_REVOKED, a newer one and other players are served.
    player, other = await open_account(edge_services, pki), await open_account(edge_services, pki)
    now = int(time.time())
    old = {"Authorization": f"Bearer {tokens.token(player, iat=now - 60)}"}
    fresh = {"Authorization": f"Bearer {tokens.token(player, iat=now)}"}
    redis = Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        async with httpx.AsyncClient(base_url=limited_edge.url(), timeout=10) as http:
            path = f"/v1/players/{player}/accounts/EUR/balance"
            assert (await http.get(path, headers=old)).status_code == 200
            await redis.set(f"identity:revoked-before:{player}", now - 30, ex=60)
            refused = await http.get(path, headers=old)
            assert refused.status_code == 401, refused.text
            assert refused.json()["reason"] == "TOKEN_REVOKED"
            assert (await http.get(path, headers=fresh)).status_code == 200
            theirs = await http.get(
                f"/v1/players/{other}/accounts/EUR/balance", headers=tokens.bearer(other)
            )
            assert theirs.status_code == 200, theirs.text
    finally:
        await redis.delete(f"identity:revoked-before:{player}")
        await redis.aclose()


def _assert_limited_after_the_burst(
    replies: list[httpx.Response], refusal: set[int], policy: str, elapsed: float
) -> None:
    """The first `burst` (5) replies, and what the rate (1/s) refilled meanwhile, are the
    refusal itself; the rest are 429 with the budget's headers."""
    answered = [r for r in replies if r.status_code in refusal]
    limited = [r for r in replies if r.status_code == 429]
    assert len(answered) + len(limited) == len(replies), {r.status_code for r in replies}
    assert 5 <= len(answered) <= 5 + int(elapsed) + 1
    assert limited
    first = limited[0]
    assert first.json()["reason"] == "RATE_LIMITED"
    assert first.json()["metadata"]["policy"] == policy
    assert int(first.headers["Retry-After"]) >= 1
    assert first.headers["RateLimit-Policy"] == f'"{policy}";q=5;w=5'
    assert first.headers["RateLimit"].startswith(f'"{policy}";r=0;')
    # The refusals before it said how much of the budget was left.
    assert answered[0].headers["RateLimit-Policy"] == f'"{policy}";q=5;w=5'


async def test_a_flood_of_bad_tokens_from_one_address_is_rate_limited_not_answered_forever(
    strict_edge: EdgeProcess,
    tokens: TokenMinter,
    edge_services: dict[str, ServiceProcess],
    pki: Pki,
) -> None:
    player = await open_account(edge_services, pki)
    path = f"/v1/players/{player}/accounts/EUR/balance"
    # No player can be charged for these: the client address's PLAYER_WALLET budget is.
    bad: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": f"Bearer {tokens.token(player, ttl=-3600)}"},  # expired
    ]
    async with httpx.AsyncClient(base_url=strict_edge.url(), timeout=10) as http:
        started = time.monotonic()
        replies = [await http.get(path, headers=bad[i % len(bad)]) for i in range(15)]
        elapsed = time.monotonic() - started
        _assert_limited_after_the_burst(replies, {401}, "player_wallet", elapsed)
        assert {r.json()["reason"] for r in replies if r.status_code == 401} <= {
            "TOKEN_MISSING",
            "TOKEN_INVALID",
            "TOKEN_EXPIRED",
        }
        # A player's own budget is not their address's: a valid token is served from it.
        served = await http.get(path, headers=tokens.bearer(player))
        assert served.status_code == 200, served.text


async def test_a_flood_of_unknown_routes_from_one_address_is_rate_limited(
    strict_edge: EdgeProcess,
) -> None:
    async with httpx.AsyncClient(base_url=strict_edge.url(), timeout=10) as http:
        started = time.monotonic()
        replies = [
            await (http.get("/v1/nothing-here") if i % 2 else http.delete("/v1/ping"))
            for i in range(15)
        ]
        elapsed = time.monotonic() - started
        _assert_limited_after_the_burst(replies, {404, 405}, "unrouted", elapsed)
        # The operations' budgets are their own.
        assert (await http.get("/v1/ping")).status_code == 200


async def test_a_flood_from_outside_the_admin_networks_is_rate_limited_before_routing(
    strict_edge: EdgeProcess,
) -> None:
    # The admin listener refuses a foreign source with 403 before routing, and each refusal
    # spends the source address's UNROUTED budget: once it is spent, 429.
    foreign = {"X-Forwarded-For": "192.168.1.9"}
    async with httpx.AsyncClient(base_url=strict_edge.url("admin"), timeout=10) as admin:
        started = time.monotonic()
        replies = [
            await admin.post(
                "/v1/admin/wallet:reconcile" if i % 2 else "/v1/nowhere", json={}, headers=foreign
            )
            for i in range(15)
        ]
        elapsed = time.monotonic() - started
        _assert_limited_after_the_burst(replies, {403}, "unrouted", elapsed)
        assert {r.json()["reason"] for r in replies if r.status_code == 403} == {
            "SOURCE_NOT_ALLOWED"
        }
        # Another foreign address has a budget of its own, still refused for its network.
        other = await admin.post(
            "/v1/nowhere", json={}, headers={"X-Forwarded-For": "192.168.1.10"}
        )
        assert other.status_code == 403
        assert other.json()["reason"] == "SOURCE_NOT_ALLOWED"
        # The back office is unaffected: past the network rule, refused only for want of a token.
        inside = await admin.post(
            "/v1/admin/wallet:reconcile", json={}, headers={"X-Forwarded-For": "10.1.2.3"}
        )
        assert inside.status_code == 401, inside.text
        # Probes are answered to anyone and spend nothing.
        assert (await admin.get("/livez", headers=foreign)).status_code == 200


async def test_an_authenticated_request_costs_one_redis_call(
    limited_edge: EdgeProcess,
    tokens: TokenMinter,
    edge_services: dict[str, ServiceProcess],
    pki: Pki,
) -> None:
    # The rate limit and the token's revocation instant are one script call; a failed token
    # check costs a call of its own only when it fails.
    player = await open_account(edge_services, pki)
    prefix = tomllib.loads(limited_edge.config.read_text())["edge"]["ratelimit"]["key_prefix"]
    path = f"/v1/players/{player}/accounts/EUR/balance"
    sentinel = f"edge-test-sentinel:{uuid.uuid4().hex}"
    redis = Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        async with httpx.AsyncClient(base_url=limited_edge.url(), timeout=10) as http:
            # Warm: the script is loaded once per process, not per request.
            assert (await http.get(path, headers=tokens.bearer(player))).status_code == 200
            async with redis.monitor() as monitor:
                reply = await http.get(path, headers=tokens.bearer(player))
                assert reply.status_code == 200, reply.text
                await redis.get(sentinel)  # everything the edge sent comes before this
                commands: list[str] = []
                while sentinel not in (command := await monitor.next_command())["command"]:
                    if command["client_type"] != "lua":  # not the script's own GET and SET
                        commands.append(command["command"])
    finally:
        await redis.aclose()
    edge_calls = [c for c in commands if prefix in c or f"identity:revoked-before:{player}" in c]
    assert len(edge_calls) == 1, edge_calls
    assert edge_calls[0].upper().startswith("EVALSHA")
    assert f"identity:revoked-before:{player}" in edge_calls[0]
