"""Money-path checks under concurrency: decided in batches, yet exactly as if one after
another; cached state that never outlives a change; and a state store that cannot be reached
denies rather than allows."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest

from casino.common.v1.money_pb2 import Money
from casino.compliance.v1 import compliance_pb2 as pb
from casino.compliance.v1 import compliance_pb2_grpc
from services.runtime.client import secure_channel
from services.runtime.process import ServiceProcess
from services.runtime.status import error_info
from tests.compliance.conftest import Simulator, compliance_extra, open_stubs
from tests.compliance.test_compliance_service import (
    ALLOW,
    DENY,
    check,
    gbp,
    reasons,
    set_limit,
    verified_player,
)
from tests.conftest import Pki
from tests.support.tcp_proxy import TcpProxy
from tests.wallet.conftest import admin_dsn


async def test_concurrent_stakes_fit_a_stake_limit_exactly(stubs) -> None:
    player = await verified_player(stubs)
    await set_limit(stubs, player, pb.LIMIT_KIND_STAKE, 1_000)
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


async def test_deposits_at_once_stop_at_the_cdd_gate_as_one_after_another_would(
    stubs,
) -> None:
    # GBP 1,000 each against the EUR 2,000 threshold (GBP 1,709.40): the second crosses it
    # and goes through, every later one meets the gate it set, however they were batched.
    player = await verified_player(stubs)
    verdicts = await asyncio.gather(
        *(check(stubs, player, pb.ACTION_DEPOSIT, 100_000) for _ in range(12))
    )
    assert [v.decision for v in verdicts].count(ALLOW) == 2
    denied = [v for v in verdicts if v.decision == DENY]
    assert all("CDD_REQUIRED" in reasons(v) for v in denied)


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


async def test_usage_is_summed_for_the_state_as_locked_not_as_cached(stubs) -> None:
    """A batch sums usage in its lock's round trip for the limits its cached states name,
    and again, after the lock, when a state turned out to have moved: a stake limit set
    after the player's state was cached counts the stakes made before it."""
    player = await verified_player(stubs)
    assert (await check(stubs, player, pb.ACTION_BET, 100)).decision == ALLOW  # cached: no limits
    await set_limit(stubs, player, pb.LIMIT_KIND_STAKE, 150)
    over = await check(stubs, player, pb.ACTION_BET, 100)  # 100 + 100 > 150
    assert reasons(over)["LIMIT_EXCEEDED"]["used_minor"] == "100"
    # The state with its limit is cached now: summed with the lock, from then on.
    assert (await check(stubs, player, pb.ACTION_BET, 40)).decision == ALLOW  # 140
    again = await check(stubs, player, pb.ACTION_BET, 20)  # 160 > 150
    assert reasons(again)["LIMIT_EXCEEDED"]["used_minor"] == "140"


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


# A retried check (same player and request_id): the original answer, nothing new recorded.


def _bet(player: str, request_id: str, stake: int = 1_000, **fields: Any) -> pb.CheckActionRequest:
    request: dict[str, Any] = dict(
        player_id=player,
        action=pb.ACTION_BET,
        amount=gbp(stake),
        product=pb.PRODUCT_TABLE,
        request_country_code="GB",
        request_id=request_id,
    )
    request.update(fields)
    return pb.CheckActionRequest(**request)


def _recorded(player: str, request_id: str) -> tuple[int, int]:
    """How many verdicts and counted usage rows the request left."""
    with psycopg.connect(admin_dsn()) as conn:
        verdicts = conn.execute(
            "SELECT count(*) FROM compliance.verdicts WHERE player_id = %s"
            " AND inputs ->> 'request_id' = %s",
            (player, request_id),
        ).fetchone()
        usage = conn.execute(
            "SELECT count(*) FROM compliance.usage WHERE player_id = %s AND request_id = %s",
            (player, request_id),
        ).fetchone()
    assert verdicts is not None and usage is not None
    return int(verdicts[0]), int(usage[0])


