"""Compliance rules as pure functions: limits, exclusions, checks, thresholds."""

from __future__ import annotations

import datetime as dt

import pytest

from services.compliance import rules
from services.compliance.rules import (
    Action,
    ComplianceConfig,
    LimitKind,
    LimitState,
    Period,
    PlayerState,
    Usage,
)
from services.runtime.errors import DomainError

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
CONFIG = ComplianceConfig()
COOLING_OFF = dt.timedelta(hours=24)


def player(**overrides: object) -> PlayerState:
    base = dict(
        player_id="p",
        birth_date=dt.date(1990, 1, 1),
        country="GB",
        name_verified=True,
        address_verified=True,
        birth_date_verified=True,
        cdd_required=False,
        excluded_until=None,
        excluded_indefinitely=False,
        exclusion_kind=None,
    )
    base.update(overrides)
    return PlayerState(**base)  # type: ignore[arg-type]


def limit(kind: LimitKind, period: Period, amount: int | None, **kw: object) -> LimitState:
    return LimitState(
        kind,
        period,
        amount,
        kw.get("pending"),  # type: ignore[arg-type]
        kw.get("requested"),
        NOW,
    )  # type: ignore[arg-type]


def check(
    action: Action,
    amount: int,
    *,
    state: PlayerState | None = None,
    limits: list[LimitState] = (),
    usage: list[Usage] = (),
    slots: bool = False,
    country: str = "GB",
    now: dt.datetime = NOW,
) -> rules.Decision:
    return rules.action_check(
        state or player(),
        action,
        amount_minor=amount,
        slots=slots,
        request_country=country,
        limits=list(limits),
        usage=rules.UsageTotals.of(list(usage), now),
        now=now,
        config=CONFIG,
    )


def reasons(decision: rules.Decision) -> set[str]:
    return {r.reason for r in decision.reasons}


# Limits


def test_first_limit_and_decrease_apply_at_once() -> None:
    first = rules.set_limit(None, 10_000, NOW)
    assert (first.amount_minor, first.effective_at, first.change) == (10_000, NOW, "SET")
    current = limit(LimitKind.DEPOSIT, Period.DAY, 10_000)
    lower = rules.set_limit(current, 5_000, NOW)
    assert (lower.amount_minor, lower.effective_at) == (5_000, NOW)


def test_increase_waits_for_cooling_off_and_a_confirmation_after_it() -> None:
    current = limit(LimitKind.DEPOSIT, Period.DAY, 10_000)
    raised = rules.set_limit(current, 50_000, NOW)
    assert raised.amount_minor == 10_000 and raised.pending_minor == 50_000
    assert raised.effective_at is None
    pending = limit(LimitKind.DEPOSIT, Period.DAY, 10_000, pending=50_000, requested=NOW)
    with pytest.raises(DomainError) as early:
        rules.confirm_increase(pending, NOW + dt.timedelta(hours=23, minutes=59), COOLING_OFF)
    assert early.value.reason == "COOLING_OFF_NOT_OVER"
    done = rules.confirm_increase(pending, NOW + dt.timedelta(hours=24, seconds=1), COOLING_OFF)
    assert (done.amount_minor, done.pending_minor, done.change) == (50_000, None, "CONFIRMED")


def test_pending_increase_does_not_raise_the_limit_in_force() -> None:
    pending = limit(LimitKind.DEPOSIT, Period.DAY, 10_000, pending=50_000, requested=NOW)
    decision = check(Action.DEPOSIT, 20_000, limits=[pending])
    assert reasons(decision) == {"LIMIT_EXCEEDED"}


def test_lowest_applicable_limit_wins() -> None:
    usage = [Usage("DEPOSIT", 30_000, NOW - dt.timedelta(days=3))]
    limits = [
        limit(LimitKind.DEPOSIT, Period.DAY, 50_000),
        limit(LimitKind.DEPOSIT, Period.WEEK, 40_000),
    ]
    decision = check(Action.DEPOSIT, 20_000, limits=limits, usage=usage)
    exceeded = [r for r in decision.reasons if r.reason == "LIMIT_EXCEEDED"]
    assert [r.metadata["period"] for r in exceeded] == ["WEEK"]
    assert exceeded[0].metadata["used_minor"] == "30000"
    assert exceeded[0].metadata["resets_at"] == (NOW + dt.timedelta(days=4)).isoformat()
    assert check(Action.DEPOSIT, 10_000, limits=limits, usage=usage).allow


def test_loss_limit_counts_stakes_net_of_wins() -> None:
    loss = [limit(LimitKind.LOSS, Period.DAY, 1_000)]
    usage = [
        Usage("BET", 900, NOW - dt.timedelta(hours=1)),
        Usage("WIN", 500, NOW - dt.timedelta(hours=1)),
    ]
    assert check(Action.BET, 500, limits=loss, usage=usage).allow
    assert not check(Action.BET, 700, limits=loss, usage=usage).allow
    # A rolled-back stake no longer counts as staked, nor as lost.
    rolled_back = [*usage, Usage("ROLLBACK", 400, NOW - dt.timedelta(minutes=30))]
    assert check(Action.BET, 1_000, limits=loss, usage=rolled_back).allow
    assert not check(Action.BET, 1_001, limits=loss, usage=rolled_back).allow


# Gates


