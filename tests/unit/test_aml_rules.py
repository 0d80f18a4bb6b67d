"""AML monitoring rules and EUR conversion, without I/O: thresholds just under and at their
values, window boundaries, and rules switched off by their flag."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from services.compliance import aml
from services.compliance.aml import Activity, AmlAction, AmlConfig
from services.compliance.fx import EurConverter, UnconvertibleCurrency

NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)
CONFIG = AmlConfig()
_ids = itertools.count()


def act(kind: str, eur: int, ago: dt.timedelta = dt.timedelta(0), **extra: str) -> Activity:
    return Activity(f"e{next(_ids)}", kind, eur, NOW - ago, **extra)  # type: ignore[arg-type]


def findings(
    new: Activity,
    recent: list[Activity],
    *,
    opened: dt.datetime | None = None,
    config: AmlConfig = CONFIG,
    enabled: aml.RuleEnabled = aml.every_rule_on,
) -> dict[str, aml.Finding]:
    found = aml.evaluate(new, recent, account_opened=opened, config=config, enabled=enabled)
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


# Flags and configuration


def test_a_rule_switched_off_is_not_evaluated() -> None:
    new = act("DEPOSIT", 250_000)
    assert aml.CDD_THRESHOLD in findings(new, [])
    assert findings(new, [], enabled=lambda rule: rule != aml.CDD_THRESHOLD) == {}


def test_every_threshold_is_configuration() -> None:
    config = AmlConfig(cdd_threshold_eur_minor=1_000)
    assert aml.CDD_THRESHOLD in findings(act("DEPOSIT", 1_000), [], config=config)
    assert config.version != CONFIG.version
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


def test_a_currency_without_a_rate_is_refused_not_guessed() -> None:
    fx = EurConverter({"GBP": "1.17"})
    with pytest.raises(UnconvertibleCurrency):
        fx.to_eur_minor(100, "USD")
    for bad in ({"GBP": "abc"}, {"GBP": "-1"}, {"XXX": "1"}, {"EUR": "2"}):
        with pytest.raises(ValueError):
            EurConverter(bad)