async def _stake_limited_player(stubs: dict[str, Any], amount: int = 1_000) -> str:
    player = await verified_player(stubs)
    await set_limit(stubs, player, pb.LIMIT_KIND_STAKE, amount)
    return player


async def test_a_retried_check_gets_its_original_verdict_and_counts_once(
    stubs: dict[str, Any],
) -> None:
    player = await _stake_limited_player(stubs)
    request_id = uuid.uuid4().hex
    first = (await stubs["games"].CheckAction(_bet(player, request_id))).verdict
    assert first.decision == ALLOW
    retried = (await stubs["games"].CheckAction(_bet(player, request_id))).verdict
    assert retried == first  # same verdict id, sequence, decision and reasons
    assert _recorded(player, request_id) == (1, 1)
    # The stake counted once: the limit is exactly used, the next stake is over it.
    over = await check(stubs, player, pb.ACTION_BET, 1)
    assert reasons(over)["LIMIT_EXCEEDED"]["used_minor"] == "1000"
    # A denial is answered again as it was, even if a retry could now be allowed.
    denied_id = uuid.uuid4().hex
    denied = (await stubs["games"].CheckAction(_bet(player, denied_id, 500))).verdict
    assert denied.decision == DENY
    await set_limit(stubs, player, pb.LIMIT_KIND_STAKE, 1)
    assert (await stubs["games"].CheckAction(_bet(player, denied_id, 500))).verdict == denied
    assert _recorded(player, denied_id) == (1, 0)


@pytest.mark.parametrize(
    "changed",
    [
        {"amount": gbp(999)},
        {"action": pb.ACTION_DEPOSIT},
        {"amount": Money(amount_minor=1_000)},
        # The same stake asked from elsewhere or for a slot spin is another check: its
        # verdict (the jurisdiction, the slot stake cap) is not the table bet's from GB.
        {"request_country_code": "US"},
        {"product": pb.PRODUCT_SLOTS},
    ],
    ids=["amount", "action", "currency", "country", "product"],
)
async def test_a_request_id_reused_for_another_check_is_refused(
    stubs: dict[str, Any], changed: dict[str, Any]
) -> None:
    player = await verified_player(stubs)
    request_id = uuid.uuid4().hex
    assert (await stubs["games"].CheckAction(_bet(player, request_id))).verdict.decision == ALLOW
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stubs["games"].CheckAction(_bet(player, request_id, **changed))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(refused.value)
    assert info is not None and info.reason == "IDEMPOTENCY_MISMATCH"
    assert _recorded(player, request_id) == (1, 1)
    # The same request_id is another player's own.
    other = await verified_player(stubs)
    assert (await stubs["games"].CheckAction(_bet(other, request_id))).verdict.decision == ALLOW


async def test_a_request_id_decided_longer_ago_than_a_retry_is_spent(
    launch: Callable[..., ServiceProcess], pki: Pki, register: Simulator, tmp_path: Path
) -> None:
    # A verdict is about its moment: handed out again to a retry, never days later (a
    # launch allowed before a self-exclusion must not be replayed after it).
    short = launch(
        "compliance",
        extra=compliance_extra(register, tmp_path, settings="check_replay_seconds = 1"),
    )
    channels, stubs = open_stubs(short, pki)
    try:
        player = await verified_player(stubs)
        request_id = uuid.uuid4().hex
        first = (await stubs["games"].CheckAction(_bet(player, request_id))).verdict
        assert (await stubs["games"].CheckAction(_bet(player, request_id))).verdict == first
        await asyncio.sleep(1.2)
        with pytest.raises(grpc.aio.AioRpcError) as spent:
            await stubs["games"].CheckAction(_bet(player, request_id))
        assert spent.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        info = error_info(spent.value)
        assert info is not None and info.reason == "IDEMPOTENCY_KEY_EXPIRED"
        assert _recorded(player, request_id) == (1, 1)
    finally:
        for channel in channels:
            await channel.close()


async def test_a_request_id_the_database_cannot_hold_is_invalid_argument(
    stubs: dict[str, Any],
) -> None:
    player = await verified_player(stubs)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stubs["games"].CheckAction(_bet(player, "abc\x00def"))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(refused.value)
    assert info is not None and info.metadata["field"] == "request_id"


