"""Self-exclusion closes the games: compliance's PlayerExcluded event, consumed from
RabbitMQ, ends every live session of the player, and only theirs; a late redelivery of the
same event does not end a session opened after it."""

from __future__ import annotations

import asyncio
import time
import uuid

import grpc
import pytest

from casino.games.v1 import games_pb2 as pb
from services.runtime.status import error_info
from tests.games.conftest import Clients, dice_bet, start_session
from tests.support.amqp import publish_player_excluded

QUEUE = "games.sessions"  # the games service's default exclusion queue


async def _ended(stub, player: str, session: pb.Session) -> bool:
    reply = await stub.GetSession(
        pb.GetSessionRequest(player_id=player, session_id=session.session_id)
    )
    return reply.session.ended


async def _wait_until_ended(stub, player: str, session: pb.Session) -> None:
    deadline = time.monotonic() + 15
    while not await _ended(stub, player, session):
        assert time.monotonic() < deadline, "the exclusion event did not end the session"
        await asyncio.sleep(0.1)


async def test_player_excluded_event_ends_every_session_of_the_player(
    games, clients: Clients
) -> None:
    stub = clients.games(games)
    player, other = await clients.player(), await clients.player()
    dice, slot = (
        await start_session(stub, player, "dice"),
        await start_session(stub, player, "slot"),
    )
    theirs = await start_session(stub, other, "dice")

    await publish_player_excluded(QUEUE, player)
    await _wait_until_ended(stub, player, dice)
    assert await _ended(stub, player, slot)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.PlayRound(
            pb.PlayRoundRequest(
                player_id=player,
                session_id=dice.session_id,
                request_id=uuid.uuid4().hex,
                bet=dice_bet(),
            )
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(refused.value).reason == "SESSION_ENDED"
    # Another player's session plays on.
    assert not await _ended(stub, other, theirs)
    reply = await stub.PlayRound(
        pb.PlayRoundRequest(
            player_id=other,
            session_id=theirs.session_id,
            request_id=uuid.uuid4().hex,
            bet=dice_bet(),
        )
    )
    assert reply.round.state == pb.ROUND_STATE_COMPLETED


async def test_a_late_redelivery_does_not_end_a_session_opened_since(
    games, clients: Clients
) -> None:
    stub = clients.games(games)
    player = await clients.player()
    first = await start_session(stub, player, "dice")
    event_id = await publish_player_excluded(QUEUE, player)
    await _wait_until_ended(stub, player, first)

    # The exclusion ran out (here: compliance never knew of it) and the player plays again;
    # the broker then delivers the old event a second time.
    later = await start_session(stub, player, "dice")
    await publish_player_excluded(QUEUE, player, event_id)
    # A fresh event for another player, queued behind the duplicate, is handled after it
    # (one consumer takes the queue in order): once it has ended that player's session,
    # the duplicate has been handled too.
    marker_player = await clients.player()
    marker = await start_session(stub, marker_player, "dice")
    await publish_player_excluded(QUEUE, marker_player)
    await _wait_until_ended(stub, marker_player, marker)
    assert not await _ended(stub, player, later)
