"""Sessions as a player meets them: the rules they play under hold per player, however many
sessions they open (slot spin spacing, the reality-check clock), and a StartSession
request_id stands for one launch only."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import grpc
import pytest

from casino.games.v1 import games_pb2 as pb
from services.runtime.status import error_info
from tests.games.conftest import Clients, dice_bet, start_session
from tests.games.test_rounds import make_reality_check_due, play, refused

pytestmark = pytest.mark.asyncio

SPIN = pb.Bet(slot=pb.SlotSpin(line_bet_minor=1))


def launch(player: str, request_id: str, game_id: str, currency: str = "GBP"):  # type: ignore[no-untyped-def]
    return pb.StartSessionRequest(
        player_id=player,
        request_id=request_id,
        game_id=game_id,
        currency_code=currency,
        request_country_code="GB",
    )


async def test_slot_spin_spacing_holds_across_all_of_a_players_sessions(
    games, clients: Clients
) -> None:
    stub = clients.games(games)
    player = await clients.player(deposit=10_000)
    sessions = [await start_session(stub, player, "slot") for _ in range(3)]
    # Three spins at once, one per session: one plays, the others wait their turn.
    answers = await asyncio.gather(
        *(play(stub, player, s, SPIN) for s in sessions), return_exceptions=True
    )
    played = [a for a in answers if isinstance(a, pb.PlayRoundResponse)]
    assert len(played) == 1, answers
    assert played[0].round.state == pb.ROUND_STATE_COMPLETED
    for answer in answers:
        if isinstance(answer, pb.PlayRoundResponse):
            continue
        assert isinstance(answer, grpc.aio.AioRpcError), answer
        info = error_info(answer)
        assert info is not None and info.reason == "SPIN_TOO_SOON", answer
    # A session opened afterwards is no way round it either.
    fresh = await start_session(stub, player, "slot")
    code, reason, meta = await refused(play(stub, player, fresh, SPIN))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "SPIN_TOO_SOON")
    await asyncio.sleep(int(meta["retry_after_ms"]) / 1000 + 0.05)
    assert (await play(stub, player, fresh, SPIN)).round.state == pb.ROUND_STATE_COMPLETED
    # The spacing is the slot's: a table game in between is not held up.
    dice = await start_session(stub, player, "dice")
    assert (await play(stub, player, dice, dice_bet())).round.state == pb.ROUND_STATE_COMPLETED


async def test_a_new_session_does_not_reset_a_reality_check_that_is_due(
    games, clients: Clients
) -> None:
    stub = clients.games(games)
    player = await clients.player()
    first = await start_session(stub, player, "dice")
    await make_reality_check_due(player)
    code, reason, _ = await refused(play(stub, player, first, dice_bet()))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "REALITY_CHECK_DUE")
    # Another session, of another game: the check is still due there.
    second = await start_session(stub, player, "roulette")
    assert second.reality_check.next_check_time.ToDatetime(dt.UTC) <= dt.datetime.now(dt.UTC)
    roulette = pb.Bet(
        roulette=pb.RouletteSpin(
            bets=[pb.RouletteBet(kind=pb.ROULETTE_BET_KIND_RED, stake_minor=10)]
        )
    )
    code, reason, meta = await refused(play(stub, player, second, roulette))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "REALITY_CHECK_DUE")
    assert meta["session_id"] == second.session_id
    # Acknowledged in one session, it is acknowledged for the player: both play on.
    acknowledged = (
        await stub.AcknowledgeRealityCheck(
            pb.AcknowledgeRealityCheckRequest(player_id=player, session_id=second.session_id)
        )
    ).session
    next_check = acknowledged.reality_check.next_check_time
    assert next_check.ToDatetime(dt.UTC) > dt.datetime.now(dt.UTC)
    assert (await play(stub, player, second, roulette)).round.state == pb.ROUND_STATE_COMPLETED
    after = await play(stub, player, first, dice_bet())
    assert after.round.state == pb.ROUND_STATE_COMPLETED
    assert after.session.reality_check.next_check_time == next_check


async def test_a_start_session_request_id_stands_for_one_launch(games, clients: Clients) -> None:
    stub = clients.games(games)
    player = await clients.player()
    request_id = uuid.uuid4().hex
    dice = (await stub.StartSession(launch(player, request_id, "dice"))).session
    again = (await stub.StartSession(launch(player, request_id, "dice"))).session
    assert again.session_id == dice.session_id
    for other in (
        launch(player, request_id, "roulette"),
        launch(player, request_id, "dice", "EUR"),
    ):
        code, reason, meta = await refused(stub.StartSession(other))
        assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "IDEMPOTENCY_MISMATCH")
        assert meta["idempotency_key"] == request_id
    # The original launch is unaffected by the refused ones.
    replayed = (await stub.StartSession(launch(player, request_id, "dice"))).session
    assert (replayed.session_id, replayed.game_id) == (dice.session_id, "dice")
