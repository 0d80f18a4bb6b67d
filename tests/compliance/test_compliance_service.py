"""The compliance service end to end: registration against the register simulator,
money-path checks, player-protection tools, the CDD gate and the verdict log."""

from __future__ import annotations

import json
import uuid
from typing import Any

import grpc
import psycopg
import pytest
from google.type.date_pb2 import Date

from casino.common.v1.money_pb2 import Money
from casino.compliance.v1 import compliance_pb2 as pb
from services.runtime.status import error_info
from tests.compliance.conftest import CDD_THRESHOLD_GBP_MINOR
from tests.wallet.conftest import admin_dsn

ALLOW, DENY = pb.DECISION_ALLOW, pb.DECISION_DENY


def person(**overrides: object) -> pb.Person:
    fields = dict(
        given_name="Sam",
        family_name=f"Player{uuid.uuid4().hex[:6]}",
        birth_date=Date(year=1990, month=5, day=17),
        email=f"{uuid.uuid4().hex[:8]}@example.org",
        postcode="N1 9GU",
        country_code="GB",
    )
    fields.update(overrides)
    return pb.Person(**fields)  # type: ignore[arg-type]


def gbp(amount: int) -> Money:
    return Money(amount_minor=amount, currency_code="GBP")


def reasons(verdict: pb.Verdict) -> dict[str, dict[str, str]]:
    return {r.reason: dict(r.metadata) for r in verdict.reasons}


async def verified_player(stubs, player_id: str | None = None, **person_fields: object) -> str:
    player_id = player_id or f"player-{uuid.uuid4().hex[:10]}"
    await stubs["identity"].EnrolPlayer(
        pb.EnrolPlayerRequest(player_id=player_id, person=person(**person_fields))
    )
    await stubs["backoffice"].UpdateVerification(
        pb.UpdateVerificationRequest(
            player_id=player_id,
            name_verified=True,
            address_verified=True,
            birth_date_verified=True,
            verified_by="kyc-provider:ref-1",
        )
    )
    return player_id


async def check(
    stubs,
    player_id: str,
    action: int,
    amount: int = 0,
    product: int = pb.PRODUCT_TABLE,
    country: str = "GB",
) -> pb.Verdict:
    reply = await stubs["games"].CheckAction(
        pb.CheckActionRequest(
            player_id=player_id,
            action=action,
            amount=gbp(amount),
            product=product,
            request_country_code=country,
            request_id=uuid.uuid4().hex,
        )
    )
    return reply.verdict


async def set_limit(
    stubs, player_id: str, kind: int, amount: int, period: int = pb.LIMIT_PERIOD_DAY
) -> pb.SetLimitResponse:
    return await stubs["edge"].SetLimit(
        pb.SetLimitRequest(player_id=player_id, kind=kind, period=period, amount=gbp(amount))
    )


# Registration


async def test_adult_in_an_allowed_country_may_register(stubs) -> None:
    reply = await stubs["identity"].CheckRegistration(
        pb.CheckRegistrationRequest(person=person(), request_country_code="GB")
    )
    assert reply.verdict.decision == ALLOW
    assert reply.verdict.sequence > 0
    assert reply.verdict.rule_version and reply.verdict.config_version


async def test_person_on_the_national_register_is_denied_with_its_request_id(stubs) -> None:
    excluded = person(
        given_name="Ada",
        family_name="Excluded",
        birth_date=Date(year=1980, month=2, day=29),
        email="ada.excluded@example.org",
        postcode="SW1A 1AA",
    )
    reply = await stubs["identity"].CheckRegistration(pb.CheckRegistrationRequest(person=excluded))
    assert reply.verdict.decision == DENY
    assert reasons(reply.verdict)["REGISTER_EXCLUDED"]["register_request_id"]


async def test_register_down_denies_registration(stubs, register) -> None:
    register.faults("timeout")
    try:
        reply = await stubs["identity"].CheckRegistration(
            pb.CheckRegistrationRequest(person=person())
        )
    finally:
        register.faults("ok")
    assert reply.verdict.decision == DENY
    assert "REGISTER_UNAVAILABLE" in reasons(reply.verdict)


async def test_under_age_and_blocked_country_are_denied(stubs) -> None:
    reply = await stubs["identity"].CheckRegistration(
        pb.CheckRegistrationRequest(
            person=person(birth_date=Date(year=2015, month=1, day=1), country_code="US")
        )
    )
    assert set(reasons(reply.verdict)) == {"UNDER_AGE", "JURISDICTION_BLOCKED"}


