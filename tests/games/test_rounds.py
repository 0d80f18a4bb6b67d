"""Rounds end to end: a session, the compliance check, the stake, the draw, the win and the
archive, against the real compliance, wallet and RNG services."""

from __future__ import annotations

import asyncio
import datetime as dt
import urllib.request
import uuid

import grpc
import pytest
from redis.asyncio import Redis

from casino.compliance.v1 import compliance_pb2
from casino.games.v1 import games_pb2 as pb
from casino.wallet.v1 import wallet_pb2
from services.games.lifecycle import round_id_for
from services.runtime.status import error_info
from tests.conftest import Launcher
from tests.games.conftest import REDIS_URL, Clients, dice_bet, games_extra, start_session
from tests.rng.conftest import rng_extra
from tests.support.edge_player import AsEdgePlayer

pytestmark = pytest.mark.asyncio


def archived_rounds(process, game_id: str) -> float:
    """The games service's count of archived COMPLETED rounds of a game, from /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{process.ports['metrics_port']}/metrics")
    prefix = f'casino_games_rounds_archived_total{{game="{game_id}",state="COMPLETED"}}'
    for line in text.read().decode().splitlines():
        if line.startswith(prefix):
            return float(line.split()[-1])
    return 0.0


async def test_a_dice_round_debits_the_stake_credits_the_win_and_is_archived(
    games, clients: Clients
) -> None:
    stub = clients.games(games)
    archived_before = archived_rounds(games, "dice")
    player = await clients.player(deposit=10_000)
    session = await start_session(stub, player, "dice")
    assert session.balance_minor == 10_000

    reply = await stub.PlayRound(
        pb.PlayRoundRequest(
            player_id=player,
            session_id=session.session_id,
            request_id=uuid.uuid4().hex,
            bet=dice_bet(stake=100, target=5000),
        )
    )
    r = reply.round
    assert r.state == pb.ROUND_STATE_COMPLETED
    assert r.stake.amount_minor == 100 and r.stake.currency_code == "GBP"
    won = r.outcome.dice.roll < 5000
    assert r.outcome.dice.won is won
    assert r.payout.amount_minor == (198 if won else 0)
    assert len(r.draws) == 1 and r.draws[0] == r.outcome.dice.roll
    assert r.record_hash == ""  # a live answer; the archive holds the hash
    balance = await clients.balance(player)
    assert balance.posted_minor == 10_000 - 100 + r.payout.amount_minor
    assert r.balance_after_minor == balance.available_minor
    assert reply.session.rounds_played == 1
    assert reply.session.net_position_minor == r.payout.amount_minor - 100

    assert archived_rounds(games, "dice") == archived_before + 1

    fetched = (await stub.GetRound(pb.GetRoundRequest(player_id=player, round_id=r.round_id))).round
    assert fetched.state == pb.ROUND_STATE_COMPLETED
    assert len(fetched.record_hash) == 64
    assert fetched.outcome == r.outcome


async def test_insufficient_funds_voids_the_round_and_moves_no_money(
    games, clients: Clients
) -> None:
    stub = clients.games(games)
    player = await clients.player(deposit=50)
    session = await start_session(stub, player, "dice")
    request_id = uuid.uuid4().hex
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.PlayRound(
            pb.PlayRoundRequest(
                player_id=player,
                session_id=session.session_id,
                request_id=request_id,
                bet=dice_bet(stake=100),
            )
        )
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(raised.value).reason == "INSUFFICIENT_FUNDS"
    assert (await clients.balance(player)).posted_minor == 50


async def play(stub, player: str, session: pb.Session, bet: pb.Bet, request_id: str = ""):
    return await stub.PlayRound(
        pb.PlayRoundRequest(
            player_id=player,
            session_id=session.session_id,
            request_id=request_id or uuid.uuid4().hex,
            bet=bet,
        )
    )


async def make_reality_check_due(player: str) -> None:
    """Fast-forward the player's reality-check clock: the check fell due a moment ago."""
    redis = Redis.from_url(REDIS_URL)
    past = int((dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)).timestamp() * 1000)
    assert await redis.exists(f"games:reality-check:{{{player}}}")
    await redis.hset(f"games:reality-check:{{{player}}}", "next_check_ms", past)
    await redis.aclose()


