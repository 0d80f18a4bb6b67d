"""Pure parts of rule flags, reality checks, jurisdictions and the affordability rule: no
database."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from services.compliance import flags, reality, rules
from services.compliance.flags import RuleFlag, Snapshot
from services.compliance.rules import Action, ComplianceConfig, Period, PlayerState, UsageTotals
from services.runtime.errors import InvalidArgument
from tests.unit.test_compliance_rules import player

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
GB = ComplianceConfig()
MT = ComplianceConfig(currency="EUR", slot_stake_cap_minor=10**12)


# Segments.


def test_bucket_is_sha256_of_rule_and_player_mod_100() -> None:
    expected = int.from_bytes(hashlib.sha256(b"AFFORDABILITY:p-42").digest(), "big") % 100
    assert flags.bucket("AFFORDABILITY", "p-42") == expected
    assert flags.bucket("AFFORDABILITY", "p-42") == expected  # stable


def test_each_rule_draws_its_own_sample() -> None:
    players = [f"p-{i}" for i in range(200)]
    a = [flags.bucket("AFFORDABILITY", p) for p in players]
    b = [flags.bucket("AML_STRUCTURING", p) for p in players]
    assert a != b
    assert all(0 <= x < 100 for x in a)


def test_rollout_percent_splits_players_by_bucket() -> None:
    flag = RuleFlag("AFFORDABILITY", True, rollout_percent=30)
    for i in range(300):
        pid = f"p-{i}"
        assert flag.applies_to(pid, "GB") == (flags.bucket("AFFORDABILITY", pid) < 30)
    assert not RuleFlag("AFFORDABILITY", True, rollout_percent=0).applies_to("p-1", "GB")
    assert RuleFlag("AFFORDABILITY", True, rollout_percent=100).applies_to("p-1", "GB")


def test_countries_narrow_the_segment_and_disabled_applies_to_nobody() -> None:
    flag = RuleFlag("AFFORDABILITY", True, countries=("MT",))
    assert flag.applies_to("p-1", "MT")
    assert not flag.applies_to("p-1", "GB")
    assert not RuleFlag("AFFORDABILITY", False).applies_to("p-1", "GB")


def test_snapshot_uses_registry_defaults_and_ignores_retired_rules() -> None:
    snapshot = Snapshot.of([RuleFlag("RETIRED_RULE", True)])
    assert "RETIRED_RULE" not in snapshot.flags
    assert not snapshot.enabled("AFFORDABILITY", "p-1", "GB")  # default off
    assert snapshot.enabled("AML_STRUCTURING", "p-1", "GB")  # default on


def test_snapshot_version_names_its_content() -> None:
    on = [RuleFlag("AFFORDABILITY", True, version=2)]
    assert Snapshot.of(on).version == Snapshot.of(list(on)).version
    assert Snapshot.of(on).version != Snapshot.of([]).version
    assert Snapshot.of(on).version.startswith("flags/")


def test_unknown_rule_is_invalid() -> None:
    with pytest.raises(InvalidArgument):
        flags.known_rule("NO_SUCH_RULE")
    assert flags.known_rule("AML_CDD_THRESHOLD").default_enabled


# Affordability.


def deposit(state: PlayerState, amount: int, usage: UsageTotals, enabled: frozenset[str]):
    config = ComplianceConfig(affordability_threshold_minor=200_000)
    return rules.action_check(
        state,
        Action.DEPOSIT,
        amount_minor=amount,
        slots=False,
        request_country="GB",
        limits=[],
        usage=usage,
        now=NOW,
        config=config,
        enabled_rules=enabled,
    )


def test_affordability_applies_only_when_its_flag_is_enabled() -> None:
    used = UsageTotals.of([rules.Usage("DEPOSIT", 150_000, NOW - dt.timedelta(days=20))], NOW)
    assert deposit(player(), 50_000, used, frozenset()).allow
    denied = deposit(player(), 50_000, used, frozenset({rules.AFFORDABILITY}))
    assert [(r.reason, r.metadata) for r in denied.reasons] == [
        ("AFFORDABILITY_CHECK_REQUIRED", {"threshold_minor": "200000", "used_minor": "150000"})
    ]
    assert deposit(player(), 49_999, used, frozenset({rules.AFFORDABILITY})).allow


def test_affordability_counts_only_the_rolling_30_days() -> None:
    old = UsageTotals.of([rules.Usage("DEPOSIT", 150_000, NOW - dt.timedelta(days=31))], NOW)
    assert old.total("DEPOSIT", Period.MONTH) == 0
    assert deposit(player(), 50_000, old, frozenset({rules.AFFORDABILITY})).allow


def test_a_recent_assessment_lifts_affordability_and_an_old_one_does_not() -> None:
    on = frozenset({rules.AFFORDABILITY})
    recent = player(affordability_assessed_at=NOW - dt.timedelta(days=179))
    stale = player(affordability_assessed_at=NOW - dt.timedelta(days=181))
    assert deposit(recent, 250_000, UsageTotals(), on).allow
    assert not deposit(stale, 250_000, UsageTotals(), on).allow


# Jurisdictions.


def test_a_listed_country_gets_its_jurisdiction_and_others_the_default() -> None:
    chosen = rules.jurisdiction_of("MT", GB, {"MT": MT})
    assert chosen.code == "MT" and chosen.config.currency == "EUR"
    fallback = rules.jurisdiction_of("IE", GB, {"MT": MT})
    assert fallback.code == rules.DEFAULT_JURISDICTION and fallback.config is GB
    assert MT.version != GB.version


# Reality checks.


def test_next_check_is_the_next_whole_interval_after_the_session_start() -> None:
    start = NOW - dt.timedelta(minutes=25)
    ten = dt.timedelta(minutes=10)
    assert reality.next_check_time(start, ten, NOW) == start + dt.timedelta(minutes=30)
    assert reality.next_check_time(start, dt.timedelta(minutes=60), NOW) == start + 6 * ten
    # Due exactly now: shown, so the next one is a whole interval later.
    assert reality.next_check_time(NOW - 2 * ten, ten, NOW) == NOW + ten
    # Just started (or a start a moment ahead of our clock): the first interval.
    assert reality.next_check_time(NOW, ten, NOW) == NOW + ten
    assert reality.next_check_time(NOW + dt.timedelta(seconds=2), ten, NOW) == NOW + dt.timedelta(
        minutes=10, seconds=2
    )


def test_interval_bounds_and_default_come_from_the_jurisdiction() -> None:
    assert reality.chosen_interval(10, GB) == 10
    assert reality.chosen_interval(120, GB) == 120
    for bad in (9, 121, 0, -5):
        with pytest.raises(InvalidArgument):
            reality.chosen_interval(bad, GB)
    assert reality.interval_of(player(), GB) == 60
    assert reality.interval_of(player(reality_check_minutes=15), GB) == 15


def test_session_start_in_the_future_or_too_old_is_invalid() -> None:
    with pytest.raises(InvalidArgument):
        reality.session_start(NOW + dt.timedelta(minutes=1), NOW, GB)
    with pytest.raises(InvalidArgument):
        reality.session_start(NOW - dt.timedelta(hours=24, seconds=1), NOW, GB)
    assert reality.session_start(NOW - dt.timedelta(hours=24), NOW, GB) == NOW - dt.timedelta(
        hours=24
    )


def test_rolled_back_stakes_are_not_staked_and_net_is_won_minus_staked() -> None:
    play = reality.SessionPlay.of({"BET": 350, "ROLLBACK": 100, "WIN": 400})
    assert (play.staked_minor, play.won_minor, play.net_minor) == (250, 400, 150)
    assert reality.SessionPlay.of({}).net_minor == 0


def test_reality_check_reports_time_played_and_next_check() -> None:
    start = NOW - dt.timedelta(minutes=25)
    check = reality.reality_check(
        player(reality_check_minutes=10), start, reality.SessionPlay(100, 0), NOW, GB
    )
    assert check.interval_minutes == 10
    assert check.time_played == dt.timedelta(minutes=25)
    assert check.next_check_time == start + dt.timedelta(minutes=30)
