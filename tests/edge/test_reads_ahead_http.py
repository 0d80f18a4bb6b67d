"""A read's upstream call starts beside its rate-limit check (edge/app.py), not after it. What
a player relies on: the answer still obeys the check. What the services rely on: a flood of
reads reaches them no further than its limit, and a read the check refuses is cancelled, not
served to the end. Real HTTP through a running edge, its real Redis; the upstreams are
stand-ins of the echo and wallet contracts that count what reaches them."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import httpx
import pytest
from redis.asyncio import Redis

from casino.echo.v1 import echo_pb2, echo_pb2_grpc
from casino.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from edge.process import EdgeProcess
from tests.conftest import Pki
from tests.edge.conftest import TokenMinter, edge_config, serve_stand_in, start_edge

# Five reads at once per client address, and no refill within a test (one per 100 s).
LIMITS = """
[edge.ratelimit.classes.CATALOG]
rate = 0.01
burst = 5
[edge.ratelimit.classes.PLAYER_WALLET]
rate = 100000
burst = 100000
[edge.ratelimit.classes.UNROUTED]
rate = 100000
burst = 100000
"""


@dataclass
class Counts:
    started: int = 0
    answered: int = 0
    cancelled: int = 0
    # How long a call takes before it answers.
    delay: float = 0.0

    def reset(self, delay: float) -> None:
        self.started = self.answered = self.cancelled = 0
        self.delay = delay


class CountingEcho(echo_pb2_grpc.EchoServiceServicer):
    def __init__(self, counts: Counts) -> None:
        self.counts = counts

    async def Mirror(
        self, request: echo_pb2.MirrorRequest, context: grpc.aio.ServicerContext
    ) -> echo_pb2.MirrorResponse:
        self.counts.started += 1
        await asyncio.sleep(self.counts.delay)
        self.counts.answered += 1
        return echo_pb2.MirrorResponse(request=request)


class CountingWallet(wallet_pb2_grpc.WalletServiceServicer):
    def __init__(self, counts: Counts) -> None:
        self.counts = counts

    async def GetBalance(
        self, request: wallet_pb2.GetBalanceRequest, context: grpc.aio.ServicerContext
    ) -> wallet_pb2.GetBalanceResponse:
        self.counts.started += 1
        try:
            await asyncio.sleep(self.counts.delay)
        except asyncio.CancelledError:
            self.counts.cancelled += 1
            raise
        self.counts.answered += 1
        return wallet_pb2.GetBalanceResponse(
            balance=wallet_pb2.Balance(
                player_id=request.player_id, currency_code=request.currency_code
            )
        )


@dataclass
class Upstreams:
    echo: Counts
    wallet: Counts
    ports: dict[str, int]


@pytest.fixture(scope="module")
async def upstreams(pki: Pki) -> AsyncIterator[Upstreams]:
    echo, wallet = Counts(), Counts()
    stand_ins = {
        "echo": await serve_stand_in(
            pki,
            "echo",
            lambda server: echo_pb2_grpc.add_EchoServiceServicer_to_server(
                CountingEcho(echo), server
            ),
        ),
        "wallet": await serve_stand_in(
            pki,
            "wallet",
            lambda server: wallet_pb2_grpc.add_WalletServiceServicer_to_server(
                CountingWallet(wallet), server
            ),
        ),
    }
    yield Upstreams(echo, wallet, {name: s.port for name, s in stand_ins.items()})
    for stand_in in stand_ins.values():
        await stand_in.server.stop(0)


@pytest.fixture(scope="module")
async def reads_edge(
    tmp_path_factory: pytest.TempPathFactory,
    pki: Pki,
    tokens: TokenMinter,
    upstreams: Upstreams,
) -> AsyncIterator[EdgeProcess]:
    tmp = tmp_path_factory.mktemp("reads-ahead-edge")
    config = edge_config(
        tmp / "reads-ahead-edge.toml",
        pki,
        tokens.key_dir,
        upstreams={name: (port, name) for name, port in upstreams.ports.items()},
        services={
            "casino.echo.v1.EchoService": "echo",
            "casino.wallet.v1.WalletService": "wallet",
        },
        limits=LIMITS,
    )
    # Ready once its upstreams answer their health checks, which they do on this test's
    # event loop: waited for here without blocking it.
    process = start_edge(tmp, config, ready=False)
    try:
        async with httpx.AsyncClient(base_url=process.url(), timeout=1) as http:
            async with asyncio.timeout(30):
                while (await http.get("/readyz")).status_code != 200:  # noqa: ASYNC110 (polling a process)
                    await asyncio.sleep(0.1)
        yield process
    finally:
        process.terminate()


async def test_a_flood_of_reads_reaches_the_upstream_no_further_than_its_limit(
    reads_edge: EdgeProcess, upstreams: Upstreams
) -> None:
    # 20 reads at once from one address whose budget is 5: 5 answered, 15 refused with 429,
    # and the upstream saw the 5 answered calls and no other (the calls that start before
    # Redis has decided are held to the limit by the edge's own count).
    counts = upstreams.echo
    counts.reset(delay=0.05)
    async with httpx.AsyncClient(base_url=reads_edge.url(), timeout=10) as http:
        replies = await asyncio.gather(*(http.get("/v1/mirrors/flood") for _ in range(20)))
    statuses = sorted(r.status_code for r in replies)
    assert statuses == [200] * 5 + [429] * 15, statuses
    answered = next(r for r in replies if r.status_code == 200)
    assert answered.json()["request"]["name"] == "mirrors/flood"
    assert answered.headers["RateLimit-Policy"] == '"catalog";q=5;w=500'
    refused = next(r for r in replies if r.status_code == 429)
    assert refused.json()["reason"] == "RATE_LIMITED"
    assert counts.started == counts.answered == 5


async def test_a_read_the_check_refuses_is_not_answered_and_its_call_is_cancelled(
    reads_edge: EdgeProcess, upstreams: Upstreams, tokens: TokenMinter
) -> None:
    # The player logged out after this token was issued; the balance read's call started
    # beside the check. The player gets 401 TOKEN_REVOKED, never the balance, and the
    # wallet's call is cancelled rather than run to its end.
    counts = upstreams.wallet
    counts.reset(delay=2.0)
    player = f"player-{uuid.uuid4().hex[:12]}"
    now = int(time.time())
    old = {"Authorization": f"Bearer {tokens.token(player, iat=now - 60)}"}
    redis = Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        await redis.set(f"identity:revoked-before:{player}", now - 30, ex=60)
        async with httpx.AsyncClient(base_url=reads_edge.url(), timeout=10) as http:
            refused = await http.get(f"/v1/players/{player}/accounts/EUR/balance", headers=old)
    finally:
        await redis.delete(f"identity:revoked-before:{player}")
        await redis.aclose()
    assert refused.status_code == 401, refused.text
    assert refused.json()["reason"] == "TOKEN_REVOKED"
    assert "balance" not in refused.json()
    # Past the call's 2 s: a call that had run to its end would have answered by now. (It
    # may have been cancelled before it left the edge, or after it reached the wallet.)
    await asyncio.sleep(3.0)
    assert counts.answered == 0
    assert counts.cancelled == counts.started <= 1


async def test_a_read_within_its_limit_is_answered_with_its_budget(
    reads_edge: EdgeProcess, upstreams: Upstreams, tokens: TokenMinter
) -> None:
    counts = upstreams.wallet
    counts.reset(delay=0.0)
    player = f"player-{uuid.uuid4().hex[:12]}"
    async with httpx.AsyncClient(base_url=reads_edge.url(), timeout=10) as http:
        reply = await http.get(
            f"/v1/players/{player}/accounts/EUR/balance", headers=tokens.bearer(player)
        )
    assert reply.status_code == 200, reply.text
    assert reply.json()["balance"]["playerId"] == player
    assert reply.headers["RateLimit"].startswith('"player_wallet";r=')
    assert counts.started == counts.answered == 1