async def refused(call) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    info = error_info(raised.value)
    assert info is not None, raised.value
    return raised.value.code(), info.reason, dict(info.metadata)


async def test_a_retried_round_returns_the_same_round_and_moves_money_once(
    games, clients: Clients
) -> None:
    stub = clients.games(games)
    player = await clients.player(deposit=10_000)
    session = await start_session(stub, player, "dice")
    request_id = uuid.uuid4().hex
    first = await play(stub, player, session, dice_bet(stake=250), request_id)
    again = await play(stub, player, session, dice_bet(stake=250), request_id)
    assert again.replayed and not first.replayed
    assert again.round.round_id == first.round.round_id
    assert again.round.draws == first.round.draws
    kinds = [t.kind for t in await clients.transactions(player)]
    assert kinds.count(wallet_pb2.TRANSACTION_KIND_BET) == 1
    assert kinds.count(wallet_pb2.TRANSACTION_KIND_WIN) == 1
    assert again.session.rounds_played == 1

    code, reason, _ = await refused(play(stub, player, session, dice_bet(stake=300), request_id))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "IDEMPOTENCY_MISMATCH")
    assert len(await clients.transactions(player)) == len(kinds)


async def test_roulette_settles_every_bet_on_the_table_from_one_pocket(
    games, clients: Clients
) -> None:
    stub = clients.games(games)
    player = await clients.player(deposit=10_000)
    session = await start_session(stub, player, "roulette")
    spin = pb.RouletteSpin(
        bets=[
            pb.RouletteBet(kind=pb.ROULETTE_BET_KIND_STRAIGHT, stake_minor=10, numbers=[17]),
            pb.RouletteBet(kind=pb.ROULETTE_BET_KIND_RED, stake_minor=20),
            pb.RouletteBet(kind=pb.ROULETTE_BET_KIND_DOZEN, stake_minor=30, numbers=[2]),
        ]
    )
    r = (await play(stub, player, session, pb.Bet(roulette=spin))).round
    pocket = r.outcome.roulette.pocket
    red = {1, 3, 5, 7, 9, 12, 14, 16, 18, 19, 21, 23, 25, 27, 30, 32, 34, 36}
    expected = [
        360 if pocket == 17 else 0,
        40 if pocket in red else 0,
        90 if 13 <= pocket <= 24 else 0,
    ]
    assert list(r.outcome.roulette.bet_returns_minor) == expected
    assert r.stake.amount_minor == 60 and r.payout.amount_minor == sum(expected)
    assert (await clients.balance(player)).posted_minor == 10_000 - 60 + sum(expected)


async def test_slot_spins_are_spaced_by_the_minimum_interval(games, clients: Clients) -> None:
    stub = clients.games(games)
    player = await clients.player(deposit=10_000)
    session = await start_session(stub, player, "slot")
    spin = pb.Bet(slot=pb.SlotSpin(line_bet_minor=5))
    first = (await play(stub, player, session, spin)).round
    assert first.stake.amount_minor == 50
    assert len(first.outcome.slot.stops) == 5 and len(first.outcome.slot.rows) == 3
    code, reason, meta = await refused(play(stub, player, session, spin))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "SPIN_TOO_SOON")
    assert 0 < int(meta["retry_after_ms"]) <= 2500 and meta["min_interval_ms"] == "2500"
    await asyncio.sleep(int(meta["retry_after_ms"]) / 1000 + 0.05)
    second = (await play(stub, player, session, spin)).round
    assert second.state == pb.ROUND_STATE_COMPLETED
    # Dice is not a slot: no spacing.
    dice_session = await start_session(stub, player, "dice")
    await play(stub, player, dice_session, dice_bet())
    await play(stub, player, dice_session, dice_bet())


