"""Rule flags (a rule enabled for a segment, switched off at runtime, picked up by every
replica), reality checks and per-jurisdiction configuration, against the real service
process and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import psycopg
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.type.date_pb2 import Date
from grpc_health.v1 import health_pb2

from casino.common.v1.money_pb2 import Money
from casino.compliance.v1 import compliance_pb2 as pb
from services.compliance import flags
from services.runtime.process import ServiceProcess
from services.runtime.status import error_info
from tests.compliance.conftest import Simulator, compliance_extra, open_stubs
from tests.compliance.test_compliance_service import reasons
from tests.compliance.test_compliance_service import verified_player as shared_verified_player
from tests.conftest import Launcher, Pki
from tests.wallet.conftest import admin_dsn

ALLOW, DENY = pb.DECISION_ALLOW, pb.DECISION_DENY
AFFORDABILITY = "AFFORDABILITY"
# Lower than the UKGC default so a test deposit crosses it without also reaching the CDD
# threshold (EUR 2,000 in 24 h, GBP 1,709.40), which would blur what is being checked.
THRESHOLD = 50_000


def service_config(register: Simulator, folder: Path, poll_seconds: float) -> str:
    return compliance_extra(
        register,
        folder,
        settings=f"flags_poll_seconds = {poll_seconds}",
        rules=f"affordability_threshold_minor = {THRESHOLD}",
        tables=f"""[compliance.jurisdictions.MT]
currency = "EUR"
slot_stake_cap_minor = 1_000_000_000_000
young_adult_slot_stake_cap_minor = 1_000_000_000_000
affordability_threshold_minor = {THRESHOLD}""",
    )


def start_compliance(
    folder: Path, pki: Pki, register: Simulator, poll_seconds: float
) -> ServiceProcess:
    process = Launcher(folder, pki, [])(
        "compliance", extra=service_config(register, folder, poll_seconds)
    )
    process.folder = folder  # type: ignore[attr-defined]
    return process


@pytest.fixture(scope="module")
def compliance(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki, test_database: str, register: Simulator
) -> Iterator[ServiceProcess]:
    """This module's service: an MT jurisdiction besides the default (UKGC) one. Its flag
    poll is long, so a change seen at once can only have come from the change itself."""
    reset_flags()
    process = start_compliance(tmp_path_factory.mktemp("compliance"), pki, register, 600)
    yield process
    process.terminate()
    reset_flags()


def reset_flags() -> None:
    """Other modules' services must not meet a flag this one left on."""
    with psycopg.connect(admin_dsn()) as conn:
        conn.execute("DELETE FROM compliance.rule_flags")


@pytest.fixture
async def flag_admin(stubs) -> AsyncIterator[None]:
    """Each flag test starts from no flags and leaves none behind."""
    await set_flag(stubs, enabled=False)
    yield
    await set_flag(stubs, enabled=False)


def money(amount: int, currency: str = "GBP") -> Money:
    return Money(amount_minor=amount, currency_code=currency)


async def verified_player(
    stubs, country: str = "GB", player_id: str | None = None, birth_year: int = 1980
) -> str:
    return await shared_verified_player(
        stubs,
        player_id=player_id,
        country_code=country,
        postcode="VLT 1000" if country == "MT" else "N1 9GU",
        birth_date=Date(year=birth_year, month=3, day=9),
    )


async def check(
    stubs,
    player_id: str,
    action: int,
    amount: int,
    currency: str = "GBP",
    product: int = pb.PRODUCT_TABLE,
) -> pb.Verdict:
    reply = await stubs["games"].CheckAction(
        pb.CheckActionRequest(
            player_id=player_id,
            action=action,
            amount=money(amount, currency),
            product=product,
            request_country_code="GB",
            request_id=uuid.uuid4().hex,
        )
    )
    return reply.verdict


async def inputs(stubs, verdict: pb.Verdict) -> dict:
    reply = await stubs["backoffice"].ExplainVerdict(
        pb.ExplainVerdictRequest(verdict_id=verdict.verdict_id)
    )
    return json.loads(reply.inputs_json)


