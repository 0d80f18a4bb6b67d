"""Rounds a crash left part way, finished by the recovery worker (or by a retry of the same
request_id) as a regulator relies on it: an outcome that was drawn is paid exactly once and
never drawn again; an outcome that was not drawn never will be, and the stake goes back; a
round completes under the RNG versions it opened under, whatever is deployed meanwhile.

Each test kills a games process on purpose at a failpoint (SIGKILL: nothing is cleaned up)
and starts a fresh one on the same database. The package's `games` instance, when running,
shares the recovery backlog with it, as replicas do: either may finish a round."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from casino.games.v1 import games_pb2 as pb
from casino.rng.v1 import rng_pb2 as rng_pb
from casino.rng.v1 import rng_pb2_grpc
from casino.wallet.v1 import wallet_pb2
from services.games.lifecycle import NOT_DRAWN, round_id_for
from services.games.server import GamesSettings
from services.rng.sampling import SAMPLING_VERSION as SAMPLING_V1
from services.rng.sampling_v2 import SAMPLING_V2_VERSION as SAMPLING_V2
from services.runtime.client import secure_channel
from services.runtime.process import ServiceProcess
from tests.conftest import Launcher, Pki
from tests.games.conftest import Clients, Upstreams, dice_bet, games_extra, start_session
from tests.rng.conftest import rng_extra

pytestmark = pytest.mark.asyncio

# How long a crashed round may take to be finished: its lease (3 s in tests) plus a few
# recovery passes, with room for a slow machine.
RECOVERY_TIMEOUT_SECONDS = 20.0
DEPOSIT = 10_000
# The default lease (how long a live call owns its round): a round crashed under it is left
# alone by the recovery workers long enough for a test to act on it first.
PRODUCTION_LEASE_SECONDS = GamesSettings().lease_seconds

BET = wallet_pb2.TRANSACTION_KIND_BET
WIN = wallet_pb2.TRANSACTION_KIND_WIN
BET_ROLLBACK = wallet_pb2.TRANSACTION_KIND_BET_ROLLBACK
FINISHED = (pb.ROUND_STATE_COMPLETED, pb.ROUND_STATE_VOIDED)


@pytest.fixture
def launcher(tmp_path: Path, pki: Pki, upstreams: Upstreams) -> Iterator[Launcher]:
    launcher = Launcher(tmp_path, pki, [])
    yield launcher
    for process in launcher.started:
        process.terminate()


@pytest.fixture
async def rng_stubs(pki: Pki) -> Any:
    """Back-office RNG stubs on instances a test starts itself."""
    channels: list[grpc.aio.Channel] = []

    def make(process: ServiceProcess) -> rng_pb2_grpc.RngServiceStub:
        channel = secure_channel(
            f"127.0.0.1:{process.ports['port']}", pki.tls("backoffice"), "rng", default_timeout=20
        )
        channels.append(channel)
        return rng_pb2_grpc.RngServiceStub(channel)

    yield make
    for channel in channels:
        await channel.close()


def start_games(
    launcher: Launcher,
    up: Upstreams,
    name: str,
    *,
    rng: ServiceProcess | None = None,
    failpoints: dict[str, str] | None = None,
    lease_seconds: float | None = None,
) -> ServiceProcess:
    """A games instance with its own folder (signing key, checkpoints), on the shared
    database, against the package's compliance and wallet and the given RNG."""
    folder = launcher.tmp / name
    folder.mkdir()
    extra = games_extra(
        up, folder, rng_port=rng.ports["port"] if rng else None, failpoints=failpoints
    )
    if lease_seconds is not None:
        short = "lease_seconds = 3\n"
        assert short in extra
        extra = extra.replace(short, f"lease_seconds = {lease_seconds}\n")
    return launcher("games", extra=extra)


def start_rng(
    launcher: Launcher, up: Upstreams, name: str, sampling: str = SAMPLING_V1, settings: str = ""
) -> ServiceProcess:
    """An RNG deployment opening new rounds under `sampling` (`settings`: more lines for
    its [rng] table). It holds the same secrets as the package's RNG (every replica and
    every later deployment does): a round sealed by one opens at the others."""
    folder = launcher.tmp / name
    folder.mkdir()
    for secret in ("rng-seal.key", "rng-signing.key", "rng-signing.pub"):
        shutil.copy2(up.folder / secret, folder / secret)  # keeps mode 0600
    lines = f'sampling_version = "{sampling}"\n{settings}'
    return launcher("rng", extra=rng_extra(folder, settings=lines))


