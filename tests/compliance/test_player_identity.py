"""A player's call through the edge may only change or read that player's own
responsible-gambling settings (the handlers check the edge-authenticated player)."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest

from casino.compliance.v1 import compliance_pb2 as pb
from services.runtime.call import PLAYER_METADATA
from services.runtime.status import error_info
from tests.support.edge_player import AsEdgePlayer


async def test_edge_call_for_another_player_is_refused(stubs: dict[str, Any]) -> None:
    victim = f"player-{uuid.uuid4().hex[:12]}"
    mallory = AsEdgePlayer(stubs["edge"]._stub, player_id=f"player-{uuid.uuid4().hex[:12]}")
    for call in (
        mallory.ListLimits(pb.ListLimitsRequest(player_id=victim)),
        mallory.Exclude(pb.ExcludeRequest(player_id=victim, indefinite=True)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await call
        assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED
        info = error_info(failure.value)
        assert info is not None and info.reason == "PLAYER_MISMATCH"
        assert info.metadata["player_id"] == victim


async def test_non_edge_caller_naming_a_player_is_refused(stubs: dict[str, Any]) -> None:
    player = f"player-{uuid.uuid4().hex[:12]}"
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await stubs["backoffice"].ListLimits(
            pb.ListLimitsRequest(player_id=player), metadata=((PLAYER_METADATA, player),)
        )
    assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info(failure.value).reason == "CALLER_NOT_ALLOWED"  # type: ignore[union-attr]
