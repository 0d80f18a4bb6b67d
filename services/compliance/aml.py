"""AML transaction-monitoring rules: pure functions from a player's recent wallet activity
(amounts already in EUR minor units) to findings, each with the evidence that supports it.
No I/O: services.compliance.monitoring reads the activity, writes alerts and sets gates.

Defaults follow the UK Money Laundering Regulations 2017 (CDD on occasional transactions of
EUR 2,000 or more, single or linked) and the Gambling Commission's AML guidance for casinos;
every number is configuration (AmlConfig).

Decisions documented here:
* CDD threshold: per flow (deposits, withdrawal requests, stakes, wins), trips when one
  transaction alone reaches the threshold or when it takes the flow's linked total from
  below the threshold to at or above it (`cdd_threshold_reached`, the rule the money-path
  checks apply too). Linked: the rolling 24 h, counted from the player's last CDD clearance
  when that is later, so due diligence restarts the count: the next deposit of the same day
  does not gate the player again, the activity since the clearance reaching the threshold
  does. A logged-in session is linked through the same rolling window (sessions are far
  shorter than 24 h; the wallet's events carry no session). Activity from before the
  clearance (an event arriving late) never trips it: the due diligence covered it.
* Withdrawals are counted when requested (the reservation); its commit or release is the
  same money and is not counted again.
* Stakes are net of rolled-back stakes (a rollback is a bet that did not happen).
* Withdrawal reversal: a reservation released back to the balance is not suspicious by
  itself (a payment provider failing a payout releases it too); the pattern is the player
  staking the released money: the first stake within `reversal_window_hours` after a
  release raises the alert (evaluated on the stake, and on the release when stakes after it
  were seen first, since events may arrive out of order).
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

CDD_THRESHOLD = "AML_CDD_THRESHOLD"
STRUCTURING = "AML_STRUCTURING"
LOW_TURNOVER = "AML_LOW_TURNOVER"
FAST_LARGE_SPEND = "AML_FAST_LARGE_SPEND"
MULTIPLE_INSTRUMENTS = "AML_MULTIPLE_INSTRUMENTS"
WITHDRAWAL_REVERSAL = "AML_WITHDRAWAL_REVERSAL"
RULES: tuple[str, ...] = (
    CDD_THRESHOLD,
    STRUCTURING,
    LOW_TURNOVER,
    FAST_LARGE_SPEND,
    MULTIPLE_INSTRUMENTS,
    WITHDRAWAL_REVERSAL,
)

# Wallet transaction kinds as they appear in activity rows.
DEPOSIT = "DEPOSIT"
WITHDRAWAL_RESERVE = "WITHDRAWAL_RESERVE"
WITHDRAWAL_COMMIT = "WITHDRAWAL_COMMIT"
WITHDRAWAL_RELEASE = "WITHDRAWAL_RELEASE"
BET = "BET"
WIN = "WIN"
BET_ROLLBACK = "BET_ROLLBACK"
ADJUSTMENT = "ADJUSTMENT"
KINDS = frozenset(
    {
        DEPOSIT,
        WITHDRAWAL_RESERVE,
        WITHDRAWAL_COMMIT,
        WITHDRAWAL_RELEASE,
        BET,
        WIN,
        BET_ROLLBACK,
        ADJUSTMENT,
    }
)

# The flows the CDD threshold applies to, and the kind that counts in each.
CDD_FLOWS: dict[str, str] = {
    DEPOSIT: "deposits",
    WITHDRAWAL_RESERVE: "withdrawals",
    BET: "stakes",
    WIN: "wins",
}


class AmlAction(enum.StrEnum):
    ALERT = "ALERT"  # a case for an officer to review
    HOLD_PLAY = "HOLD_PLAY"  # and no deposits, bets or game launches until it is closed
    REQUIRE_CDD = "REQUIRE_CDD"  # and the CDD gate, until due diligence is recorded


@dataclass(frozen=True)
class AmlConfig:
    """Every threshold of the monitoring rules. Amounts are EUR minor units; ratios are
    whole percentages (no floats near money)."""

    cdd_threshold_eur_minor: int = 200_000
    cdd_window_hours: int = 24
    # Structuring: this many deposits within the window, each within band_percent below
    # the CDD threshold (at or above threshold * (100 - band) / 100, below the threshold).
    structuring_min_deposits: int = 3
    structuring_window_days: int = 7
    structuring_band_percent: int = 10
    # Deposit then withdrawal with little play: on a withdrawal request, net stakes since
    # the first deposit of the window below this percentage of those deposits, when the
    # deposits are at least the minimum.
    low_turnover_window_days: int = 30
    low_turnover_min_percent: int = 100
    low_turnover_min_deposits_eur_minor: int = 50_000
    # Fast large spend on a new account: account younger than new_account_days and net
    # stakes in the window at or above the amount -> play is held.
    new_account_days: int = 7
    fast_spend_window_hours: int = 24
    fast_spend_eur_minor: int = 500_000
    # Several payment instruments (deposits and withdrawal requests) in the window.
    instruments_window_days: int = 30
    instruments_min_distinct: int = 3
    # Withdrawal reversal: stakes this soon after a released withdrawal.
    reversal_window_hours: int = 24

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"aml.{name} must be a non-negative integer")
        if not 0 <= self.structuring_band_percent <= 100:
            raise ValueError("aml.structuring_band_percent must be within 0..100")

    @property
    def lookback(self) -> dt.timedelta:
        """How much history the rules read: the longest of their windows."""
        return max(
            dt.timedelta(hours=self.cdd_window_hours),
            dt.timedelta(days=self.structuring_window_days),
            dt.timedelta(days=self.low_turnover_window_days),
            dt.timedelta(hours=self.fast_spend_window_hours),
            dt.timedelta(days=self.instruments_window_days),
            dt.timedelta(hours=self.reversal_window_hours),
        )

    @property
    def version(self) -> str:
        canonical = json.dumps(asdict(self), sort_keys=True).encode()
        return "aml-config/" + hashlib.sha256(canonical).hexdigest()[:12]


@dataclass(frozen=True)
class Activity:
    """One wallet transaction of the player, as monitoring recorded it."""

    event_id: str
    kind: str
    amount_eur_minor: int  # magnitude
    at: dt.datetime
    instrument: str | None = None
    withdrawal_id: str | None = None


@dataclass(frozen=True)
class Finding:
    rule: str
    action: AmlAction
    evidence: dict[str, Any]


RuleEnabled = Callable[[str], bool]


def every_rule_on(rule: str) -> bool:
    return True


def evaluate(
    new: Activity,
    recent: Sequence[Activity],
    *,
    account_opened: dt.datetime | None,
    config: AmlConfig,
    enabled: RuleEnabled = every_rule_on,
    cdd_cleared_at: dt.datetime | None = None,
) -> list[Finding]:
    """The findings `new` gives rise to, given the player's activity before it (at least
    `config.lookback` of it; `new` itself may be included or not), when the account was
    opened (None: unknown, and the new-account rule does not apply) and when due diligence
    was last recorded (None: never). A rule for which `enabled` says False is not
    evaluated."""
    history = sorted(
        {a.event_id: a for a in (*recent, new)}.values(), key=lambda a: (a.at, a.event_id)
    )
    checks: list[tuple[str, Callable[[], Finding | None]]] = [
        (CDD_THRESHOLD, lambda: _cdd_threshold(new, history, config, cdd_cleared_at)),
        (STRUCTURING, lambda: _structuring(new, history, config)),
        (LOW_TURNOVER, lambda: _low_turnover(new, history, config)),
        (FAST_LARGE_SPEND, lambda: _fast_large_spend(new, history, account_opened, config)),
        (MULTIPLE_INSTRUMENTS, lambda: _multiple_instruments(new, history, config)),
        (WITHDRAWAL_REVERSAL, lambda: _withdrawal_reversal(new, history, config)),
    ]
    findings = []
    for rule, check in checks:
        if not enabled(rule):
            continue
        finding = check()
        if finding is not None:
            findings.append(finding)
    return findings


def _within(
    history: Iterable[Activity], kinds: set[str], start: dt.datetime, end: dt.datetime
) -> list[Activity]:
    """Activity of these kinds in the half-open window (start, end]."""
    return [a for a in history if a.kind in kinds and start < a.at <= end]


def _net_stakes(activity: Iterable[Activity]) -> int:
    total = sum(a.amount_eur_minor if a.kind == BET else 0 for a in activity)
    rolled_back = sum(a.amount_eur_minor if a.kind == BET_ROLLBACK else 0 for a in activity)
    return max(total - rolled_back, 0)


def _window(start: dt.datetime, end: dt.datetime) -> dict[str, str]:
    return {"start": start.isoformat(), "end": end.isoformat()}


def cdd_threshold_reached(amount_minor: int, linked_before_minor: int, threshold: int) -> bool:
    """The customer-due-diligence trigger, one rule for monitoring and the money-path checks:
    a transaction at or above the threshold alone, or one taking the linked total (what came
    before it in the linking window, counted from the last CDD clearance) from below the
    threshold to at or above it. Crossing, not being above: once tripped, the same window
    does not trip again until a clearance restarts the count."""
    return amount_minor >= threshold or (
        linked_before_minor < threshold <= linked_before_minor + amount_minor
    )


def _cdd_threshold(
    new: Activity, history: list[Activity], config: AmlConfig, cleared_at: dt.datetime | None
) -> Finding | None:
    flow = CDD_FLOWS.get(new.kind)
    if flow is None:
        return None
    threshold = config.cdd_threshold_eur_minor
    start = new.at - dt.timedelta(hours=config.cdd_window_hours)
    if cleared_at is not None and cleared_at > start:
        start = cleared_at
    if new.at <= start:
        return None  # from before the last clearance: its due diligence covered it
    linked = _within(history, {new.kind}, start, new.at)
    total = sum(a.amount_eur_minor for a in linked)
    before = total - new.amount_eur_minor
    single = new.amount_eur_minor >= threshold
    if not cdd_threshold_reached(new.amount_eur_minor, before, threshold):
        return None
    return Finding(
        CDD_THRESHOLD,
        AmlAction.REQUIRE_CDD,
        {
            "flow": flow,
            "trigger_event_id": new.event_id,
            "single": single,
            "event_ids": [a.event_id for a in linked],
            "amounts_eur_minor": [a.amount_eur_minor for a in linked],
            "total_eur_minor": total,
            "threshold_eur_minor": threshold,
            "window": _window(start, new.at),
            "cdd_cleared_at": None if cleared_at is None else cleared_at.isoformat(),
        },
    )


def _structuring(new: Activity, history: list[Activity], config: AmlConfig) -> Finding | None:
    if new.kind != DEPOSIT:
        return None
    threshold = config.cdd_threshold_eur_minor
    # Integer arithmetic: the band's floor rounds up, so "within 10 % below" stays exact.
    floor = -(-threshold * (100 - config.structuring_band_percent) // 100)

    def just_under(a: Activity) -> bool:
        return floor <= a.amount_eur_minor < threshold

    if not just_under(new):
        return None
    start = new.at - dt.timedelta(days=config.structuring_window_days)
    deposits = [a for a in _within(history, {DEPOSIT}, start, new.at) if just_under(a)]
    if len(deposits) < config.structuring_min_deposits:
        return None
    return Finding(
        STRUCTURING,
        AmlAction.ALERT,
        {
            "trigger_event_id": new.event_id,
            "event_ids": [a.event_id for a in deposits],
            "amounts_eur_minor": [a.amount_eur_minor for a in deposits],
            "count": len(deposits),
            "min_count": config.structuring_min_deposits,
            "band_eur_minor": [floor, threshold],
            "threshold_eur_minor": threshold,
            "window": _window(start, new.at),
        },
    )


def _low_turnover(new: Activity, history: list[Activity], config: AmlConfig) -> Finding | None:
    if new.kind != WITHDRAWAL_RESERVE:
        return None
    start = new.at - dt.timedelta(days=config.low_turnover_window_days)
    deposits = _within(history, {DEPOSIT}, start, new.at)
    deposited = sum(a.amount_eur_minor for a in deposits)
    if not deposits or deposited < config.low_turnover_min_deposits_eur_minor:
        return None
    # Play since the first of those deposits (stakes before it were other money).
    since = deposits[0].at
    play = [a for a in history if a.kind in (BET, BET_ROLLBACK) and since <= a.at <= new.at]
    staked = _net_stakes(play)
    if staked * 100 >= deposited * config.low_turnover_min_percent:
        return None
    return Finding(
        LOW_TURNOVER,
        AmlAction.ALERT,
        {
            "trigger_event_id": new.event_id,
            "withdrawal_id": new.withdrawal_id,
            "withdrawal_eur_minor": new.amount_eur_minor,
            "deposit_event_ids": [a.event_id for a in deposits],
            "deposits_eur_minor": deposited,
            "stakes_eur_minor": staked,
            "min_turnover_percent": config.low_turnover_min_percent,
            "min_deposits_eur_minor": config.low_turnover_min_deposits_eur_minor,
            "window": _window(start, new.at),
        },
    )


def _fast_large_spend(
    new: Activity, history: list[Activity], opened: dt.datetime | None, config: AmlConfig
) -> Finding | None:
    if new.kind != BET or opened is None:
        return None
    age = new.at - opened
    if age >= dt.timedelta(days=config.new_account_days):
        return None
    start = new.at - dt.timedelta(hours=config.fast_spend_window_hours)
    play = _within(history, {BET, BET_ROLLBACK}, start, new.at)
    staked = _net_stakes(play)
    if staked < config.fast_spend_eur_minor:
        return None
    return Finding(
        FAST_LARGE_SPEND,
        AmlAction.HOLD_PLAY,
        {
            "trigger_event_id": new.event_id,
            "account_opened": opened.isoformat(),
            "account_age_hours": int(age.total_seconds() // 3600),
            "new_account_days": config.new_account_days,
            "stake_event_ids": [a.event_id for a in play if a.kind == BET],
            "stakes_eur_minor": staked,
            "threshold_eur_minor": config.fast_spend_eur_minor,
            "window": _window(start, new.at),
        },
    )


def _multiple_instruments(
    new: Activity, history: list[Activity], config: AmlConfig
) -> Finding | None:
    if new.kind not in (DEPOSIT, WITHDRAWAL_RESERVE) or not new.instrument:
        return None
    start = new.at - dt.timedelta(days=config.instruments_window_days)
    uses = [
        a for a in _within(history, {DEPOSIT, WITHDRAWAL_RESERVE}, start, new.at) if a.instrument
    ]
    if any(a.instrument == new.instrument for a in uses if a.event_id != new.event_id):
        return None  # a known instrument: nothing new to report
    first_use: dict[str, Activity] = {}
    for a in uses:
        first_use.setdefault(a.instrument or "", a)
    if len(first_use) < config.instruments_min_distinct:
        return None
    return Finding(
        MULTIPLE_INSTRUMENTS,
        AmlAction.ALERT,
        {
            "trigger_event_id": new.event_id,
            "instruments": sorted(first_use),
            "first_use_event_ids": [first_use[i].event_id for i in sorted(first_use)],
            "count": len(first_use),
            "min_distinct": config.instruments_min_distinct,
            "window": _window(start, new.at),
        },
    )


def _withdrawal_reversal(
    new: Activity, history: list[Activity], config: AmlConfig
) -> Finding | None:
    window = dt.timedelta(hours=config.reversal_window_hours)

    def first_stake_after(release: Activity) -> Activity | None:
        return next(
            (a for a in history if a.kind == BET and release.at < a.at <= release.at + window),
            None,
        )

    release: Activity | None
    stake: Activity | None
    if new.kind == BET:
        releases = _within(history, {WITHDRAWAL_RELEASE}, new.at - window, new.at)
        release = next((r for r in releases if first_stake_after(r) == new), None)
        stake = new
    elif new.kind == WITHDRAWAL_RELEASE:
        release, stake = new, first_stake_after(new)
    else:
        return None
    if release is None or stake is None:
        return None
    return Finding(
        WITHDRAWAL_REVERSAL,
        AmlAction.ALERT,
        {
            "trigger_event_id": new.event_id,
            "release_event_id": release.event_id,
            "withdrawal_id": release.withdrawal_id,
            "released_eur_minor": release.amount_eur_minor,
            "stake_event_id": stake.event_id,
            "stake_eur_minor": stake.amount_eur_minor,
            "released_at": release.at.isoformat(),
            "staked_at": stake.at.isoformat(),
            "window_hours": config.reversal_window_hours,
        },
    )


@dataclass(frozen=True)
class AmlAlert:
    """A case: the OPEN alert of one rule for one player collects every later finding of
    that rule (evidence = {"findings": [...]}) until an officer closes it."""

    player_id: str
    alert_id: uuid.UUID
    rule: str
    status: str  # OPEN | CLOSED
    action: str  # an AmlAction
    evidence: dict[str, Any]
    opened_at: dt.datetime
    updated_at: dt.datetime
    closed_at: dt.datetime | None
    closed_by: str | None
    resolution: str | None

    @property
    def name(self) -> str:
        return f"players/{self.player_id}/amlAlerts/{self.alert_id}"
