"""Player identity across the mesh, over real mTLS: the wallet believes the player named in
x-casino-player-id only from the edge's certificate, and a player's call through the edge
may only read that player's own money."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from casino.wallet.v1 import wallet_pb2 as w
from casino.wallet.v1 import wallet_pb2_grpc
from services.runtime.call import PLAYER_METADATA
from services.runtime.client import secure_channel
from services.runtime.process import ServiceProcess
from services.runtime.status import error_info
from tests.conftest import Pki


@pytest.fixture
async def raw() -> AsyncIterator[Callable[[str], Any]]:
    """Plain wallet stubs per identity, sending exactly the metadata a test gives."""
    channels: list[grpc.aio.Channel] = []

    def make(identity: str, wallet_port: int, pki: Pki) -> wallet_pb2_grpc.WalletServiceStub:
        channel = secure_channel(
            f"127.0.0.1:{wallet_port}", pki.tls(identity), "wallet", default_timeout=10
        )
        channels.append(channel)
        return wallet_pb2_grpc.WalletServiceStub(channel)

    yield make  # type: ignore[misc]
    for channel in channels:
        await channel.close()


def _as(player: str) -> tuple[tuple[str, str], ...]:
    return ((PLAYER_METADATA, player),)


async def _refusal(call: Any) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call
    info = error_info(failure.value)
    assert info is not None
    return failure.value.code(), info.reason, dict(info.metadata)


async def test_edge_call_for_the_requests_own_player_is_served(
    wallet: ServiceProcess, pki: Pki, raw: Any, player: Any
) -> None:
    alice = await player(balance=1_500)
    edge = raw("edge", wallet.ports["port"], pki)
    reply = await edge.GetBalance(
        w.GetBalanceRequest(player_id=alice, currency_code="EUR"), metadata=_as(alice)
    )
    assert reply.balance.available_minor == 1_500
    page = await edge.ListTransactions(
        w.ListTransactionsRequest(player_id=alice), metadata=_as(alice)
    )
    assert len(page.transactions) == 1


async def test_edge_call_for_another_player_is_refused_with_player_mismatch(
    wallet: ServiceProcess, pki: Pki, raw: Any, player: Any
) -> None:
    alice, mallory = await player(balance=1_500), await player()
    edge = raw("edge", wallet.ports["port"], pki)
    code, reason, metadata = await _refusal(
        edge.GetBalance(
            w.GetBalanceRequest(player_id=alice, currency_code="EUR"), metadata=_as(mallory)
        )
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "PLAYER_MISMATCH")
    assert metadata["player_id"] == alice
    assert metadata["rpc"] == "/casino.wallet.v1.WalletService/GetBalance"
    code, reason, _ = await _refusal(
        edge.ListTransactions(w.ListTransactionsRequest(player_id=alice), metadata=_as(mallory))
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "PLAYER_MISMATCH")


async def test_edge_call_without_an_authenticated_player_is_refused(
    wallet: ServiceProcess, pki: Pki, raw: Any, player: Any
) -> None:
    alice = await player(balance=100)
    edge = raw("edge", wallet.ports["port"], pki)
    code, reason, _ = await _refusal(
        edge.GetBalance(w.GetBalanceRequest(player_id=alice, currency_code="EUR"))
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "PLAYER_MISMATCH")
    # Two players in one call is not a player: refused before the handler.
    code, reason, _ = await _refusal(
        edge.GetBalance(
            w.GetBalanceRequest(player_id=alice, currency_code="EUR"),
            metadata=(*_as(alice), *_as("someone-else")),
        )
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED")


async def test_other_services_act_for_any_player_but_cannot_claim_to_be_one(
    wallet: ServiceProcess, pki: Pki, raw: Any, player: Any
) -> None:
    alice = await player(balance=700)
    games = raw("games", wallet.ports["port"], pki)
    # A service is trusted by its certificate and contract: no player metadata needed.
    reply = await games.GetBalance(w.GetBalanceRequest(player_id=alice, currency_code="EUR"))
    assert reply.balance.available_minor == 700
    # Naming a player is the edge's alone: a service sending the header is refused, so it
    # can never pass for a player (nor pass one off through a handler that believes it).
    code, reason, metadata = await _refusal(
        games.GetBalance(
            w.GetBalanceRequest(player_id=alice, currency_code="EUR"), metadata=_as(alice)
        )
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED")
    assert metadata["caller"] == "games"
