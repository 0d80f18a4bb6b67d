"""Money-path checks under concurrency: decided in batches, yet exactly as if one after
another; cached state that never outlives a change; and a state store that cannot be reached
denies rather than allows."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import psycopg
import pytest

from casino.compliance.v1 import compliance_pb2 as pb
from casino.compliance.v1 import compliance_pb2_grpc
from services.runtime.client import secure_channel
from services.runtime.status import error_info
from tests.compliance.conftest import compliance_extra
from tests.compliance.test_compliance_service import (
    ALLOW,
    DENY,
    check,
    gbp,
    reasons,
    verified_player,
)
from tests.support.tcp_proxy import TcpProxy
from tests.wallet.conftest import admin_dsn


async def test_concurrent_stakes_fit_a_stake_limit_exactly(stubs) -> None:
    player = await verified_player(stubs)
    await stubs["edge"].SetLimit(
        pb.SetLimitRequest(
            player_id=player,
            kind=pb.LIMIT_KIND_STAKE,
            period=pb.LIMIT_PERIOD_DAY,
            amount=gbp(1_000),
        )
    )
    others = [await verified_player(stubs) for _ in range(3)]
    # 30 stakes of 1.00 against a 10.00 limit, interleaved with other players' checks so
    # they share batches.
    mine = [check(stubs, player, pb.ACTION_BET, 100) for _ in range(30)]
    theirs = [check(stubs, p, pb.ACTION_BET, 100) for p in others for _ in range(5)]
    verdicts = await asyncio.gather(*mine, *theirs)
    own = verdicts[:30]
    assert sum(v.decision == ALLOW for v in own) == 10
    denied = [v for v in own if v.decision == DENY]
    assert all(reasons(v)["LIMIT_EXCEEDED"]["used_minor"] == "1000" for v in denied)
    assert all(v.decision == ALLOW for v in verdicts[30:])
    # They were decided together (a batch shares its decision time), not one by one.
    assert len({v.create_time.ToDatetime() for v in verdicts}) < len(verdicts)
    # One gapless chain, every verdict in it once.
    sequences = sorted(v.sequence for v in verdicts)
    assert len(set(sequences)) == len(sequences)
    report = await stubs["backoffice"].VerifyVerdictLog(pb.VerifyVerdictLogRequest())
    assert list(report.problems) == []


async def test_a_change_made_elsewhere_is_seen_by_the_next_check(stubs) -> None:
    """Another replica, or the monitoring consumer, changes the player's row: the cached
    state is revalidated by the row's version under the batch's lock, so the very next check
    sees it."""
    player = await verified_player(stubs)
    assert (await check(stubs, player, pb.ACTION_BET, 100)).decision == ALLOW
    with psycopg.connect(admin_dsn(), autocommit=True) as conn:
        conn.execute(
            "UPDATE compliance.players SET cdd_required = true, version = version + 1"
            " WHERE player_id = %s",
            (player,),
        )
    assert reasons(await check(stubs, player, pb.ACTION_BET, 100)).keys() == {"CDD_REQUIRED"}
    await stubs["backoffice"].UpdateVerification(
        pb.UpdateVerificationRequest(player_id=player, cdd_cleared=True, verified_by="officer-7")
    )
    assert (await check(stubs, player, pb.ACTION_BET, 100)).decision == ALLOW


async def test_unreachable_state_store_denies_and_says_so(
    stubs, launch, pki, register, tmp_path
) -> None:
    player = await verified_player(stubs)
    database = TcpProxy("127.0.0.1", 5432)
    database.start()
    compliance = launch(
        "compliance", db_port=database.port, extra=compliance_extra(register, tmp_path)
    )
    channel = secure_channel(
        f"127.0.0.1:{compliance.ports['port']}", pki.tls("games"), "compliance", default_timeout=5
    )
    games = compliance_pb2_grpc.ComplianceServiceStub(channel)
    request = pb.CheckActionRequest(
        player_id=player,
        action=pb.ACTION_BET,
        amount=gbp(100),
        product=pb.PRODUCT_SLOTS,
        request_country_code="GB",
        request_id=uuid.uuid4().hex,
    )
    try:
        assert (await games.CheckAction(request)).verdict.decision == ALLOW
        database.cut()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await games.CheckAction(request)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        info = error_info(refused.value)
        assert info is not None and info.reason == "DEPENDENCY_UNAVAILABLE"
        # Back again: checks answer again, with no restart.
        database.start()
        for _ in range(50):
            try:
                reply = await games.CheckAction(request)
                break
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE
                await asyncio.sleep(0.1)
        assert reply.verdict.decision == ALLOW
    finally:
        await channel.close()
        database.close()