async def test_lookalike_of_a_self_excluded_player_is_denied(stubs) -> None:
    excluded_id = await verified_player(
        stubs, given_name="Kim", family_name="Twin", postcode="E1 6AN"
    )
    await stubs["edge"].Exclude(pb.ExcludeRequest(player_id=excluded_id, indefinite=True))
    again = person(given_name="KIM", family_name="twin", postcode="e16an")
    reply = await stubs["identity"].CheckRegistration(pb.CheckRegistrationRequest(person=again))
    assert "LIKELY_DUPLICATE_OF_EXCLUDED" in reasons(reply.verdict)


# Money-path checks


async def test_no_play_or_deposit_before_kyc(stubs) -> None:
    player_id = f"player-{uuid.uuid4().hex[:10]}"
    await stubs["identity"].EnrolPlayer(pb.EnrolPlayerRequest(player_id=player_id, person=person()))
    verdict = await check(stubs, player_id, pb.ACTION_DEPOSIT, 1000)
    assert reasons(verdict)["KYC_REQUIRED"]["missing"] == "name,address,birth_date"
    launch = await check(stubs, player_id, pb.ACTION_GAME_LAUNCH)
    assert "KYC_REQUIRED" in reasons(launch)


async def test_self_exclusion_blocks_bets_in_the_same_second(stubs) -> None:
    player_id = await verified_player(stubs)
    assert (await check(stubs, player_id, pb.ACTION_BET, 100)).decision == ALLOW
    excluded = await stubs["edge"].Exclude(
        pb.ExcludeRequest(player_id=player_id, self_exclusion_days=183)
    )
    verdict = await check(stubs, player_id, pb.ACTION_BET, 100)
    assert verdict.decision == DENY
    assert reasons(verdict)["SELF_EXCLUDED"]["kind"] == "SELF_EXCLUSION"
    # It cannot be shortened, and it told the rest of the platform.
    with pytest.raises(grpc.aio.AioRpcError) as shorter:
        await stubs["edge"].Exclude(pb.ExcludeRequest(player_id=player_id, timeout_hours=24))
    assert error_info(shorter.value).reason == "EXCLUSION_CANNOT_BE_SHORTENED"
    with psycopg.connect(admin_dsn()) as conn:
        (events,) = conn.execute(
            "SELECT count(*) FROM compliance.outbox WHERE shard_key = %s"
            " AND routing_key = 'compliance.player.excluded'",
            [player_id],
        ).fetchone()
    assert events == 1
    assert excluded.until_time.seconds > 0


@pytest.mark.parametrize(
    "exclusion",
    [
        pb.ExcludeRequest(self_exclusion_days=183),
        pb.ExcludeRequest(indefinite=True),
        pb.ExcludeRequest(timeout_hours=24),
    ],
    ids=["self-exclusion", "indefinite", "time-out"],
)
async def test_an_excluded_player_can_still_withdraw_their_balance(
    stubs: dict[str, Any], exclusion: pb.ExcludeRequest
) -> None:
    player_id = await verified_player(stubs)
    exclusion.player_id = player_id
    await stubs["edge"].Exclude(exclusion)
    for action in (pb.ACTION_DEPOSIT, pb.ACTION_BET, pb.ACTION_GAME_LAUNCH):
        verdict = await check(stubs, player_id, action, 100)
        assert verdict.decision == DENY and set(reasons(verdict)) == {"SELF_EXCLUDED"}
    withdrawal = await check(stubs, player_id, pb.ACTION_WITHDRAWAL, 50_000)
    assert withdrawal.decision == ALLOW, reasons(withdrawal)


async def test_an_excluded_player_withdrawing_still_meets_kyc_and_cdd(
    stubs: dict[str, Any],
) -> None:
    player_id = f"player-{uuid.uuid4().hex[:10]}"
    await stubs["identity"].EnrolPlayer(pb.EnrolPlayerRequest(player_id=player_id, person=person()))
    await stubs["edge"].Exclude(pb.ExcludeRequest(player_id=player_id, indefinite=True))
    unverified = await check(stubs, player_id, pb.ACTION_WITHDRAWAL, 50_000)
    assert set(reasons(unverified)) == {"KYC_REQUIRED"}
    await stubs["backoffice"].UpdateVerification(
        pb.UpdateVerificationRequest(
            player_id=player_id,
            name_verified=True,
            address_verified=True,
            birth_date_verified=True,
            verified_by="kyc-provider:ref-1",
        )
    )
    # A withdrawal reaching the CDD threshold goes through and sets the gate, as for anyone.
    assert (await check(stubs, player_id, pb.ACTION_WITHDRAWAL, 200_000)).decision == ALLOW
    gated = await check(stubs, player_id, pb.ACTION_WITHDRAWAL, 100)
    assert set(reasons(gated)) == {"CDD_REQUIRED"}


