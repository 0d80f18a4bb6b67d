"""AML monitoring rules and EUR conversion, without I/O: thresholds just under and at their
values, window boundaries, and rules switched off by their flag."""

from __future__ import annotations

import datetime as dt
import itertools
import random

import pytest

from services.compliance import aml
from services.compliance.aml import Activity, AmlAction, AmlConfig
from services.compliance.fx import EurConverter, UnconvertibleCurrency

NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)
CONFIG = AmlConfig()
CDD_EUR = 200_000  # the UKGC / MLR 2017 threshold, a jurisdiction's default
_ids = itertools.count()


def act(kind: str, eur: int, ago: dt.timedelta = dt.timedelta(0), **extra: str) -> Activity:
    return Activity(f"e{next(_ids)}", kind, eur, NOW - ago, **extra)  # type: ignore[arg-type]


def findings(
    new: Activity,
    recent: list[Activity],
    *,
    opened: dt.datetime | None = None,
    config: AmlConfig = CONFIG,
    cdd_eur: int = CDD_EUR,
    enabled: aml.RuleEnabled = aml.every_rule_on,
) -> dict[str, aml.Finding]:
    found = aml.evaluate(
        new,
        recent,
        account_opened=opened,
        config=config,
        cdd_threshold_eur_minor=cdd_eur,
        enabled=enabled,
    )
    return {f.rule: f for f in found}


H = dt.timedelta(hours=1)
D = dt.timedelta(days=1)


# CDD threshold


def test_single_deposit_at_the_threshold_requires_cdd_and_one_under_does_not() -> None:
    at = findings(act("DEPOSIT", 200_000), [])
    assert at[aml.CDD_THRESHOLD].action is AmlAction.REQUIRE_CDD
    assert at[aml.CDD_THRESHOLD].evidence["single"] is True
    assert aml.CDD_THRESHOLD not in findings(act("DEPOSIT", 199_999), [])


def test_linked_deposits_in_24_hours_trip_when_their_sum_crosses() -> None:
    earlier = [act("DEPOSIT", 100_000, 23 * H), act("DEPOSIT", 50_000, H)]
    new = act("DEPOSIT", 50_000)
    finding = findings(new, earlier)[aml.CDD_THRESHOLD]
    assert finding.evidence["total_eur_minor"] == 200_000
    assert finding.evidence["flow"] == "deposits"
    assert set(finding.evidence["event_ids"]) == {a.event_id for a in [*earlier, new]}


def test_a_deposit_exactly_24_hours_old_is_no_longer_linked() -> None:
    assert aml.CDD_THRESHOLD not in findings(
        act("DEPOSIT", 100_000), [act("DEPOSIT", 100_000, 24 * H)]
    )
    assert aml.CDD_THRESHOLD in findings(
        act("DEPOSIT", 100_000), [act("DEPOSIT", 100_000, 24 * H - dt.timedelta(seconds=1))]
    )


def test_once_above_the_threshold_further_small_deposits_do_not_retrip() -> None:
    earlier = [act("DEPOSIT", 150_000, 2 * H), act("DEPOSIT", 60_000, H)]
    assert aml.CDD_THRESHOLD not in findings(act("DEPOSIT", 1_000), earlier)


@pytest.mark.parametrize(
    ("kind", "flow"),
    [("BET", "stakes"), ("WIN", "wins"), ("WITHDRAWAL_RESERVE", "withdrawals")],
)
def test_each_flow_has_its_own_threshold(kind: str, flow: str) -> None:
    # Deposits do not link with stakes: each flow is summed on its own.
    earlier = [act("DEPOSIT", 150_000, H), act(kind, 150_000, H)]
    finding = findings(act(kind, 50_000), earlier)[aml.CDD_THRESHOLD]
    assert finding.evidence["flow"] == flow
    assert finding.evidence["total_eur_minor"] == 200_000


def test_commits_releases_and_adjustments_are_not_a_cdd_flow() -> None:
    for kind in ("WITHDRAWAL_COMMIT", "WITHDRAWAL_RELEASE", "ADJUSTMENT", "BET_ROLLBACK"):
        assert aml.CDD_THRESHOLD not in findings(act(kind, 500_000), [])


# Structuring


def test_three_deposits_just_under_the_threshold_in_a_week_are_structuring() -> None:
    earlier = [act("DEPOSIT", 180_000, 6 * D), act("DEPOSIT", 199_999, 3 * D)]
    finding = findings(act("DEPOSIT", 190_000), earlier)[aml.STRUCTURING]
    assert finding.action is AmlAction.ALERT
    assert finding.evidence["count"] == 3
    assert finding.evidence["band_eur_minor"] == [180_000, 200_000]