def play(player: str, session: pb.Session, request_id: str, bet: pb.Bet) -> pb.PlayRoundRequest:
    return pb.PlayRoundRequest(
        player_id=player, session_id=session.session_id, request_id=request_id, bet=bet
    )


async def play_and_lose_the_process(
    stub: Any, process: ServiceProcess, request: pb.PlayRoundRequest
) -> None:
    """PlayRound on an instance armed to die part way: the reply never comes, and the
    process is gone by SIGKILL (the failpoint fired, not some other failure)."""
    with pytest.raises(grpc.aio.AioRpcError) as lost:
        await stub.PlayRound(request)
    assert lost.value.code() == grpc.StatusCode.UNAVAILABLE, lost.value
    assert process.proc is not None
    assert await asyncio.to_thread(process.proc.wait, 10) == -signal.SIGKILL


async def get_round(stub: Any, player: str, round_id: uuid.UUID) -> pb.Round:
    return (await stub.GetRound(pb.GetRoundRequest(player_id=player, round_id=str(round_id)))).round


async def wait_until_finished(
    stub: Any, player: str, round_id: uuid.UUID, timeout: float = RECOVERY_TIMEOUT_SECONDS
) -> pb.Round:
    """The round once the recovery worker (of any instance) has finished it."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        r = await get_round(stub, player, round_id)
        if r.state in FINISHED:
            return r
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(
                f"round {round_id} still {pb.RoundState.Name(r.state)} after {timeout}s:"
                " nothing recovered it"
            )
        await asyncio.sleep(0.2)


async def round_transactions(
    clients: Clients, player: str, round_id: uuid.UUID
) -> list[wallet_pb2.Transaction]:
    """The wallet's transactions for one round, by kind (BET, WIN, BET_ROLLBACK). Not by
    ledger sequence: a WIN of 0 (a lost round) writes no ledger entry and has sequence 0."""
    return sorted(
        (t for t in await clients.transactions(player) if t.round_id == str(round_id)),
        key=lambda t: t.kind,
    )


async def rng_replay(rng: Any, rng_round_id: str) -> rng_pb.ReplayRoundResponse:
    return await rng.ReplayRound(rng_pb.ReplayRoundRequest(round_id=rng_round_id))


def values(results: Any) -> list[int]:
    return [v for result in results for v in result.values]


# -------------------------------------------------------------------- crash after the debit


async def _crashed_after_the_debit(
    launcher: Launcher, upstreams: Upstreams, clients: Clients
) -> tuple[str, pb.PlayRoundRequest, uuid.UUID]:
    """A dice round whose games process was killed after the wallet took the stake and
    before the journal said so: its player, the request (for a retry) and its round id."""
    doomed = start_games(
        launcher, upstreams, "games-doomed", failpoints={"games.after_debit": "kill"}
    )
    player = await clients.player(deposit=DEPOSIT)
    session = await start_session(clients.games(doomed), player, "dice")
    request_id = uuid.uuid4().hex
    request = play(player, session, request_id, dice_bet(stake=100, target=5000))
    round_id = round_id_for(player, request_id)
    await play_and_lose_the_process(clients.games(doomed), doomed, request)
    return player, request, round_id


async def test_a_crash_after_the_debit_is_recovered_by_voiding_the_round_and_returning_the_stake(
    launcher: Launcher, upstreams: Upstreams, clients: Clients
) -> None:
    player, request, round_id = await _crashed_after_the_debit(launcher, upstreams, clients)
    # The process died after the wallet took the stake and before the journal said so.
    taken = [t for t in await round_transactions(clients, player, round_id) if t.kind == BET]
    assert [t.amount.amount_minor for t in taken] == [-100]

    healthy = start_games(launcher, upstreams, "games-healthy")
    stub = clients.games(healthy)
    voided = await wait_until_finished(stub, player, round_id)

    # Nothing was drawn, so the round is void and the stake is back, to the minor unit.
    assert voided.state == pb.ROUND_STATE_VOIDED
    assert voided.void_reason == NOT_DRAWN
    assert voided.payout.amount_minor == 0
    assert list(voided.draws) == [] and not voided.HasField("outcome")
    assert len(voided.record_hash) == 64  # archived
    balance = await clients.balance(player)
    assert balance.posted_minor == balance.available_minor == DEPOSIT
    assert voided.balance_after_minor == DEPOSIT
    bet, rollback = await round_transactions(clients, player, round_id)
    assert (bet.kind, bet.amount.amount_minor) == (BET, -100)
    assert (rollback.kind, rollback.amount.amount_minor) == (BET_ROLLBACK, 100)
    assert rollback.bet_request_id == bet.request_id

    # And it never will be drawn: the RNG round is closed with no draw made.
    assert voided.rng_round_id
    rng_round = (await rng_replay(clients.rng, voided.rng_round_id)).round
    assert rng_round.draw_count == 0
    assert rng_round.state == rng_pb.ROUND_STATE_CLOSED

    # The player's retry is answered with the voided round; it plays nothing again.
    retried = await stub.PlayRound(request)
    assert retried.replayed
    assert retried.round.round_id == str(round_id)
    assert retried.round.state == pb.ROUND_STATE_VOIDED
    assert retried.round.void_reason == NOT_DRAWN
    assert len(await round_transactions(clients, player, round_id)) == 2
    assert (await clients.balance(player)).posted_minor == DEPOSIT
    assert (await rng_replay(clients.rng, voided.rng_round_id)).round.draw_count == 0

    # The archive reconciles with the ledger: the voided round names the stake the wallet
    # took as well as the rollback that returned it (a round whose stake never arrived
    # would name none: the wallet's rollback says which case it was).
    assert voided.settle_transaction_id == rollback.request_id
    assert voided.bet_transaction_id == bet.request_id, (
        "the archived round does not name the BET the wallet holds for it: a ledger"
        " reconciliation cannot tell a returned stake from one that never arrived"
    )


async def test_a_crashed_rounds_stake_comes_back_while_the_rng_refuses_new_draws(
    launcher: Launcher, upstreams: Upstreams, clients: Clients
) -> None:
    # The RNG round is journalled with the DEBITED step, so after this crash the journal
    # shows an open round with no RNG round, while the wallet holds the stake.
    player, request, round_id = await _crashed_after_the_debit(launcher, upstreams, clients)

    # Recovery runs while the RNG refuses to draw (failed self-test): it still finds the
    # round it opened, closes it undrawn, and the stake goes back.
    unhealthy = start_rng(launcher, upstreams, "rng-unhealthy", settings='self_test_fail = "x"')
    games = start_games(launcher, upstreams, "games-b", rng=unhealthy)
    stub = clients.games(games)
    voided = await wait_until_finished(stub, player, round_id)
    assert voided.state == pb.ROUND_STATE_VOIDED
    assert voided.void_reason == NOT_DRAWN
    bet, rollback = await round_transactions(clients, player, round_id)
    assert (bet.kind, bet.amount.amount_minor) == (BET, -100)
    assert (rollback.kind, rollback.amount.amount_minor) == (BET_ROLLBACK, 100)
    assert (await clients.balance(player)).posted_minor == DEPOSIT
    assert voided.bet_transaction_id == bet.request_id
    assert voided.settle_transaction_id == rollback.request_id
    retried = await stub.PlayRound(request)
    assert retried.replayed and retried.round.state == pb.ROUND_STATE_VOIDED


# --------------------------------------------------------------------- crash after the draw


async def test_a_crash_after_the_draw_is_recovered_by_crediting_the_drawn_outcome_once(
    launcher: Launcher, upstreams: Upstreams, clients: Clients
) -> None:
    doomed = start_games(
        launcher, upstreams, "games-doomed", failpoints={"games.after_draw": "kill"}
    )
    player = await clients.player(deposit=DEPOSIT)
    session = await start_session(clients.games(doomed), player, "dice")
    request_id = uuid.uuid4().hex
    # Wins on a roll under 9000 (nine times in ten), paying 1000 * 0.99 / 0.9 = 1100.
    request = play(player, session, request_id, dice_bet(stake=1000, target=9000))
    round_id = round_id_for(player, request_id)

    await play_and_lose_the_process(clients.games(doomed), doomed, request)

    healthy = start_games(launcher, upstreams, "games-healthy")
    stub = clients.games(healthy)
    completed = await wait_until_finished(stub, player, round_id)

    # The outcome drawn before the crash is the one settled.
    assert completed.state == pb.ROUND_STATE_COMPLETED
    assert completed.void_reason == ""
    assert len(completed.draws) == 1
    roll = completed.draws[0]
    won = roll < 9000
    assert (completed.outcome.dice.roll, completed.outcome.dice.won) == (roll, won)
    payout = 1100 if won else 0
    assert completed.payout.amount_minor == payout
    assert len(completed.record_hash) == 64  # archived

    # The RNG drew once, before the crash, and the round holds that draw: never re-drawn.
    replay = await rng_replay(clients.rng, completed.rng_round_id)
    assert replay.round.draw_count == 1
    assert replay.round.state == rng_pb.ROUND_STATE_CLOSED
    assert values(replay.archived) == list(completed.draws)
    assert replay.matches and values(replay.recomputed) == list(completed.draws)

    # The stake was taken once and the win paid once.
    bet, win = await round_transactions(clients, player, round_id)
    assert (bet.kind, bet.amount.amount_minor) == (BET, -1000)
    assert (win.kind, win.amount.amount_minor) == (WIN, payout)
    assert win.bet_request_id == bet.request_id
    assert (completed.bet_transaction_id, completed.settle_transaction_id) == (
        bet.request_id,
        win.request_id,
    )
    balance = await clients.balance(player)
    assert balance.posted_minor == DEPOSIT - 1000 + payout
    assert completed.balance_after_minor == balance.available_minor
    # Whoever finished the round counted it in the player's session, once.
    shown = (
        await stub.GetSession(pb.GetSessionRequest(player_id=player, session_id=session.session_id))
    ).session
    assert (shown.rounds_played, shown.net_position_minor) == (1, payout - 1000)
    assert shown.balance_minor == balance.available_minor

    # The player's retry gets the same round; nothing is drawn or paid again.
    retried = await stub.PlayRound(request)
    assert retried.replayed
    assert retried.round.state == pb.ROUND_STATE_COMPLETED
    assert list(retried.round.draws) == list(completed.draws)
    assert retried.round.payout.amount_minor == payout
    assert len(await round_transactions(clients, player, round_id)) == 2
    assert (await clients.balance(player)).posted_minor == DEPOSIT - 1000 + payout
    assert (await rng_replay(clients.rng, completed.rng_round_id)).round.draw_count == 1
    assert (
        await stub.GetSession(pb.GetSessionRequest(player_id=player, session_id=session.session_id))
    ).session.rounds_played == 1


# ------------------------------------------------------------- a new sampling version deployed


@pytest.mark.timeout(300)  # waits out a production-length lease
async def test_a_round_opened_under_one_sampling_version_completes_under_it_after_a_new_one_is_deployed(  # noqa: E501
    launcher: Launcher, upstreams: Upstreams, clients: Clients, rng_stubs: Any
) -> None:
    rng_v1 = start_rng(launcher, upstreams, "rng-v1", SAMPLING_V1)
    player = await clients.player(deposit=DEPOSIT)
    bet = dice_bet(stake=100, target=9000)

    # Under v1: round A completes normally.
    games_v1 = start_games(launcher, upstreams, "games-v1", rng=rng_v1)
    session = await start_session(clients.games(games_v1), player, "dice")
    played = await clients.games(games_v1).PlayRound(play(player, session, uuid.uuid4().hex, bet))
    a = played.round
    assert a.state == pb.ROUND_STATE_COMPLETED
    assert a.rng_versions.sampling == SAMPLING_V1
    games_v1.terminate()

    # Under v1: round B is drawn, and its process dies before the win is paid; round C is
    # opened and debited, and its process dies before the draw. Their leases are
    # production's (30 s): both are still unfinished when version 2 arrives below.
    doomed = start_games(
        launcher,
        upstreams,
        "games-b",
        rng=rng_v1,
        failpoints={"games.after_draw": "kill"},
        lease_seconds=PRODUCTION_LEASE_SECONDS,
    )
    b_request = play(player, session, uuid.uuid4().hex, bet)
    await play_and_lose_the_process(clients.games(doomed), doomed, b_request)
    b_id = round_id_for(player, b_request.request_id)
    doomed = start_games(
        launcher,
        upstreams,
        "games-c",
        rng=rng_v1,
        failpoints={"games.after_debit": "kill"},
        lease_seconds=PRODUCTION_LEASE_SECONDS,
    )
    c_request = play(player, session, uuid.uuid4().hex, bet)
    await play_and_lose_the_process(clients.games(doomed), doomed, c_request)
    c_id = round_id_for(player, c_request.request_id)

    # Version 2 is deployed: the v1 RNG is replaced by one opening new rounds under v2, and
    # games runs against it.
    rng_v1.terminate()
    rng_v2 = start_rng(launcher, upstreams, "rng-v2", SAMPLING_V2)
    deployed_at = dt.datetime.now(dt.UTC)
    rng = rng_stubs(rng_v2)
    listed = await rng.ListVersions(rng_pb.ListVersionsRequest())
    current = {v.version for v in listed.versions if v.current}
    assert SAMPLING_V2 in current and SAMPLING_V1 not in current
    games_v2 = start_games(launcher, upstreams, "games-v2", rng=rng_v2)
    stub = clients.games(games_v2)
    backoffice = clients.games(games_v2, "backoffice")

    # B was drawn under v1, and not yet paid, when v2 arrived: the RNG holds its one draw.
    b_before = await get_round(stub, player, b_id)
    assert b_before.state == pb.ROUND_STATE_DRAWN
    assert b_before.rng_versions.sampling == SAMPLING_V1
    assert len(b_before.draws) == 1
    b_rng = (await rng_replay(rng, b_before.rng_round_id)).round
    assert (b_rng.draw_count, b_rng.versions.sampling) == (1, SAMPLING_V1)
    # C was debited and not drawn when v2 arrived.
    c_before = await get_round(stub, player, c_id)
    assert c_before.state == pb.ROUND_STATE_OPEN
    assert list(c_before.draws) == []

    # The player retries C: it is drawn now, with v2 deployed, and under v1, which its RNG
    # round was opened under before v2 existed.
    retried = await stub.PlayRound(c_request)
    assert retried.replayed
    c = retried.round
    assert c.state == pb.ROUND_STATE_COMPLETED
    assert c.rng_versions.sampling == SAMPLING_V1
    c_rng = (await rng_replay(rng, c.rng_round_id)).round
    assert (c_rng.draw_count, c_rng.versions.sampling) == (1, SAMPLING_V1)
    assert c_rng.open_time.ToDatetime(dt.UTC) < deployed_at
    assert c_rng.close_time.ToDatetime(dt.UTC) > deployed_at

    # B is recovered once its lease runs out: the win of its v1 draw is paid, and nothing
    # is drawn again.
    b = await wait_until_finished(
        stub, player, b_id, timeout=PRODUCTION_LEASE_SECONDS + RECOVERY_TIMEOUT_SECONDS
    )
    assert b.state == pb.ROUND_STATE_COMPLETED
    assert b.rng_round_id == b_before.rng_round_id
    assert b.rng_versions.sampling == SAMPLING_V1
    assert list(b.draws) == list(b_before.draws)

    # A new round opens under v2.
    d = (await stub.PlayRound(play(player, session, uuid.uuid4().hex, bet))).round
    assert d.state == pb.ROUND_STATE_COMPLETED
    assert d.rng_versions.sampling == SAMPLING_V2

    expected_sampling = {"A": SAMPLING_V1, "B": SAMPLING_V1, "C": SAMPLING_V1, "D": SAMPLING_V2}
    rounds = {"A": a, "B": b, "C": c, "D": d}
    posted = DEPOSIT
    for name, r in rounds.items():
        archived = await get_round(stub, player, uuid.UUID(r.round_id))
        assert archived.state == pb.ROUND_STATE_COMPLETED, name
        assert archived.rng_versions.sampling == expected_sampling[name], name
        assert list(archived.draws) == list(r.draws) and len(r.draws) == 1, name
        # The RNG (the v2 deployment) holds one draw, made and replayed under the round's
        # own version.
        replay = await rng_replay(rng, r.rng_round_id)
        assert replay.round.versions.sampling == expected_sampling[name], name
        assert (replay.round.draw_count, replay.round.state) == (
            1,
            rng_pb.ROUND_STATE_CLOSED,
        ), name
        assert values(replay.archived) == values(replay.recomputed) == list(r.draws), name
        assert replay.matches, name
        # An auditor's replay of the archived round re-derives the same draw and outcome.
        audit = await backoffice.ReplayRound(
            pb.ReplayRoundRequest(player_id=player, round_id=r.round_id)
        )
        assert audit.matches and list(audit.problems) == [], (name, list(audit.problems))
        assert list(audit.recomputed_draws) == list(r.draws), name
        assert audit.recomputed_outcome == archived.outcome, name
        assert audit.recomputed_payout.amount_minor == archived.payout.amount_minor, name
        # The wallet took the stake once and paid the outcome once.
        kinds = [
            (t.kind, t.amount.amount_minor)
            for t in await round_transactions(clients, player, uuid.UUID(r.round_id))
        ]
        assert kinds == [(BET, -100), (WIN, archived.payout.amount_minor)], name
        posted += archived.payout.amount_minor - 100
    assert (await clients.balance(player)).posted_minor == posted