def test_self_exclusion_and_timeout_close_every_action() -> None:
    excluded = player(excluded_until=NOW + dt.timedelta(days=200), exclusion_kind="SELF_EXCLUSION")
    for action in (Action.DEPOSIT, Action.BET, Action.WITHDRAWAL, Action.GAME_LAUNCH):
        assert "SELF_EXCLUDED" in reasons(check(action, 0, state=excluded))
    ended = player(excluded_until=NOW - dt.timedelta(seconds=1), exclusion_kind="TIMEOUT")
    assert check(Action.BET, 100, state=ended).allow


def test_kyc_jurisdiction_and_cdd_gates() -> None:
    unverified = player(address_verified=False)
    decision = check(Action.BET, 100, state=unverified)
    assert decision.reasons[0].metadata["missing"] == "address"
    assert reasons(check(Action.BET, 100, country="US")) == {"JURISDICTION_BLOCKED"}
    assert reasons(check(Action.BET, 100, state=player(cdd_required=True))) == {"CDD_REQUIRED"}
    unknown = rules.action_check(
        None,
        Action.BET,
        amount_minor=1,
        slots=False,
        request_country="GB",
        limits=[],
        usage=rules.UsageTotals(),
        now=NOW,
        config=CONFIG,
    )
    assert reasons(unknown) == {"PLAYER_UNKNOWN"}


def test_slot_stake_cap_depends_on_age() -> None:
    young = player(birth_date=dt.date(2004, 6, 1))  # 22
    assert reasons(check(Action.BET, 201, state=young, slots=True)) == {"STAKE_CAP_EXCEEDED"}
    assert check(Action.BET, 200, state=young, slots=True).allow
    assert check(Action.BET, 500, slots=True).allow
    assert not check(Action.BET, 501, slots=True).allow
    assert check(Action.BET, 5_000, slots=False).allow


def test_cdd_threshold_on_single_or_linked_deposits_in_24h() -> None:
    def totals(*entries: Usage) -> rules.UsageTotals:
        return rules.UsageTotals.of(list(entries), NOW)

    usage = totals(Usage("DEPOSIT", 150_000, NOW - dt.timedelta(hours=5)))
    assert not rules.crosses_cdd_threshold(Action.DEPOSIT, 49_999, usage, CONFIG)
    assert rules.crosses_cdd_threshold(Action.DEPOSIT, 50_000, usage, CONFIG)
    old = totals(Usage("DEPOSIT", 150_000, NOW - dt.timedelta(hours=25)))
    assert not rules.crosses_cdd_threshold(Action.DEPOSIT, 50_000, old, CONFIG)
    assert rules.crosses_cdd_threshold(Action.DEPOSIT, 200_000, totals(), CONFIG)


# Registration and exclusions


def test_registration_rules() -> None:
    applicant = rules.Applicant("Ann", "Lee", dt.date(2008, 11, 27), "a@x", "N1 1AA", "GB")
    decision = rules.registration(
        applicant,
        today=NOW.date(),
        request_country="GB",
        excluded_internally=False,
        register_status="NOT_EXCLUDED",
        register_request_id="r",
        config=CONFIG,
    )
    assert reasons(decision) == {"UNDER_AGE"}  # 18 tomorrow
    adult = rules.Applicant("Ann", "Lee", dt.date(2008, 11, 26), "a@x", "N1 1AA", "GB")
    for status, expected in (
        ("NOT_EXCLUDED", set()),
        ("PREVIOUSLY_EXCLUDED", set()),
        ("EXCLUDED", {"REGISTER_EXCLUDED"}),
        ("UNAVAILABLE", {"REGISTER_UNAVAILABLE"}),
    ):
        d = rules.registration(
            adult,
            today=NOW.date(),
            request_country="GB",
            excluded_internally=False,
            register_status=status,
            register_request_id="r",
            config=CONFIG,
        )
        assert reasons(d) == expected, status


def test_exclusions_start_now_cannot_be_shortened_and_have_bounds() -> None:
    ex = rules.exclude(
        player(),
        timeout_hours=24,
        self_exclusion_days=None,
        indefinite=False,
        now=NOW,
        config=CONFIG,
    )
    assert (ex.kind, ex.until) == ("TIMEOUT", NOW + dt.timedelta(hours=24))
    with pytest.raises(DomainError):
        rules.exclude(
            player(),
            timeout_hours=23,
            self_exclusion_days=None,
            indefinite=False,
            now=NOW,
            config=CONFIG,
        )
    with pytest.raises(DomainError):
        rules.exclude(
            player(),
            timeout_hours=None,
            self_exclusion_days=182,
            indefinite=False,
            now=NOW,
            config=CONFIG,
        )
    excluded = player(excluded_until=NOW + dt.timedelta(days=200), exclusion_kind="SELF_EXCLUSION")
    with pytest.raises(DomainError) as shorter:
        rules.exclude(
            excluded,
            timeout_hours=48,
            self_exclusion_days=None,
            indefinite=False,
            now=NOW,
            config=CONFIG,
        )
    assert shorter.value.reason == "EXCLUSION_CANNOT_BE_SHORTENED"
    longer = rules.exclude(
        excluded,
        timeout_hours=None,
        self_exclusion_days=365,
        indefinite=False,
        now=NOW,
        config=CONFIG,
    )
    assert longer.until == NOW + dt.timedelta(days=365)
    forever = player(excluded_indefinitely=True, exclusion_kind="SELF_EXCLUSION")
    with pytest.raises(DomainError):
        rules.exclude(
            forever,
            timeout_hours=None,
            self_exclusion_days=3650,
            indefinite=False,
            now=NOW,
            config=CONFIG,
        )