def test_deposits_below_the_band_at_the_threshold_or_older_than_a_week_do_not_count() -> None:
    new = act("DEPOSIT", 190_000)
    assert aml.STRUCTURING not in findings(
        new, [act("DEPOSIT", 179_999, D), act("DEPOSIT", 190_000, D)]
    )
    assert aml.STRUCTURING not in findings(
        new, [act("DEPOSIT", 200_000, D), act("DEPOSIT", 190_000, D)]
    )
    assert aml.STRUCTURING not in findings(
        new, [act("DEPOSIT", 190_000, 7 * D), act("DEPOSIT", 190_000, D)]
    )


# Deposit then withdrawal with little play


def test_withdrawal_after_deposits_with_stakes_below_one_turnover_is_flagged() -> None:
    earlier = [act("DEPOSIT", 60_000, 2 * D), act("BET", 59_999, D)]
    finding = findings(act("WITHDRAWAL_RESERVE", 50_000, withdrawal_id="w1"), earlier)
    evidence = finding[aml.LOW_TURNOVER].evidence
    assert evidence["deposits_eur_minor"] == 60_000 and evidence["stakes_eur_minor"] == 59_999
    assert evidence["withdrawal_id"] == "w1"


def test_full_turnover_small_deposits_or_rolled_back_stakes() -> None:
    withdrawal = act("WITHDRAWAL_RESERVE", 50_000)
    played = [act("DEPOSIT", 60_000, 2 * D), act("BET", 60_000, D)]
    assert aml.LOW_TURNOVER not in findings(withdrawal, played)
    small = [act("DEPOSIT", 49_999, 2 * D)]
    assert aml.LOW_TURNOVER not in findings(withdrawal, small)
    # A rolled-back stake was no play.
    rolled_back = [*played, act("BET_ROLLBACK", 60_000, D - H)]
    assert aml.LOW_TURNOVER in findings(withdrawal, rolled_back)


# Fast large spend on a new account


def test_large_stakes_on_a_new_account_hold_play() -> None:
    earlier = [act("BET", 250_000, 23 * H)]
    finding = findings(act("BET", 250_000), earlier, opened=NOW - 6 * D)[aml.FAST_LARGE_SPEND]
    assert finding.action is AmlAction.HOLD_PLAY
    assert finding.evidence["stakes_eur_minor"] == 500_000


def test_fast_spend_needs_a_young_account_and_the_full_amount_within_24_hours() -> None:
    earlier = [act("BET", 250_000, 23 * H)]
    assert aml.FAST_LARGE_SPEND not in findings(act("BET", 250_000), earlier, opened=NOW - 7 * D)
    assert aml.FAST_LARGE_SPEND not in findings(act("BET", 249_999), earlier, opened=NOW - D)
    assert aml.FAST_LARGE_SPEND not in findings(
        act("BET", 250_000), [act("BET", 250_000, 24 * H)], opened=NOW - D
    )
    assert aml.FAST_LARGE_SPEND not in findings(act("BET", 500_000), [], opened=None)


# Several payment instruments


def test_a_third_instrument_in_30_days_is_flagged_once() -> None:
    earlier = [
        act("DEPOSIT", 1_000, 29 * D, instrument="card:a"),
        act("WITHDRAWAL_RESERVE", 1_000, D, instrument="iban:b"),
    ]
    new = act("DEPOSIT", 1_000, instrument="wallet:c")
    finding = findings(new, earlier)[aml.MULTIPLE_INSTRUMENTS]
    assert finding.evidence["instruments"] == ["card:a", "iban:b", "wallet:c"]
    # Using a known instrument again adds nothing.
    assert aml.MULTIPLE_INSTRUMENTS not in findings(
        act("DEPOSIT", 1_000, instrument="card:a"), [*earlier, new]
    )


def test_instruments_older_than_30_days_or_only_two_do_not_count() -> None:
    new = act("DEPOSIT", 1_000, instrument="wallet:c")
    assert aml.MULTIPLE_INSTRUMENTS not in findings(
        new,
        [
            act("DEPOSIT", 1_000, 30 * D, instrument="card:a"),
            act("DEPOSIT", 1_000, D, instrument="iban:b"),
        ],
    )


# Withdrawal reversal


