"""Exact under concurrency: racing debits, and a randomized workload with duplicated
retries, checked against the ledger itself. Each runs against two wallet replicas on one
database too: one process never lets two of its batches hold one player, so only across
processes do the account row lock and the idempotency key's constraint decide."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import grpc
import psycopg
import pytest

from casino.wallet.v1 import wallet_pb2 as w
from services.runtime.process import ServiceProcess
from services.runtime.status import error_info
from tests.conftest import Launcher, Pki
from tests.wallet.conftest import WalletClients, admin_dsn, eur, new_id, wallet_extra


@pytest.fixture(scope="module")
def replica(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki, wallet: ServiceProcess
) -> Iterator[ServiceProcess]:
    """A second wallet process on the same database, as a second replica would be."""
    launcher = Launcher(tmp_path_factory.mktemp("wallet-replica"), pki, [])
    process = launcher("wallet", extra=wallet_extra(), max_concurrent_rpcs=2000)
    yield process
    process.terminate()


@pytest.fixture(params=["one wallet", "two replicas"])
async def replicas(
    request: pytest.FixtureRequest, clients: WalletClients, pki: Pki
) -> AsyncIterator[list[WalletClients]]:
    if request.param == "one wallet":
        yield [clients]
        return
    other = WalletClients(request.getfixturevalue("replica").ports["port"], pki)
    yield [clients, other]
    await other.close()


async def test_200_concurrent_debits_against_funds_for_100(clients, replicas, player) -> None:
    p = await player(100 * 10)
    bets = [
        w.PlaceBetRequest(
            request_id=new_id("bet"),
            player_id=p,
            amount=eur(10),
            round_id=new_id("round"),
            game_id="dice",
            provider="inhouse",
        )
        for _ in range(200)
    ]
    results = await asyncio.gather(
        *(replicas[i % len(replicas)].games.PlaceBet(b) for i, b in enumerate(bets)),
        return_exceptions=True,
    )
    ok = [r for r in results if not isinstance(r, BaseException)]
    failed = [r for r in results if isinstance(r, BaseException)]
    assert len(ok) == 100
    assert all(isinstance(e, grpc.aio.AioRpcError) for e in failed)
    assert {error_info(e).reason for e in failed} == {"INSUFFICIENT_FUNDS"}
    assert all(r.posting.balance.posted_minor >= 0 for r in ok)
    assert sorted(r.posting.balance.posted_minor for r in ok) == list(range(0, 1000, 10))
    final = await clients.games.GetBalance(w.GetBalanceRequest(player_id=p, currency_code="EUR"))
    assert (final.balance.posted_minor, final.balance.sequence) == (0, 101)

    report = await clients.backoffice.Reconcile(
        w.ReconcileRequest(player_id=p, currency_code="EUR")
    )
    assert list(report.discrepancies) == []


class Workload:
    """A seeded random mix of every operation on a few players, each request sent 1-3 times
    concurrently (a client retrying after a timeout) and some retried again later."""

    def __init__(self, replicas, players: list[str], rng: random.Random) -> None:
        self.replicas = replicas
        self.players = players
        self.rng = rng
        self.bets: dict[str, list[w.PlaceBetRequest]] = {p: [] for p in players}
        self.reservations: dict[str, list[str]] = {p: [] for p in players}
        self.sent: list[tuple[str, object]] = []

    def next_call(self):  # type: ignore[no-untyped-def]
        p = self.rng.choice(self.players)
        rng = self.rng
        op = rng.choices(
            ["deposit", "bet", "win", "rollback", "reserve", "commit", "release"],
            weights=[2, 6, 3, 2, 1, 1, 1],
        )[0]
        if op == "deposit":
            return ("payments", "Deposit"), w.DepositRequest(
                request_id=new_id("d"), player_id=p, amount=eur(rng.randint(1, 500))
            )
        if op == "bet" or not self.bets[p]:
            b = w.PlaceBetRequest(
                request_id=new_id("b"),
                player_id=p,
                amount=eur(rng.randint(1, 200)),
                round_id=new_id("r"),
                game_id="slot",
                provider="inhouse",
            )
            self.bets[p].append(b)
            return ("games", "PlaceBet"), b
        target = rng.choice(self.bets[p])
        if op == "win":
            return ("games", "SettleWin"), w.SettleWinRequest(
                request_id=new_id("w"),
                player_id=p,
                amount=eur(rng.randint(0, 400)),
                round_id=target.round_id,
                bet_request_id=target.request_id,
            )
        if op == "rollback":
            # Sometimes for a bet that was never sent: a tombstone.
            ref = target.request_id if rng.random() < 0.8 else new_id("ghost")
            return ("games", "RollbackBet"), w.RollbackBetRequest(
                request_id=new_id("rb"), player_id=p, currency_code="EUR", bet_request_id=ref
            )
        if op == "reserve" or not self.reservations[p]:
            wd = new_id("wd")
            self.reservations[p].append(wd)
            return ("payments", "ReserveWithdrawal"), w.ReserveWithdrawalRequest(
                request_id=new_id("res"),
                player_id=p,
                amount=eur(rng.randint(1, 300)),
                withdrawal_id=wd,
            )
        wd = rng.choice(self.reservations[p])
        rpc = ("payments", "CommitWithdrawal" if op == "commit" else "ReleaseWithdrawal")
        cls = w.CommitWithdrawalRequest if op == "commit" else w.ReleaseWithdrawalRequest
        return rpc, cls(request_id=new_id("f"), player_id=p, currency_code="EUR", withdrawal_id=wd)

    async def send(self, rpc, request) -> None:  # type: ignore[no-untyped-def]
        """`request` 1-3 times at once, each copy to a replica picked at random."""
        copies = self.rng.choice([1, 1, 2, 3])
        identity, method = rpc
        stubs = [getattr(self.rng.choice(self.replicas), identity) for _ in range(copies)]
        results = await asyncio.gather(
            *(getattr(stub, method)(request) for stub in stubs), return_exceptions=True
        )
        for r in results:
            if isinstance(r, grpc.aio.AioRpcError):
                assert r.code() == grpc.StatusCode.FAILED_PRECONDITION, r
                assert error_info(r).reason != "IDEMPOTENCY_MISMATCH"
            elif isinstance(r, BaseException):
                raise r
        self.sent.append((request.player_id, request))


async def test_randomized_workload_keeps_every_invariant(clients, replicas, player) -> None:
    rng = random.Random(20261126)
    players = [await player(rng.randint(0, 2000)) for _ in range(6)]
    workload = Workload(replicas, players, rng)
    for _ in range(25):  # waves of concurrent requests across players
        calls = [workload.next_call() for _ in range(16)]
        await asyncio.gather(*(workload.send(rpc, req) for rpc, req in calls))
        # Late duplicates of earlier requests, after other postings moved the balance.
        for rpc_req in rng.sample(calls, 3):
            await workload.send(*rpc_req)

    # The ledger's own proof: balances = sums of entries, chains intact, zero per currency.
    for p in players:
        report = await clients.backoffice.Reconcile(
            w.ReconcileRequest(player_id=p, currency_code="EUR")
        )
        assert list(report.discrepancies) == [], p

    with psycopg.connect(admin_dsn()) as conn:
        placeholders = ",".join(["%s"] * len(players))
        # Every idempotency key posted at most once.
        per_key = conn.execute(
            f"SELECT request_id, count(DISTINCT sequence) FROM wallet.entries"
            f" WHERE player_id IN ({placeholders}) GROUP BY request_id",
            players,
        ).fetchall()
        assert per_key and all(n == 1 for _, n in per_key)
        # Double entry: money legs sum to zero; no account below zero at any entry.
        total, lowest, lowest_available = conn.execute(
            f"SELECT sum(amount), min(balance_after), min(balance_after - reserved_after)"
            f" FROM wallet.entries WHERE player_id IN ({placeholders})",
            players,
        ).fetchone()
        assert total == 0
        assert lowest >= 0 and lowest_available >= 0
        accounts = conn.execute(
            f"SELECT a.player_id, a.posted, a.reserved,"
            f" (SELECT coalesce(sum(amount), 0) FROM wallet.entries e"
            f"   WHERE e.player_id = a.player_id AND e.currency = a.currency AND e.leg = 0),"
            f" (SELECT coalesce(sum(reserved_delta), 0) FROM wallet.entries e"
            f"   WHERE e.player_id = a.player_id AND e.currency = a.currency)"
            f" FROM wallet.accounts a WHERE a.player_id IN ({placeholders})",
            players,
        ).fetchall()
        for _, posted, reserved, entry_sum, reserved_sum in accounts:
            assert (posted, reserved) == (entry_sum, reserved_sum)
        kinds = Counter(
            k
            for (k,) in conn.execute(
                f"SELECT kind FROM wallet.transactions WHERE player_id IN ({placeholders})"
                " AND outcome = 'applied'",
                players,
            )
        )
    # The workload really exercised the mix.
    assert {"DEPOSIT", "BET", "WIN", "BET_ROLLBACK", "WITHDRAWAL_RESERVE"} <= set(kinds)