async def test_compliance_refuses_a_slot_stake_over_the_young_adult_cap_before_any_debit(
    games, clients: Clients
) -> None:
    stub = clients.games(games)
    young = await clients.player(deposit=10_000, birth_year=dt.date.today().year - 20)
    session = await start_session(stub, young, "slot")
    # 10 lines x 25 = 2.50 GBP, over the 2.00 GBP cap for 18-24 year olds.
    code, reason, meta = await refused(
        play(stub, young, session, pb.Bet(slot=pb.SlotSpin(line_bet_minor=25)))
    )
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "BET_REFUSED")
    assert "STAKE_CAP_EXCEEDED" in meta["reasons"].split(",") and meta["verdict_id"]
    kinds = [t.kind for t in await clients.transactions(young)]
    assert kinds == [wallet_pb2.TRANSACTION_KIND_DEPOSIT]
    # The refused spin did not use up the spin interval.
    allowed = (await play(stub, young, session, pb.Bet(slot=pb.SlotSpin(line_bet_minor=20)))).round
    assert allowed.state == pb.ROUND_STATE_COMPLETED


async def test_a_refused_bets_request_id_used_again_for_another_bet_is_a_mismatch(
    games, clients: Clients
) -> None:
    stub = clients.games(games)
    young = await clients.player(deposit=10_000, birth_year=dt.date.today().year - 20)
    session = await start_session(stub, young, "slot")
    request_id = uuid.uuid4().hex
    over_cap = pb.Bet(slot=pb.SlotSpin(line_bet_minor=25))
    code, reason, _ = await refused(play(stub, young, session, over_cap, request_id))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "BET_REFUSED")
    # Compliance decided that request_id already: another stake under it is its mismatch,
    # passed on as compliance answered it.
    within = pb.Bet(slot=pb.SlotSpin(line_bet_minor=20))
    code, reason, _ = await refused(play(stub, young, session, within, request_id))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "IDEMPOTENCY_MISMATCH")
    assert [t.kind for t in await clients.transactions(young)] == [
        wallet_pb2.TRANSACTION_KIND_DEPOSIT
    ]
    # Neither used up the spin interval; a fresh request_id plays.
    allowed = (await play(stub, young, session, within)).round
    assert allowed.state == pb.ROUND_STATE_COMPLETED


async def test_a_self_excluded_player_cannot_launch_a_game(games, clients: Clients) -> None:
    stub = clients.games(games)
    player = await clients.player()
    await clients.compliance["backoffice"].Exclude(
        compliance_pb2.ExcludeRequest(player_id=player, self_exclusion_days=183)
    )
    code, reason, meta = await refused(start_session(stub, player, "dice"))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "BET_REFUSED")
    assert "SELF_EXCLUDED" in meta["reasons"]


async def test_play_stops_when_a_reality_check_is_due_until_it_is_acknowledged(
    games, clients: Clients
) -> None:
    stub = clients.games(games)
    player = await clients.player()
    session = await start_session(stub, player, "dice")
    assert session.reality_check.interval_minutes > 0
    await make_reality_check_due(player)
    code, reason, meta = await refused(play(stub, player, session, dice_bet()))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "REALITY_CHECK_DUE")
    assert meta["session_id"] == session.session_id
    acknowledged = (
        await stub.AcknowledgeRealityCheck(
            pb.AcknowledgeRealityCheckRequest(player_id=player, session_id=session.session_id)
        )
    ).session
    assert acknowledged.reality_check.next_check_time.ToDatetime(dt.UTC) > dt.datetime.now(dt.UTC)
    assert (await play(stub, player, session, dice_bet())).round.state == pb.ROUND_STATE_COMPLETED


async def test_a_session_belongs_to_its_player(games, clients: Clients) -> None:
    stub = clients.games(games)
    owner, other = await clients.player(), await clients.player()
    session = await start_session(stub, owner, "dice")
    code, reason, _ = await refused(
        stub.PlayRound(
            pb.PlayRoundRequest(
                player_id=other,
                session_id=session.session_id,
                request_id=uuid.uuid4().hex,
                bet=dice_bet(),
            )
        )
    )
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND")
    # Through the edge, a player cannot name another player at all.
    edge_as_other = AsEdgePlayer(clients.games(games, "edge")._stub, other)
    code, reason, _ = await refused(
        edge_as_other.GetSession(
            pb.GetSessionRequest(player_id=owner, session_id=session.session_id)
        )
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "PLAYER_MISMATCH")