def test_stake_after_a_released_withdrawal_is_a_reversal() -> None:
    release = act("WITHDRAWAL_RELEASE", 40_000, 2 * H, withdrawal_id="w9")
    stake = act("BET", 1_000, H)
    finding = findings(stake, [release])[aml.WITHDRAWAL_REVERSAL]
    assert finding.evidence["release_event_id"] == release.event_id
    assert finding.evidence["withdrawal_id"] == "w9"
    # Only the first stake after the release reports it.
    assert aml.WITHDRAWAL_REVERSAL not in findings(act("BET", 1_000), [release, stake])


def test_a_release_alone_or_stakes_long_after_are_not_reversals() -> None:
    release = act("WITHDRAWAL_RELEASE", 40_000, 25 * H)
    assert aml.WITHDRAWAL_REVERSAL not in findings(act("BET", 1_000), [release])
    assert aml.WITHDRAWAL_REVERSAL not in findings(act("WITHDRAWAL_RELEASE", 40_000), [])


def test_a_release_arriving_after_its_stake_is_still_seen() -> None:
    stake = act("BET", 1_000, H)
    release = act("WITHDRAWAL_RELEASE", 40_000, 2 * H)
    assert aml.WITHDRAWAL_REVERSAL in findings(release, [stake])


# Events arriving out of order: a requeued message runs after later ones, replicas share a
# queue. Every arrival order of the same activity gives the same patterns, each reported once.


def arrive(
    events: list[Activity],
    *,
    opened: dt.datetime | None = None,
    cleared: dt.datetime | None = None,
    config: AmlConfig = CONFIG,
) -> list[aml.Finding]:
    """Evaluate `events` in this arrival order, each against those that arrived before it,
    as monitoring does; every finding raised on the way."""
    arrived: list[Activity] = []
    raised: list[aml.Finding] = []
    for event in events:
        raised += aml.evaluate(
            event,
            arrived,
            account_opened=opened,
            config=config,
            cdd_threshold_eur_minor=CDD_EUR,
            cdd_cleared_at=cleared,
        )
        arrived.append(event)
    return raised


def of_rule(rule: str, raised: list[aml.Finding]) -> list[aml.Finding]:
    return [f for f in raised if f.rule == rule]


def every_order(events: list[Activity]) -> list[list[Activity]]:
    return [list(order) for order in itertools.permutations(events)]


def test_linked_deposits_arriving_out_of_order_require_cdd_once() -> None:
    # EUR 800 three times within 2 hours: EUR 2,400 linked, whichever arrives last.
    a, b, c = act("DEPOSIT", 80_000, 2 * H), act("DEPOSIT", 80_000, H), act("DEPOSIT", 80_000)
    for order in every_order([a, b, c]):
        (finding,) = of_rule(aml.CDD_THRESHOLD, arrive(order))
        assert finding.action is AmlAction.REQUIRE_CDD
        assert finding.evidence["event_ids"] == [a.event_id, b.event_id, c.event_id], order
        assert finding.evidence["total_eur_minor"] == 240_000
        assert finding.evidence["trigger_event_id"] == order[-1].event_id
    # A, C, B: the crossing is C's (in event time), found when B arrives.
    (late,) = of_rule(aml.CDD_THRESHOLD, arrive([a, c, b]))
    assert late.evidence["crossing_event_id"] == c.event_id


def test_a_late_deposit_that_only_moves_a_reported_crossing_raises_nothing_new() -> None:
    first, second = act("DEPOSIT", 150_000, 20 * H), act("DEPOSIT", 60_000, 10 * H)
    late = act("DEPOSIT", 60_000, 22 * H)  # before both: the crossing is now `first`'s
    assert len(of_rule(aml.CDD_THRESHOLD, arrive([first, second]))) == 1
    assert len(of_rule(aml.CDD_THRESHOLD, arrive([first, second, late]))) == 1
    for order in every_order([first, second, late]):
        assert len(of_rule(aml.CDD_THRESHOLD, arrive(order))) == 1, order


def test_a_late_deposit_from_before_the_cdd_clearance_never_trips_it() -> None:
    cleared = NOW - 3 * H
    old = act("DEPOSIT", 150_000, 4 * H)
    since = [act("DEPOSIT", 60_000, 2 * H), act("DEPOSIT", 60_000, H)]
    for order in every_order([old, *since]):
        assert of_rule(aml.CDD_THRESHOLD, arrive(order, cleared=cleared)) == [], order
    # Since the clearance alone reaching it does, in any order.
    more = act("DEPOSIT", 80_000)
    for order in every_order([old, *since, more]):
        (finding,) = of_rule(aml.CDD_THRESHOLD, arrive(order, cleared=cleared))
        assert old.event_id not in finding.evidence["event_ids"]


