"""Compliance rules as pure functions: limits, exclusions, checks, thresholds."""

from __future__ import annotations

import datetime as dt

import pytest

from services.compliance import aml, rules
from services.compliance.fx import EurConverter, UnconvertibleCurrency
from services.compliance.policy import Policy
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
# The CDD threshold in the amounts' currency, as the checks are given it (EUR 2,000 here).
THRESHOLD = 200_000


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


def test_self_exclusion_and_timeout_close_play_and_deposits_but_not_withdrawals() -> None:
    excluded = player(excluded_until=NOW + dt.timedelta(days=200), exclusion_kind="SELF_EXCLUSION")
    timed_out = player(excluded_until=NOW + dt.timedelta(hours=24), exclusion_kind="TIMEOUT")
    forever = player(excluded_indefinitely=True, exclusion_kind="SELF_EXCLUSION")
    for state in (excluded, timed_out, forever):
        for action in (Action.DEPOSIT, Action.BET, Action.GAME_LAUNCH):
            assert "SELF_EXCLUDED" in reasons(check(action, 100, state=state))
        # The player's own balance is returned to them: a withdrawal stays possible.
        assert check(Action.WITHDRAWAL, 10_000, state=state).allow
    # Other gates still apply to the withdrawal.
    unverified = player(
        excluded_indefinitely=True, exclusion_kind="SELF_EXCLUSION", address_verified=False
    )
    assert reasons(check(Action.WITHDRAWAL, 10_000, state=unverified)) == {"KYC_REQUIRED"}
    gated = player(excluded_indefinitely=True, exclusion_kind="SELF_EXCLUSION", cdd_required=True)
    assert reasons(check(Action.WITHDRAWAL, 10_000, state=gated)) == {"CDD_REQUIRED"}
    ended = player(excluded_until=NOW - dt.timedelta(seconds=1), exclusion_kind="TIMEOUT")
    assert check(Action.BET, 100, state=ended).allow


def test_an_aml_hold_and_an_exclusion_close_the_same_actions() -> None:
    held = player(play_hold=True)
    excluded = player(excluded_indefinitely=True, exclusion_kind="SELF_EXCLUSION")
    for action in (Action.DEPOSIT, Action.BET, Action.GAME_LAUNCH, Action.WITHDRAWAL):
        assert check(action, 100, state=held).allow == check(action, 100, state=excluded).allow


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
    assert not rules.crosses_cdd_threshold(Action.DEPOSIT, 49_999, usage, THRESHOLD)
    assert rules.crosses_cdd_threshold(Action.DEPOSIT, 50_000, usage, THRESHOLD)
    old = totals(Usage("DEPOSIT", 150_000, NOW - dt.timedelta(hours=25)))
    assert not rules.crosses_cdd_threshold(Action.DEPOSIT, 50_000, old, THRESHOLD)
    assert rules.crosses_cdd_threshold(Action.DEPOSIT, 200_000, totals(), THRESHOLD)
    assert rules.crosses_cdd_threshold(Action.WITHDRAWAL, 200_000, totals(), THRESHOLD)
    assert not rules.crosses_cdd_threshold(Action.WITHDRAWAL, 199_999, usage, THRESHOLD)
    assert not rules.crosses_cdd_threshold(Action.BET, 200_000, usage, THRESHOLD)


def test_after_a_cdd_clearance_only_deposits_since_count_towards_the_threshold() -> None:
    """GBP 1,500 + 600 trip the gate; due diligence recorded at `cleared`: the next GBP 1
    does not trip it again, deposits since the clearance reaching GBP 2,000 do."""
    cleared = NOW - dt.timedelta(hours=1)
    before = [
        Usage("DEPOSIT", 150_000, NOW - dt.timedelta(hours=3)),
        Usage("DEPOSIT", 60_000, NOW - dt.timedelta(hours=2)),
    ]
    usage = rules.UsageTotals.of(before, NOW, cdd_cleared_at=cleared)
    assert usage.total("DEPOSIT", Period.DAY) == 210_000  # limits still see the whole day
    assert not rules.crosses_cdd_threshold(Action.DEPOSIT, 100, usage, THRESHOLD)
    assert not rules.crosses_cdd_threshold(Action.DEPOSIT, 199_999, usage, THRESHOLD)
    after = rules.UsageTotals.of(
        [*before, Usage("DEPOSIT", 100, NOW - dt.timedelta(minutes=30))], NOW, cleared
    )
    assert not rules.crosses_cdd_threshold(Action.DEPOSIT, 199_899, after, THRESHOLD)
    assert rules.crosses_cdd_threshold(Action.DEPOSIT, 199_900, after, THRESHOLD)
    # A later deposit in the same batch is linked too (plus), a clearance older than the
    # day changes nothing.
    assert after.plus(Usage("DEPOSIT", 199_900, NOW), NOW).cdd_linked_minor == 200_000
    stale = rules.UsageTotals.of(before, NOW, cdd_cleared_at=NOW - dt.timedelta(days=2))
    assert stale.cdd_linked_minor == 210_000