async def test_bad_bets_are_refused_with_the_field_named_and_change_nothing(
    games, clients: Clients
) -> None:
    stub = clients.games(games)
    player = await clients.player(deposit=10_000)
    session = await start_session(stub, player, "dice")
    cases = [
        (pb.Bet(slot=pb.SlotSpin(line_bet_minor=5)), "bet"),
        (dice_bet(stake=0), "bet.stake"),
        (dice_bet(target=10_000), "bet.target"),
        (pb.Bet(dice=pb.DiceBet(stake_minor=100, target=10)), "bet.dice.direction"),
        (dice_bet(stake=5), "bet"),  # under the minimum stake
    ]
    for bet, field in cases:
        code, reason, meta = await refused(play(stub, player, session, bet))
        assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT"), bet
        assert meta["field"] == field, (bet, meta)
    code, reason, _ = await refused(
        stub.PlayRound(
            pb.PlayRoundRequest(player_id=player, session_id=session.session_id, bet=dice_bet())
        )
    )
    assert reason == "IDEMPOTENCY_KEY_REQUIRED"
    code, reason, _ = await refused(
        stub.StartSession(
            pb.StartSessionRequest(
                player_id=player,
                request_id="x",
                game_id="poker",
                currency_code="GBP",
                request_country_code="GB",
            )
        )
    )
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "GAME_NOT_FOUND")
    assert len(await clients.transactions(player)) == 1  # the deposit


async def test_the_lobby_lists_each_game_with_its_version_and_exact_rtp(
    games, clients: Clients
) -> None:
    reply = await clients.games(games, "backoffice").ListGames(pb.ListGamesRequest())
    by_id = {g.game_id: g for g in reply.games}
    assert set(by_id) == {"dice", "roulette", "slot"}
    assert by_id["dice"].rtp_fraction == "99/100" and by_id["dice"].rtp_percent == "99.0000"
    assert by_id["roulette"].rtp_fraction == "36/37"
    assert by_id["slot"].min_round_interval_ms == 2500
    assert by_id["dice"].provably_fair and not by_id["slot"].provably_fair


async def test_an_unhealthy_rng_makes_the_game_unavailable_and_debits_nothing(
    tmp_path, pki, upstreams, clients: Clients
) -> None:
    launcher = Launcher(tmp_path, pki, [])
    try:
        broken = launcher("rng", extra=rng_extra(tmp_path, settings='self_test_fail = "forced"'))
        games = launcher(
            "games", extra=games_extra(upstreams, tmp_path, rng_port=broken.ports["port"])
        )
        stub = clients.games(games)
        player = await clients.player(deposit=1_000)
        session = await start_session(stub, player, "dice")
        request_id = uuid.uuid4().hex
        code, reason, _ = await refused(play(stub, player, session, dice_bet(), request_id))
        assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "GAME_UNAVAILABLE")
        assert (await clients.balance(player)).posted_minor == 1_000
        # No stake; a rollback with nothing to undo stands where it would have been, so a
        # debit still in flight from another attempt could never land.
        listed = [(t.kind, t.amount.amount_minor) for t in await clients.transactions(player)]
        assert listed == [
            (wallet_pb2.TRANSACTION_KIND_BET_ROLLBACK, 0),
            (wallet_pb2.TRANSACTION_KIND_DEPOSIT, 1_000),
        ]
        voided = (
            await stub.GetRound(
                pb.GetRoundRequest(player_id=player, round_id=str(round_id_for(player, request_id)))
            )
        ).round
        assert voided.state == pb.ROUND_STATE_VOIDED and voided.void_reason == "GAME_UNAVAILABLE"
        # Provably-fair play needs the RNG's commitment: the RNG's refusal reaches the player
        # with its own status and reason.
        code, reason, _ = await refused(
            stub.GetFairSeed(pb.GetFairSeedRequest(player_id=player, game_id="dice"))
        )
        assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "RNG_UNHEALTHY")
        code, reason, _ = await refused(start_session(stub, player, "dice", client_seed="lucky"))
        assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "RNG_UNHEALTHY")
    finally:
        for process in launcher.started:
            process.terminate()
