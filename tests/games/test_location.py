"""The country a session plays from is where the edge located the client, not what the
client states: a player in a country the licence does not cover cannot start a session by
claiming another, and one located in a covered country plays whatever the client sent."""

from __future__ import annotations

import uuid

import grpc
import pytest

from casino.games.v1 import games_pb2 as pb
from services.runtime.call import CLIENT_COUNTRY_METADATA
from services.runtime.status import error_info
from tests.games.conftest import Clients


def _start(player: str, claimed: str) -> pb.StartSessionRequest:
    return pb.StartSessionRequest(
        player_id=player,
        request_id=uuid.uuid4().hex,
        game_id="dice",
        currency_code="GBP",
        request_country_code=claimed,
    )


async def test_a_client_located_outside_the_licence_cannot_claim_its_way_in(
    games, clients: Clients
) -> None:
    stub = clients.games(games)
    player = await clients.player()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.StartSession(_start(player, "GB"), metadata=((CLIENT_COUNTRY_METADATA, "US"),))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(refused.value)
    assert info.reason == "BET_REFUSED"
    assert "JURISDICTION_BLOCKED" in info.metadata["reasons"]
    assert info.metadata["country"] == "US"


async def test_the_located_country_is_the_sessions_whatever_the_client_says(
    games, clients: Clients
) -> None:
    stub = clients.games(games)
    player = await clients.player()
    located = await stub.StartSession(
        _start(player, "US"), metadata=((CLIENT_COUNTRY_METADATA, "MT"),)
    )
    assert located.session.request_country_code == "MT"
    # Not located (no geo data for the address): the client's statement is what there is.
    stated = await stub.StartSession(_start(player, "IE"))
    assert stated.session.request_country_code == "IE"