async def test_deposit_limit_blocks_once_reached_and_says_when_it_resets(stubs) -> None:
    player_id = await verified_player(stubs)
    await set_limit(stubs, player_id, pb.LIMIT_KIND_DEPOSIT, 10_000)
    assert (await check(stubs, player_id, pb.ACTION_DEPOSIT, 8_000)).decision == ALLOW
    verdict = await check(stubs, player_id, pb.ACTION_DEPOSIT, 3_000)
    detail = reasons(verdict)["LIMIT_EXCEEDED"]
    assert (detail["limit_kind"], detail["period"], detail["used_minor"]) == (
        "DEPOSIT",
        "DAY",
        "8000",
    )
    assert detail["resets_at"]


async def test_decrease_applies_at_once_increase_waits_for_cooling_off(stubs) -> None:
    player_id = await verified_player(stubs)
    base = dict(player_id=player_id, kind=pb.LIMIT_KIND_STAKE, period=pb.LIMIT_PERIOD_WEEK)
    await stubs["edge"].SetLimit(pb.SetLimitRequest(**base, amount=gbp(5_000)))
    lowered = await stubs["edge"].SetLimit(pb.SetLimitRequest(**base, amount=gbp(1_000)))
    assert lowered.limit.amount.amount_minor == 1_000
    assert (await check(stubs, player_id, pb.ACTION_BET, 1_500)).decision == DENY

    raised = await stubs["edge"].SetLimit(pb.SetLimitRequest(**base, amount=gbp(9_000)))
    assert raised.limit.amount.amount_minor == 1_000
    assert raised.limit.pending_amount.amount_minor == 9_000
    assert raised.limit.pending_confirmable_time.seconds > 0
    listed = await stubs["edge"].ListLimits(pb.ListLimitsRequest(player_id=player_id))
    assert listed.limits[0].pending_amount.amount_minor == 9_000
    with pytest.raises(grpc.aio.AioRpcError) as early:
        await stubs["edge"].ConfirmLimitIncrease(pb.ConfirmLimitIncreaseRequest(**base))
    assert error_info(early.value).reason == "COOLING_OFF_NOT_OVER"
    assert (await check(stubs, player_id, pb.ACTION_BET, 1_500)).decision == DENY
    with psycopg.connect(admin_dsn()) as conn:
        changes = conn.execute(
            "SELECT change, effective_at IS NOT NULL FROM compliance.limit_changes"
            " WHERE player_id = %s ORDER BY change_id",
            [player_id],
        ).fetchall()
    assert changes == [("SET", True), ("DECREASE", True), ("INCREASE_PENDING", False)]


async def test_slot_stake_cap_for_young_adults(stubs) -> None:
    young = await verified_player(stubs, birth_date=Date(year=2005, month=1, day=1))
    verdict = await check(stubs, young, pb.ACTION_BET, 250, product=pb.PRODUCT_SLOTS)
    assert reasons(verdict)["STAKE_CAP_EXCEEDED"]["cap_minor"] == "200"


async def test_cdd_gate_trips_across_linked_deposits_and_clears_only_by_kyc_update(
    stubs,
) -> None:
    player_id = await verified_player(stubs)
    assert (await check(stubs, player_id, pb.ACTION_DEPOSIT, 150_000)).decision == ALLOW
    assert (await check(stubs, player_id, pb.ACTION_DEPOSIT, 60_000)).decision == ALLOW
    gated = await check(stubs, player_id, pb.ACTION_BET, 100)
    assert set(reasons(gated)) == {"CDD_REQUIRED"}
    # Re-verifying name or address does not clear it; only the explicit CDD outcome does.
    await stubs["backoffice"].UpdateVerification(
        pb.UpdateVerificationRequest(player_id=player_id, name_verified=True, verified_by="op-1")
    )
    assert (await check(stubs, player_id, pb.ACTION_BET, 100)).decision == DENY
    await stubs["backoffice"].UpdateVerification(
        pb.UpdateVerificationRequest(player_id=player_id, cdd_cleared=True, verified_by="op-1")
    )
    assert (await check(stubs, player_id, pb.ACTION_BET, 100)).decision == ALLOW