def test_stakes_arriving_out_of_order_reach_the_cdd_threshold() -> None:
    stakes = [act("BET", 70_000, 3 * H), act("BET", 70_000, 2 * H), act("BET", 70_000, H)]
    for order in every_order(stakes):
        (finding,) = of_rule(aml.CDD_THRESHOLD, arrive(order))
        assert finding.evidence["flow"] == "stakes"


def test_structuring_is_found_whatever_order_the_deposits_arrive_in() -> None:
    deposits = [
        act("DEPOSIT", 190_000, 5 * D),
        act("DEPOSIT", 185_000, 3 * D),
        act("DEPOSIT", 199_999),
    ]
    for order in every_order(deposits):
        (finding,) = of_rule(aml.STRUCTURING, arrive(order))
        assert finding.evidence["event_ids"] == [d.event_id for d in deposits], order
        assert finding.evidence["count"] == 3
    # Applied 0, 2, 1: the window holding the late one reaches past it.
    (late,) = of_rule(aml.STRUCTURING, arrive([deposits[0], deposits[2], deposits[1]]))
    assert late.evidence["trigger_event_id"] == deposits[1].event_id


def test_a_deposit_arriving_after_the_withdrawal_request_still_shows_little_play() -> None:
    deposit = act("DEPOSIT", 60_000, 2 * D)
    stake = act("BET", 10_000, D)
    request = act("WITHDRAWAL_RESERVE", 50_000, withdrawal_id="w1")
    for order in every_order([deposit, stake, request]):
        (finding,) = of_rule(aml.LOW_TURNOVER, arrive(order))
        assert finding.evidence["withdrawal_id"] == "w1", order
        assert finding.evidence["deposit_event_ids"] == [deposit.event_id]


def test_stakes_arriving_out_of_order_on_a_new_account_hold_play_once() -> None:
    stakes = [act("BET", 250_000, 2 * H), act("BET", 250_000, H)]
    for order in every_order(stakes):
        (finding,) = of_rule(aml.FAST_LARGE_SPEND, arrive(order, opened=NOW - D))
        assert finding.evidence["stakes_eur_minor"] == 500_000
        assert finding.action is AmlAction.HOLD_PLAY


def test_instruments_arriving_out_of_order_are_flagged_once() -> None:
    uses = [
        act("DEPOSIT", 1_000, 20 * D, instrument="card:a"),
        act("WITHDRAWAL_RESERVE", 1_000, 10 * D, instrument="iban:b"),
        act("DEPOSIT", 1_000, D, instrument="wallet:c"),
        act("DEPOSIT", 1_000, H, instrument="card:a"),  # known: nothing new
    ]
    for order in every_order(uses):
        (finding,) = of_rule(aml.MULTIPLE_INSTRUMENTS, arrive(order))
        assert finding.evidence["instruments"] == ["card:a", "iban:b", "wallet:c"], order


def test_a_reversal_is_reported_once_per_release_in_any_order() -> None:
    release = act("WITHDRAWAL_RELEASE", 40_000, 3 * H, withdrawal_id="w9")
    stakes = [act("BET", 1_000, 2 * H), act("BET", 1_000, H)]
    for order in every_order([release, *stakes]):
        (finding,) = of_rule(aml.WITHDRAWAL_REVERSAL, arrive(order))
        assert finding.evidence["release_event_id"] == release.event_id, order


# Flags and configuration


def test_a_rule_switched_off_is_not_evaluated() -> None:
    new = act("DEPOSIT", 250_000)
    assert aml.CDD_THRESHOLD in findings(new, [])
    assert findings(new, [], enabled=lambda rule: rule != aml.CDD_THRESHOLD) == {}


def test_every_threshold_is_configuration() -> None:
    config = AmlConfig(fast_spend_eur_minor=1_000)
    assert config.version != CONFIG.version
    # The CDD threshold is the jurisdiction's, given per player: structuring's band follows it.
    assert aml.CDD_THRESHOLD in findings(act("DEPOSIT", 1_000), [], cdd_eur=1_000)
    assert aml.CDD_THRESHOLD not in findings(act("DEPOSIT", 1_000), [])
    under = [act("DEPOSIT", 950, ago=h * H) for h in (1, 2)]
    assert aml.STRUCTURING in findings(act("DEPOSIT", 950), under, cdd_eur=1_000)
    assert aml.STRUCTURING not in findings(act("DEPOSIT", 950), under)
    with pytest.raises(ValueError):
        AmlConfig(structuring_band_percent=101)


# EUR conversion