async def test_identical_checks_at_once_are_one_decision(stubs: dict[str, Any]) -> None:
    player = await _stake_limited_player(stubs)
    others = [await verified_player(stubs) for _ in range(3)]
    request_id = uuid.uuid4().hex
    mine = [stubs["games"].CheckAction(_bet(player, request_id)) for _ in range(20)]
    theirs = [check(stubs, p, pb.ACTION_BET, 100) for p in others for _ in range(5)]
    replies = await asyncio.gather(*mine, *theirs)
    verdicts = {reply.verdict.verdict_id: reply.verdict for reply in replies[:20]}
    assert len(verdicts) == 1
    assert next(iter(verdicts.values())).decision == ALLOW
    assert _recorded(player, request_id) == (1, 1)
    assert all(v.decision == ALLOW for v in replies[20:])
    # A mismatching check in the same crowd is refused, the others answered as one.
    again = uuid.uuid4().hex
    outcomes = await asyncio.gather(
        stubs["games"].CheckAction(_bet(others[0], again, 100)),
        stubs["games"].CheckAction(_bet(others[0], again, 200)),
        stubs["games"].CheckAction(_bet(others[0], again, 100)),
        return_exceptions=True,
    )
    answered = [o for o in outcomes if not isinstance(o, BaseException)]
    failed = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len({o.verdict.verdict_id for o in answered}) == 1
    assert [getattr(error_info(e), "reason", None) for e in failed] == [
        "IDEMPOTENCY_MISMATCH"
    ] * len(failed)
    assert len(answered) + len(failed) == 3 and failed
    assert _recorded(others[0], again)[0] == 1


async def test_a_retry_racing_its_original_on_another_replica_gets_the_original(
    stubs: dict[str, Any],
    launch: Callable[..., ServiceProcess],
    pki: Pki,
    register: Simulator,
    tmp_path: Path,
) -> None:
    """Both replicas look the request up before either has recorded it (they wait on the
    player's row lock, held here): the second to commit finds the first's record by its key,
    decides again and answers with the first's verdict."""
    player = await _stake_limited_player(stubs)
    replica = launch("compliance", extra=compliance_extra(register, tmp_path))
    channel = secure_channel(
        f"127.0.0.1:{replica.ports['port']}", pki.tls("games"), "compliance", default_timeout=10
    )
    other = compliance_pb2_grpc.ComplianceServiceStub(channel)
    request_id = uuid.uuid4().hex
    try:
        # Warm both up (their first check of the player loads its state).
        await check(stubs, player, pb.ACTION_GAME_LAUNCH)
        await other.CheckAction(
            pb.CheckActionRequest(
                player_id=player,
                action=pb.ACTION_GAME_LAUNCH,
                request_country_code="GB",
                request_id=uuid.uuid4().hex,
            )
        )
        async with await psycopg.AsyncConnection.connect(admin_dsn()) as lock:
            await lock.execute(
                "SELECT 1 FROM compliance.players WHERE player_id = %s FOR UPDATE", (player,)
            )
            racing = [
                asyncio.ensure_future(stubs["games"].CheckAction(_bet(player, request_id))),
                asyncio.ensure_future(other.CheckAction(_bet(player, request_id))),
            ]
            waiting = 0
            for _ in range(200):
                row = await (
                    await lock.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE usename ="
                        " 'casino_compliance' AND wait_event_type = 'Lock'"
                        " AND datname = current_database()"
                    )
                ).fetchone()
                waiting = row[0] if row else 0
                if waiting == 2:
                    break
                await asyncio.sleep(0.02)
            assert waiting == 2
        # The lock is released at the end of the block: both decide, one after the other.
        replies = await asyncio.gather(*racing)
        assert replies[0].verdict == replies[1].verdict
        assert replies[0].verdict.decision == ALLOW
        assert _recorded(player, request_id) == (1, 1)
    finally:
        await channel.close()