async def test_after_cdd_is_cleared_only_deposits_since_the_clearance_trip_it_again(
    stubs: dict[str, Any],
) -> None:
    player_id = await verified_player(stubs)
    assert (await check(stubs, player_id, pb.ACTION_DEPOSIT, 150_000)).decision == ALLOW
    assert (await check(stubs, player_id, pb.ACTION_DEPOSIT, 60_000)).decision == ALLOW
    assert set(reasons(await check(stubs, player_id, pb.ACTION_BET, 100))) == {"CDD_REQUIRED"}
    await stubs["backoffice"].UpdateVerification(
        pb.UpdateVerificationRequest(player_id=player_id, cdd_cleared=True, verified_by="op-1")
    )
    # The day's GBP 2,100 were covered by the due diligence: GBP 1 more does not gate again.
    assert (await check(stubs, player_id, pb.ACTION_DEPOSIT, 100)).decision == ALLOW
    after = await check(stubs, player_id, pb.ACTION_BET, 100)
    assert after.decision == ALLOW, reasons(after)
    # Deposits since the clearance reaching the threshold (EUR 2,000 in GBP) do: the last
    # one goes through, then the gate is set.
    under = CDD_THRESHOLD_GBP_MINOR - 200
    assert (await check(stubs, player_id, pb.ACTION_DEPOSIT, under)).decision == ALLOW
    assert (await check(stubs, player_id, pb.ACTION_BET, 100)).decision == ALLOW
    tripping = await check(stubs, player_id, pb.ACTION_DEPOSIT, 100)
    assert tripping.decision == ALLOW
    explained = await stubs["backoffice"].ExplainVerdict(
        pb.ExplainVerdictRequest(verdict_id=tripping.verdict_id)
    )
    assert json.loads(explained.inputs_json)["cdd_gate_set"] is True
    assert set(reasons(await check(stubs, player_id, pb.ACTION_BET, 100))) == {"CDD_REQUIRED"}


async def test_the_cdd_gate_of_a_gbp_player_is_eur_2000_not_gbp_2000(
    stubs: dict[str, Any],
) -> None:
    # GBP 1,709.40 is worth EUR 2,000 at the configured 1.17 (rounded down: never looser).
    below = await verified_player(stubs)
    under = await check(stubs, below, pb.ACTION_DEPOSIT, CDD_THRESHOLD_GBP_MINOR - 1)
    explained = await stubs["backoffice"].ExplainVerdict(
        pb.ExplainVerdictRequest(verdict_id=under.verdict_id)
    )
    inputs = json.loads(explained.inputs_json)
    assert inputs["cdd_gate_set"] is False
    assert inputs["cdd_threshold_minor"] == CDD_THRESHOLD_GBP_MINOR
    assert (await check(stubs, below, pb.ACTION_BET, 100)).decision == ALLOW

    player_id = await verified_player(stubs)
    assert (await check(stubs, player_id, pb.ACTION_DEPOSIT, 100_000)).decision == ALLOW
    tripping = await check(stubs, player_id, pb.ACTION_DEPOSIT, 70_940)
    assert tripping.decision == ALLOW
    explained = await stubs["backoffice"].ExplainVerdict(
        pb.ExplainVerdictRequest(verdict_id=tripping.verdict_id)
    )
    assert json.loads(explained.inputs_json)["cdd_gate_set"] is True
    assert set(reasons(await check(stubs, player_id, pb.ACTION_BET, 100))) == {"CDD_REQUIRED"}


async def test_unknown_player_is_denied_and_callers_are_restricted(stubs) -> None:
    verdict = await check(stubs, "nobody-" + uuid.uuid4().hex, pb.ACTION_BET, 1)
    assert set(reasons(verdict)) == {"PLAYER_UNKNOWN"}
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await stubs["games"].SetLimit(pb.SetLimitRequest(player_id="p"))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED


# The verdict log


async def test_explain_tells_why(stubs) -> None:
    player_id = await verified_player(stubs)
    verdict = await check(stubs, player_id, pb.ACTION_BET, 100, country="US")
    explained = await stubs["backoffice"].ExplainVerdict(
        pb.ExplainVerdictRequest(verdict_id=verdict.verdict_id)
    )
    assert explained.verdict == verdict
    assert explained.player_id == player_id and explained.caller == "games"
    assert json.loads(explained.inputs_json)["request_country"] == "US"


async def test_log_verifies_and_a_tampered_verdict_is_detected(stubs, compliance) -> None:
    player_id = await verified_player(stubs)
    verdict = await check(stubs, player_id, pb.ACTION_BET, 100)
    report = await stubs["backoffice"].VerifyVerdictLog(pb.VerifyVerdictLogRequest())
    assert list(report.problems) == []
    assert report.rows_checked >= verdict.sequence
    assert report.checkpoint.endswith(".json")

    with psycopg.connect(admin_dsn()) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(
            "UPDATE compliance.verdicts SET decision = 'DENY' WHERE seq = %s", [verdict.sequence]
        )
    tampered = await stubs["backoffice"].VerifyVerdictLog(pb.VerifyVerdictLogRequest())
    assert any(p.startswith(f"CHAIN_BROKEN at {verdict.sequence}") for p in tampered.problems)