def test_the_cdd_threshold_trips_on_crossing_as_monitoring_does() -> None:
    """One rule for checks (player currency) and monitoring (EUR): a deposit trips it alone,
    or by taking the linked total from under the threshold to over it, not by being over."""
    cleared = NOW - dt.timedelta(hours=2)
    cases = [
        # (earlier deposits as (amount, hours ago), the new deposit, cleared at)
        ([(150_000, 3)], 60_000, None),
        ([(150_000, 3)], 49_999, None),
        ([(150_000, 3), (60_000, 2.5)], 1, None),
        ([(150_000, 3), (60_000, 2.5)], 1, cleared),
        ([(150_000, 3), (60_000, 2.5), (100, 1)], 199_900, cleared),
        ([(150_000, 3), (60_000, 2.5), (100, 1)], 199_899, cleared),
        ([(250_000, 3)], 200_000, None),
        ([(100_000, 30)], 150_000, None),
    ]
    for earlier, amount, cleared_at in cases:
        entries = [Usage("DEPOSIT", m, NOW - dt.timedelta(hours=h)) for m, h in earlier]
        totals = rules.UsageTotals.of(entries, NOW, cdd_cleared_at=cleared_at)
        checks_trip = rules.crosses_cdd_threshold(Action.DEPOSIT, amount, totals, THRESHOLD)
        history = [
            aml.Activity(f"e{i}", aml.DEPOSIT, m, NOW - dt.timedelta(hours=h))
            for i, (m, h) in enumerate(earlier)
        ]
        new = aml.Activity("new", aml.DEPOSIT, amount, NOW)
        found = aml.evaluate(
            new,
            history,
            account_opened=None,
            config=aml.AmlConfig(),
            cdd_threshold_eur_minor=THRESHOLD,
            cdd_cleared_at=cleared_at,
        )
        monitoring_trips = any(f.rule == aml.CDD_THRESHOLD for f in found)
        assert checks_trip == monitoring_trips, (earlier, amount, cleared_at)
    tripped = [
        rules.crosses_cdd_threshold(
            Action.DEPOSIT,
            amount,
            rules.UsageTotals.of(
                [Usage("DEPOSIT", m, NOW - dt.timedelta(hours=h)) for m, h in earlier],
                NOW,
                cdd_cleared_at=cleared_at,
            ),
            THRESHOLD,
        )
        for earlier, amount, cleared_at in cases
    ]
    assert tripped == [True, False, False, False, True, False, True, False]


def test_monitoring_ignores_activity_from_before_the_last_clearance() -> None:
    """A deposit event arriving after the clearance but dated before it was covered by the
    due diligence: it neither trips the threshold nor links with later ones."""
    cleared = NOW - dt.timedelta(hours=1)
    late = aml.Activity("late", aml.DEPOSIT, 250_000, NOW - dt.timedelta(hours=2))
    config, threshold = aml.AmlConfig(), CONFIG.cdd_threshold_eur_minor
    assert not aml.evaluate(
        late,
        [],
        account_opened=None,
        config=config,
        cdd_threshold_eur_minor=threshold,
        cdd_cleared_at=cleared,
    )
    after = aml.Activity("after", aml.DEPOSIT, 199_999, NOW)
    found = aml.evaluate(
        after,
        [late],
        account_opened=None,
        config=config,
        cdd_threshold_eur_minor=threshold,
        cdd_cleared_at=cleared,
    )
    assert not [f for f in found if f.rule == aml.CDD_THRESHOLD]


def test_the_cdd_threshold_is_eur_2000_in_the_jurisdictions_currency_rounded_down() -> None:
    """Configured in EUR; a GB player's checks compare GBP against EUR 2,000 converted at
    the configured rate with the converter monitoring uses, never above it: GBP 2,000
    (EUR 2,340 at 1.17) no longer passes, GBP 1,709.40 (EUR 1,999.998) trips it."""
    fx = EurConverter({"GBP": "1.17"})
    mt = ComplianceConfig(currency="EUR")
    policy = Policy(CONFIG, {"MT": mt}, fx=fx)
    gb = policy.for_player(player())
    assert CONFIG.cdd_threshold_eur_minor == 200_000
    assert gb.cdd_threshold_minor == 170_940
    assert policy.for_player(player(country="MT")).cdd_threshold_minor == 200_000
    assert policy.for_player(None).cdd_threshold_minor == 170_940
    empty = rules.UsageTotals()
    for amount in (200_000, 170_940):
        assert rules.crosses_cdd_threshold(Action.DEPOSIT, amount, empty, gb.cdd_threshold_minor), (
            amount
        )
    assert not rules.crosses_cdd_threshold(Action.DEPOSIT, 170_939, empty, gb.cdd_threshold_minor)
    assert fx.to_eur_minor(170_939, "GBP") < 200_000
    # Linked GBP deposits worth EUR 2,000 together trip it as well.
    linked = rules.UsageTotals.of([Usage("DEPOSIT", 100_000, NOW)], NOW)
    assert rules.crosses_cdd_threshold(Action.DEPOSIT, 70_940, linked, gb.cdd_threshold_minor)
    with pytest.raises(UnconvertibleCurrency):
        Policy(CONFIG, {}, fx=EurConverter({"EUR": "1"}))


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