def test_conversion_is_exact_and_rounds_half_to_even() -> None:
    fx = EurConverter({"EUR": "1", "GBP": "1.17", "JPY": "0.0061", "BHD": "2.43"})
    assert fx.to_eur_minor(100_000, "GBP") == 117_000
    assert fx.to_eur_minor(171_000, "GBP") == 200_070
    assert fx.to_eur_minor(1_000, "JPY") == 610  # JPY has no minor unit
    assert fx.to_eur_minor(5, "BHD") == 1  # 1.215 cents
    half = EurConverter({"USD": "0.5"})
    assert half.to_eur_minor(1, "USD") == 0 and half.to_eur_minor(3, "USD") == 2


def test_a_threshold_converted_from_eur_is_rounded_down_so_never_looser() -> None:
    fx = EurConverter({"GBP": "1.17", "JPY": "0.0061", "BHD": "2.43", "USD": "0.92"})
    assert fx.from_eur_minor(200_000, "EUR") == 200_000
    assert fx.from_eur_minor(200_000, "GBP") == 170_940  # GBP 1,709.401...
    assert fx.from_eur_minor(200_000, "JPY") == 327_868  # no minor unit: JPY 327,868.85...
    assert fx.from_eur_minor(200_000, "BHD") == 823_045  # three: BHD 823.045267...
    assert fx.from_eur_minor(230_000, "USD") == 250_000  # exact: no rounding
    for currency in ("GBP", "JPY", "BHD", "USD"):
        threshold = fx.from_eur_minor(200_000, currency)
        # Not above EUR 2,000, and one minor unit more is worth at least EUR 2,000.
        assert fx.to_eur_minor(threshold, currency) <= 200_000
        assert fx.to_eur_minor(threshold + 1, currency) >= 200_000
    with pytest.raises(UnconvertibleCurrency):
        fx.from_eur_minor(200_000, "CHF")


def test_a_currency_without_a_rate_is_refused_not_guessed() -> None:
    fx = EurConverter({"GBP": "1.17"})
    with pytest.raises(UnconvertibleCurrency):
        fx.to_eur_minor(100, "USD")
    for bad in ({"GBP": "abc"}, {"GBP": "-1"}, {"XXX": "1"}, {"EUR": "2"}):
        with pytest.raises(ValueError):
            EurConverter(bad)


def test_each_kind_reads_only_the_windows_of_the_rules_it_triggers() -> None:
    """Monitoring reads `lookback(kind)` of activity on each side of an event, a day for a
    stake or a win instead of the month the deposit rules need: on any history the findings
    are those of the whole history. Thresholds are small so that every rule fires often."""
    config = AmlConfig(
        low_turnover_min_deposits_eur_minor=300,
        fast_spend_eur_minor=900,
        structuring_min_deposits=2,
        instruments_min_distinct=2,
    )
    assert config.lookback(aml.BET) == config.lookback(aml.WIN) == D
    assert config.lookback(aml.DEPOSIT) == 30 * D
    assert config.lookback(aml.WITHDRAWAL_COMMIT) == dt.timedelta(0)
    rng = random.Random(20261127)
    kinds = sorted(aml.KINDS)
    fired: set[str] = set()
    for trial in range(400):
        history = [
            Activity(
                f"t{trial}-{i}",
                rng.choice(kinds),
                rng.choice([100, 250, 450, 950, 1_000, 1_500]),
                # Mostly close to the new event, some a month or more away.
                NOW - dt.timedelta(hours=rng.uniform(-72, 72) * rng.choice([1, 1, 13])),
                instrument=rng.choice([None, "card-1", "card-2", "iban-1"]),
            )
            for i in range(rng.randint(0, 40))
        ]
        new = Activity(
            f"t{trial}-new", rng.choice(kinds), rng.choice([100, 950, 1_000]), NOW, "card-2"
        )
        opened = NOW - dt.timedelta(days=rng.choice([1, 3, 10]))
        cleared = rng.choice([None, NOW - dt.timedelta(hours=rng.uniform(0, 48))])
        span = config.lookback(new.kind)
        near = [a for a in history if new.at - span < a.at <= new.at + span]
        whole, windowed = (
            aml.evaluate(
                new,
                recent,
                account_opened=opened,
                config=config,
                cdd_threshold_eur_minor=1_000,
                cdd_cleared_at=cleared,
            )
            for recent in (history, near)
        )
        assert windowed == whole, (trial, new.kind)
        fired |= {f.rule for f in whole}
    assert fired == set(aml.RULES)  # the comparison covered every rule's findings