async def set_flag(
    stubs,
    *,
    enabled: bool,
    rollout_percent: int | None = None,
    countries: tuple[str, ...] = (),
    rule: str = AFFORDABILITY,
) -> pb.SetRuleFlagResponse:
    request = pb.SetRuleFlagRequest(
        rule=rule,
        enabled=enabled,
        country_codes=list(countries),
        operator_id="officer:ann",
        reason="CHG-1042",
    )
    if rollout_percent is not None:
        request.rollout_percent = rollout_percent
    return await stubs["backoffice"].SetRuleFlag(request)


def players_on_both_sides(percent: int) -> tuple[str, str]:
    """Two player ids whose AFFORDABILITY buckets fall inside and outside the rollout."""
    inside = outside = None
    while inside is None or outside is None:
        candidate = f"player-{uuid.uuid4().hex[:10]}"
        if flags.bucket(AFFORDABILITY, candidate) < percent:
            inside = inside or candidate
        else:
            outside = outside or candidate
    return inside, outside


async def until(predicate, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s")
        await asyncio.sleep(interval)


# Flags.


async def test_affordability_is_off_by_default_and_deposits_are_allowed(stubs) -> None:
    listed = await stubs["backoffice"].ListRuleFlags(pb.ListRuleFlagsRequest())
    by_rule = {f.rule: f for f in listed.flags}
    assert not by_rule[AFFORDABILITY].enabled and by_rule[AFFORDABILITY].version == 0
    assert by_rule[AFFORDABILITY].description
    for rule in ("AML_CDD_THRESHOLD", "AML_STRUCTURING", "AML_WITHDRAWAL_REVERSAL"):
        assert by_rule[rule].enabled and by_rule[rule].rollout_percent == 100

    player_id = await verified_player(stubs)
    verdict = await check(stubs, player_id, pb.ACTION_DEPOSIT, THRESHOLD + 10_000)
    assert verdict.decision == ALLOW
    recorded = await inputs(stubs, verdict)
    assert recorded["flags"] == {
        "version": listed.snapshot_version,
        "evaluated": {AFFORDABILITY: False},
    }


async def test_affordability_enabled_for_a_rollout_denies_only_players_inside_it(
    stubs, flag_admin
) -> None:
    inside, outside = players_on_both_sides(50)
    for player_id in (inside, outside):
        await verified_player(stubs, player_id=player_id)
    await check(stubs, inside, pb.ACTION_DEPOSIT, 30_000)  # counted before the flag
    changed = await set_flag(stubs, enabled=True, rollout_percent=50)
    assert changed.flag.version >= 1 and changed.flag.rollout_percent == 50

    denied = await check(stubs, inside, pb.ACTION_DEPOSIT, 20_000)
    assert denied.decision == DENY
    assert reasons(denied)["AFFORDABILITY_CHECK_REQUIRED"] == {
        "threshold_minor": str(THRESHOLD),
        "used_minor": "30000",
    }
    recorded = await inputs(stubs, denied)
    assert recorded["flags"] == {
        "version": changed.snapshot_version,
        "evaluated": {AFFORDABILITY: True},
    }
    assert (await check(stubs, inside, pb.ACTION_DEPOSIT, 19_999)).decision == ALLOW
    assert (await check(stubs, outside, pb.ACTION_DEPOSIT, THRESHOLD * 2)).decision == ALLOW

    # Once the player's affordability is assessed, the deposit goes through.
    await stubs["backoffice"].UpdateVerification(
        pb.UpdateVerificationRequest(
            player_id=inside, affordability_assessed=True, verified_by="officer:ann"
        )
    )
    assert (await check(stubs, inside, pb.ACTION_DEPOSIT, 20_000)).decision == ALLOW


async def test_affordability_enabled_for_a_country_denies_only_its_residents(
    stubs, flag_admin
) -> None:
    maltese = await verified_player(stubs, country="MT")
    british = await verified_player(stubs, country="GB")
    await set_flag(stubs, enabled=True, countries=("MT",))
    denied = await check(stubs, maltese, pb.ACTION_DEPOSIT, THRESHOLD, currency="EUR")
    assert "AFFORDABILITY_CHECK_REQUIRED" in reasons(denied)
    assert (await check(stubs, british, pb.ACTION_DEPOSIT, THRESHOLD)).decision == ALLOW


async def test_switched_off_at_runtime_the_very_next_check_is_allowed(stubs, flag_admin) -> None:
    player_id = await verified_player(stubs)
    on = await set_flag(stubs, enabled=True)
    assert (await check(stubs, player_id, pb.ACTION_DEPOSIT, THRESHOLD)).decision == DENY
    off = await set_flag(stubs, enabled=False)
    assert off.snapshot_version != on.snapshot_version
    allowed = await check(stubs, player_id, pb.ACTION_DEPOSIT, THRESHOLD)
    assert allowed.decision == ALLOW
    assert (await inputs(stubs, allowed))["flags"]["version"] == off.snapshot_version


async def test_another_replica_picks_up_a_flag_change_by_notify(
    stubs, flag_admin, tmp_path: Path, pki: Pki, register: Simulator
) -> None:
    # The second replica's poll is 10 minutes: within seconds, only NOTIFY can tell it.
    replica = start_compliance(tmp_path, pki, register, 600)
    channels, other = open_stubs(replica, pki)
    try:
        await replica.wait_health(health_pb2.HealthCheckResponse.SERVING)
        player_id = await verified_player(stubs)

        async def converged(version: str):
            async def probe() -> bool:
                listed = await other["backoffice"].ListRuleFlags(pb.ListRuleFlagsRequest())
                return listed.snapshot_version == version

            return await until(probe, timeout=5.0)

        on = await set_flag(stubs, enabled=True)
        await converged(on.snapshot_version)
        denied = await check(other, player_id, pb.ACTION_DEPOSIT, THRESHOLD)
        assert "AFFORDABILITY_CHECK_REQUIRED" in reasons(denied)

        off = await set_flag(stubs, enabled=False)
        await converged(off.snapshot_version)
        assert (await check(other, player_id, pb.ACTION_DEPOSIT, THRESHOLD)).decision == ALLOW
    finally:
        for channel in channels:
            await channel.close()
        replica.terminate()


async def test_an_unknown_rule_or_a_bad_segment_is_refused_and_changes_nothing(
    stubs, flag_admin
) -> None:
    before = await stubs["backoffice"].ListRuleFlags(pb.ListRuleFlagsRequest())
    bad = [
        dict(rule="NO_SUCH_RULE"),
        dict(rollout_percent=101),
        dict(rollout_percent=-1),
        dict(countries=("gbr",)),
    ]
    for fields in bad:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await set_flag(stubs, enabled=True, **fields)  # type: ignore[arg-type]
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, fields
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await stubs["backoffice"].SetRuleFlag(
            pb.SetRuleFlagRequest(rule=AFFORDABILITY, enabled=True)
        )
    assert anonymous.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as not_admin:
        await set_flag({"backoffice": stubs["edge"]}, enabled=True)
    assert not_admin.value.code() == grpc.StatusCode.PERMISSION_DENIED
    after = await stubs["backoffice"].ListRuleFlags(pb.ListRuleFlagsRequest())
    assert after == before


async def test_flag_changes_are_recorded_in_history_and_the_verdict_log(stubs, flag_admin) -> None:
    changed = await set_flag(stubs, enabled=True, rollout_percent=5, countries=("MT", "GB"))
    assert list(changed.flag.country_codes) == ["GB", "MT"]
    assert changed.flag.updated_by == "officer:ann"
    explained = await stubs["backoffice"].ExplainVerdict(
        pb.ExplainVerdictRequest(verdict_id=changed.verdict.verdict_id)
    )
    assert explained.action == "RULE_FLAG_CHANGE" and explained.caller == "backoffice"
    recorded = json.loads(explained.inputs_json)
    assert recorded["operator_id"] == "officer:ann" and recorded["reason"] == "CHG-1042"
    assert recorded["after"]["rollout_percent"] == 5
    assert recorded["before"]["enabled"] is False

    with psycopg.connect(admin_dsn()) as conn:
        history = conn.execute(
            "SELECT version, enabled, rollout_percent, countries, updated_by, reason"
            " FROM compliance.rule_flag_changes WHERE rule = %s ORDER BY change_id DESC LIMIT 2",
            (AFFORDABILITY,),
        ).fetchall()
        role_can_update = conn.execute(
            "SELECT has_table_privilege('casino_compliance', 'compliance.rule_flag_changes',"
            " 'UPDATE') OR has_table_privilege('casino_compliance',"
            " 'compliance.rule_flag_changes', 'DELETE')"
        ).fetchone()[0]
    newest, previous = history
    assert newest == (changed.flag.version, True, 5, ["GB", "MT"], "officer:ann", "CHG-1042")
    assert previous[0] == changed.flag.version - 1 and previous[1] is False
    assert role_can_update is False  # the history is append-only


def metric(process: ServiceProcess, name: str) -> float:
    body = urllib.request.urlopen(
        f"http://127.0.0.1:{process.ports['metrics_port']}/metrics", timeout=5
    ).read()
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_unreadable_flags_keep_a_replica_unready_and_later_keep_the_last_snapshot(
    stubs, tmp_path: Path, pki: Pki, register: Simulator
) -> None:
    def grant(allowed: bool) -> None:
        verb = (
            "GRANT SELECT ON compliance.rule_flags TO"
            if allowed
            else ("REVOKE SELECT ON compliance.rule_flags FROM")
        )
        with psycopg.connect(admin_dsn(), autocommit=True) as conn:
            conn.execute(f"{verb} casino_compliance")

    player_id = await verified_player(stubs)
    replica = None
    channels: list[grpc.aio.Channel] = []
    grant(False)
    try:
        replica = start_compliance(tmp_path, pki, register, 0.2)

        async def flags_down() -> bool:
            return any(
                line.get("event") == "dependency down" and line.get("dependency") == "rule_flags"
                for line in replica.log_lines()
            )

        await until(flags_down)
        assert await replica.health() == health_pb2.HealthCheckResponse.NOT_SERVING
        grant(True)
        await replica.wait_health(health_pb2.HealthCheckResponse.SERVING, timeout=10)

        # Read once: a later failure keeps the snapshot, counts and logs, stays in service.
        failures = metric(replica, "casino_compliance_rule_flags_refresh_failures_total")
        grant(False)

        async def failing() -> bool:
            now = metric(replica, "casino_compliance_rule_flags_refresh_failures_total")
            return now > failures

        await until(failing)
        channels, other = open_stubs(replica, pki)
        verdict = await check(other, player_id, pb.ACTION_DEPOSIT, 1_000)
        assert verdict.decision == ALLOW
        assert await replica.health() == health_pb2.HealthCheckResponse.SERVING
        assert any(
            line.get("event", "").startswith("rule flags refresh failed")
            for line in replica.log_lines()
        )
    finally:
        grant(True)
        for channel in channels:
            await channel.close()
        if replica is not None:
            replica.terminate()


# Reality checks.


def ts(value: dt.datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(value)
    return t


async def reality(stubs, player_id: str, start: dt.datetime, caller: str = "games"):
    return await stubs[caller].GetRealityCheck(
        pb.GetRealityCheckRequest(player_id=player_id, session_start_time=ts(start))
    )


async def test_reality_check_interval_is_set_within_the_jurisdictions_bounds(stubs) -> None:
    player_id = await verified_player(stubs)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    assert (await reality(stubs, player_id, start)).interval_minutes == 60  # the default

    changed = await stubs["edge"].SetRealityCheck(
        pb.SetRealityCheckRequest(player_id=player_id, interval_minutes=20)
    )
    assert changed.interval_minutes == 20
    explained = await stubs["backoffice"].ExplainVerdict(
        pb.ExplainVerdictRequest(verdict_id=changed.verdict.verdict_id)
    )
    assert explained.action == "REALITY_CHECK_CHANGE"
    assert json.loads(explained.inputs_json)["after"] == 20
    assert (await reality(stubs, player_id, start, caller="edge")).interval_minutes == 20

    for bad in (9, 121):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stubs["edge"].SetRealityCheck(
                pb.SetRealityCheckRequest(player_id=player_id, interval_minutes=bad)
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info(refused.value).metadata["field"] == "interval_minutes"
    with pytest.raises(grpc.aio.AioRpcError) as not_edge:
        await stubs["games"].SetRealityCheck(
            pb.SetRealityCheckRequest(player_id=player_id, interval_minutes=30)
        )
    assert not_edge.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (await reality(stubs, player_id, start)).interval_minutes == 20


async def test_reality_check_shows_time_played_and_position_since_session_start(stubs) -> None:
    player_id = await verified_player(stubs)
    await stubs["edge"].SetRealityCheck(
        pb.SetRealityCheckRequest(player_id=player_id, interval_minutes=10)
    )
    now = dt.datetime.now(dt.UTC)
    start = now - dt.timedelta(minutes=25)
    for stake in (100, 250):
        assert (await check(stubs, player_id, pb.ACTION_BET, stake)).decision == ALLOW
    with psycopg.connect(admin_dsn()) as conn:
        # A credited win and a rolled-back stake in the session; a stake before it.
        conn.execute(
            "INSERT INTO compliance.usage (player_id, request_id, action, amount_minor, at)"
            " VALUES (%s, 'win-1', 'WIN', 400, %s), (%s, 'rb-1', 'ROLLBACK', 100, %s),"
            " (%s, 'old-bet', 'BET', 9999, %s)",
            (player_id, now, player_id, now, player_id, start - dt.timedelta(minutes=1)),
        )

    reply = await reality(stubs, player_id, start)
    asked = dt.datetime.now(dt.UTC)
    assert reply.staked == money(250)  # 100 + 250 - 100 rolled back
    assert reply.won == money(400)
    assert reply.net_position == money(150)
    played = reply.time_played.ToTimedelta()
    assert dt.timedelta(minutes=25) <= played <= asked - start
    assert reply.interval_minutes == 10
    assert reply.next_check_time.ToDatetime(dt.UTC) == start + dt.timedelta(minutes=30)
    assert reply.session_start_time.ToDatetime(dt.UTC) == start


async def test_reality_check_refuses_a_session_start_in_the_future_or_too_old(stubs) -> None:
    player_id = await verified_player(stubs)
    now = dt.datetime.now(dt.UTC)
    for start in (now + dt.timedelta(minutes=5), now - dt.timedelta(hours=25)):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await reality(stubs, player_id, start)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info(refused.value).metadata["field"] == "session_start_time"
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stubs["games"].GetRealityCheck(pb.GetRealityCheckRequest(player_id=player_id))
    assert missing.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await reality(stubs, "player-nobody", now)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


# Jurisdictions.


async def test_a_maltese_player_plays_in_eur_without_the_uk_slot_cap(stubs) -> None:
    maltese = await verified_player(stubs, country="MT")
    british = await verified_player(stubs, country="GB")
    big = await check(
        stubs, maltese, pb.ACTION_BET, 100_000, currency="EUR", product=pb.PRODUCT_SLOTS
    )
    assert big.decision == ALLOW
    capped = await check(stubs, british, pb.ACTION_BET, 600, product=pb.PRODUCT_SLOTS)
    assert reasons(capped)["STAKE_CAP_EXCEEDED"] == {"cap_minor": "500"}
    assert big.config_version != capped.config_version
    assert (await inputs(stubs, big))["jurisdiction"] == "MT"
    assert (await inputs(stubs, capped))["jurisdiction"] == "DEFAULT"

    limit = await stubs["edge"].SetLimit(
        pb.SetLimitRequest(
            player_id=maltese,
            kind=pb.LIMIT_KIND_DEPOSIT,
            period=pb.LIMIT_PERIOD_DAY,
            amount=money(50_000, "EUR"),
        )
    )
    assert limit.limit.amount == money(50_000, "EUR")
    listed = await stubs["edge"].ListLimits(pb.ListLimitsRequest(player_id=maltese))
    assert listed.limits[0].amount.currency_code == "EUR"
    session = await reality(stubs, maltese, dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
    assert session.staked == money(100_000, "EUR")


async def test_amounts_in_another_currency_than_the_players_are_refused(stubs) -> None:
    maltese = await verified_player(stubs, country="MT")
    british = await verified_player(stubs, country="GB")
    for player_id, wrong in ((maltese, "GBP"), (british, "EUR")):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await check(stubs, player_id, pb.ACTION_DEPOSIT, 1_000, currency=wrong)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info(refused.value).metadata["field"] == "amount.currency_code"
        with pytest.raises(grpc.aio.AioRpcError) as limit_refused:
            await stubs["edge"].SetLimit(
                pb.SetLimitRequest(
                    player_id=player_id,
                    kind=pb.LIMIT_KIND_DEPOSIT,
                    period=pb.LIMIT_PERIOD_DAY,
                    amount=money(1_000, wrong),
                )
            )
        assert limit_refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # Nothing was counted or set.
    assert not (await stubs["edge"].ListLimits(pb.ListLimitsRequest(player_id=maltese))).limits
    with psycopg.connect(admin_dsn()) as conn:
        counted = conn.execute(
            "SELECT count(*) FROM compliance.usage WHERE player_id = ANY(%s)",
            ([maltese, british],),
        ).fetchone()[0]
    assert counted == 0
