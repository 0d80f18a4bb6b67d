"""AML transaction-monitoring rules: pure functions from a player's recent wallet activity
(amounts already in EUR minor units) to findings, each with the evidence that supports it.
No I/O: services.compliance.monitoring reads the activity, writes alerts and sets gates.

Defaults follow the UK Money Laundering Regulations 2017 (CDD on occasional transactions of
EUR 2,000 or more, single or linked) and the Gambling Commission's AML guidance for casinos;
every number is configuration: AmlConfig, and the CDD threshold of the player's jurisdiction.

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
  release raises the alert, once per release (evaluated on the stake, and on the release
  when stakes after it were seen first).
* Order of arrival: events arrive out of order (a message requeued after a transient
  failure while later ones run, several replicas consuming one queue), and a pattern must
  not depend on it. A rule evaluates every window holding the new event, activity after it
  in event time included, and reports what the event changes: a pattern that holds with it
  and did not without it. For the CDD threshold that is a crossing of the flow replayed in
  event-time order (the crossings an in-order arrival would have reported); a late event
  that only moves where a reported crossing falls reports nothing new. So a case collects
  one finding per pattern, not one for each late arrival in its window.
"""

from __future__ import annotations

import bisect
import collections
import datetime as dt
import enum
import hashlib
import itertools
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

# The kinds of activity whose arrival each rule looks at (any other leaves it unchanged).
TRIGGERS: dict[str, frozenset[str]] = {
    CDD_THRESHOLD: frozenset(CDD_FLOWS),
    STRUCTURING: frozenset({DEPOSIT}),
    # A withdrawal request after deposits with little play; a late deposit or a rollback
    # (play undone) can make an earlier request one.
    LOW_TURNOVER: frozenset({WITHDRAWAL_RESERVE, DEPOSIT, BET_ROLLBACK}),
    FAST_LARGE_SPEND: frozenset({BET}),
    MULTIPLE_INSTRUMENTS: frozenset({DEPOSIT, WITHDRAWAL_RESERVE}),
    WITHDRAWAL_REVERSAL: frozenset({WITHDRAWAL_RELEASE, BET}),
}


class AmlAction(enum.StrEnum):
    ALERT = "ALERT"  # a case for an officer to review
    HOLD_PLAY = "HOLD_PLAY"  # and no deposits, bets or game launches until it is closed
    REQUIRE_CDD = "REQUIRE_CDD"  # and the CDD gate, until due diligence is recorded


@dataclass(frozen=True)
class AmlConfig:
    """Every threshold of the monitoring rules but one. Amounts are EUR minor units; ratios
    are whole percentages (no floats near money). The CDD threshold is the player's
    jurisdiction's (rules.ComplianceConfig.cdd_threshold_eur_minor), the one the money-path
    gate trips at too, so it is given to `evaluate` per player, not configured here."""

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

    def lookback(self, kind: str) -> dt.timedelta:
        """How much activity the rules an event of `kind` triggers read on each side of it:
        the longest of their windows (a window holding the event reaches at most that far
        either way). Stakes and wins, nearly every event, trigger only the day-long rules:
        they read a day of a busy player's play, not the month the deposit rules need."""
        windows = {
            CDD_THRESHOLD: dt.timedelta(hours=self.cdd_window_hours),
            STRUCTURING: dt.timedelta(days=self.structuring_window_days),
            LOW_TURNOVER: dt.timedelta(days=self.low_turnover_window_days),
            FAST_LARGE_SPEND: dt.timedelta(hours=self.fast_spend_window_hours),
            MULTIPLE_INSTRUMENTS: dt.timedelta(days=self.instruments_window_days),
            WITHDRAWAL_REVERSAL: dt.timedelta(hours=self.reversal_window_hours),
        }
        return max(
            (window for rule, window in windows.items() if kind in TRIGGERS[rule]),
            default=dt.timedelta(0),
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
    cdd_threshold_eur_minor: int,
    enabled: RuleEnabled = every_rule_on,
    cdd_cleared_at: dt.datetime | None = None,
) -> list[Finding]:
    """The findings `new` gives rise to, given the player's other activity around it: at
    least `config.lookback(new.kind)` of it on either side (`new` itself may be included).
    Events arrive out of order (a message requeued after a transient failure while later
    ones run, several replicas on one queue), so each rule looks at every window that holds
    `new`, activity after it in event time included, and reports what `new` changes: a
    pattern that holds with `new` and did not without it. A pattern reported before is not
    reported again for a later arrival in its window. `account_opened` None: unknown (the
    new-account rule does not apply); `cdd_cleared_at`: when due diligence was last recorded
    (None: never); `cdd_threshold_eur_minor`: the player's jurisdiction's, for the CDD and
    structuring rules. A rule for which `enabled` says False is not evaluated."""
    history = sorted({a.event_id: a for a in (*recent, new)}.values(), key=_order)
    checks: list[tuple[str, Callable[[], list[Finding]]]] = [
        (
            CDD_THRESHOLD,
            lambda: _cdd_threshold(new, history, config, cdd_threshold_eur_minor, cdd_cleared_at),
        ),
        (STRUCTURING, lambda: _structuring(new, history, config, cdd_threshold_eur_minor)),
        (LOW_TURNOVER, lambda: _low_turnover(new, history, config)),
        (FAST_LARGE_SPEND, lambda: _fast_large_spend(new, history, account_opened, config)),
        (MULTIPLE_INSTRUMENTS, lambda: _multiple_instruments(new, history, config)),
        (WITHDRAWAL_REVERSAL, lambda: _withdrawal_reversal(new, history, config)),
    ]
    findings = []
    for rule, check in checks:
        if enabled(rule):
            findings.extend(check())
    return findings


def _order(a: Activity) -> tuple[dt.datetime, str]:
    """Event-time order (ties by event id): the order rules replay activity in."""
    return a.at, a.event_id


def _others(history: list[Activity], new: Activity) -> list[Activity]:
    """The history as it was before `new` was known."""
    return [a for a in history if a.event_id != new.event_id]


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


@dataclass(frozen=True)
class _Crossing:
    event: Activity  # the transaction that took the linked total to the threshold
    linked: list[Activity]  # what it was linked with, itself included, in event-time order
    since: dt.datetime  # the linking window's start (exclusive)


def _cdd_crossings(
    flow: list[Activity], config: AmlConfig, threshold: int, cleared_at: dt.datetime | None
) -> list[_Crossing]:
    """Where a flow's linked total goes from below the threshold to at or above it, with
    the flow (one kind, in event-time order) replayed in that order: the crossings
    `cdd_threshold_reached` reports when every transaction arrives in order. A transaction
    at or above the threshold alone while the total is already above is no crossing (it is
    reported on its own arrival)."""
    span = dt.timedelta(hours=config.cdd_window_hours)
    crossings = []
    first, linked = 0, 0  # flow[first:i] is what flow[i] is linked with, summing to `linked`
    for i, event in enumerate(flow):
        since = event.at - span
        if cleared_at is not None and cleared_at > since:
            since = cleared_at
        while first < i and flow[first].at <= since:
            linked -= flow[first].amount_eur_minor
            first += 1
        # From before the last clearance: its due diligence covered it.
        if event.at > since and linked < threshold <= linked + event.amount_eur_minor:
            crossings.append(_Crossing(event, flow[first : i + 1], since))
        linked += event.amount_eur_minor
    return crossings


def _new_runs(flagged: list[Activity], flagged_before: list[Activity]) -> list[Activity]:
    """The flags (event-time order) of patterns that are new with the latest event: flagged
    now and not before it, and not standing in for a flag it removed. A late event raises a
    rolling total over a stretch of time, so a crossing can move earlier: the flag that now
    opens the run above the threshold takes over the later flags inside that run, which
    were reported when they came."""
    now = {a.event_id for a in flagged}
    before = {a.event_id for a in flagged_before}
    removed = [_order(a) for a in flagged_before if a.event_id not in now]
    fresh = []
    for i, flag in enumerate(flagged):
        if flag.event_id in before:
            continue
        run_end = _order(flagged[i + 1]) if i + 1 < len(flagged) else None
        if any(_order(flag) < r and (run_end is None or r < run_end) for r in removed):
            continue
        fresh.append(flag)
    return fresh


def _cdd_threshold(
    new: Activity,
    history: list[Activity],
    config: AmlConfig,
    threshold: int,
    cleared_at: dt.datetime | None,
) -> list[Finding]:
    flow = CDD_FLOWS.get(new.kind)
    if flow is None or (cleared_at is not None and new.at <= cleared_at):
        return []  # not a CDD flow, or from before the last clearance (covered by it)
    same_kind = [a for a in history if a.kind == new.kind]
    crossings = _cdd_crossings(same_kind, config, threshold, cleared_at)
    before = _cdd_crossings(_others(same_kind, new), config, threshold, cleared_at)
    fresh = {a.event_id for a in _new_runs([c.event for c in crossings], [c.event for c in before])}
    reported = [c for c in crossings if c.event.event_id in fresh]
    if new.amount_eur_minor >= threshold and new.event_id not in fresh:
        # Alone at or above the threshold: reported although the total was above already.
        since = new.at - dt.timedelta(hours=config.cdd_window_hours)
        if cleared_at is not None and cleared_at > since:
            since = cleared_at
        linked = [a for a in same_kind if since < a.at and _order(a) <= _order(new)]
        reported.insert(0, _Crossing(new, linked, since))

    def finding(crossing: _Crossing) -> Finding:
        event, linked = crossing.event, crossing.linked
        return Finding(
            CDD_THRESHOLD,
            AmlAction.REQUIRE_CDD,
            {
                "flow": flow,
                "trigger_event_id": new.event_id,
                # Differs from the trigger when a late event completed a later crossing.
                "crossing_event_id": event.event_id,
                "single": event.amount_eur_minor >= threshold,
                "event_ids": [a.event_id for a in linked],
                "amounts_eur_minor": [a.amount_eur_minor for a in linked],
                "total_eur_minor": sum(a.amount_eur_minor for a in linked),
                "threshold_eur_minor": threshold,
                "window": _window(crossing.since, event.at),
                "cdd_cleared_at": None if cleared_at is None else cleared_at.isoformat(),
            },
        )

    return [finding(c) for c in reported]


def _structuring(
    new: Activity, history: list[Activity], config: AmlConfig, threshold: int
) -> list[Finding]:
    if new.kind not in TRIGGERS[STRUCTURING]:
        return []
    # Integer arithmetic: the band's floor rounds up, so "within 10 % below" stays exact.
    floor = -(-threshold * (100 - config.structuring_band_percent) // 100)

    def just_under(a: Activity) -> bool:
        return floor <= a.amount_eur_minor < threshold

    if not just_under(new):
        return []
    span = dt.timedelta(days=config.structuring_window_days)
    deposits = [
        a
        for a in history
        if a.kind == DEPOSIT and just_under(a) and new.at - span < a.at < new.at + span
    ]
    # Every window of the rule's length holding `new` lies within one that ends at a deposit
    # at or after it (move its end back to its last deposit: it loses none), so those are
    # the windows to count; the fullest is the evidence.
    best: tuple[dt.datetime, dt.datetime, list[Activity]] | None = None
    for end in deposits:
        if _order(end) < _order(new):
            continue
        start = end.at - span
        inside = [a for a in deposits if start < a.at and _order(a) <= _order(end)]
        if best is None or len(inside) > len(best[2]):
            best = (start, end.at, inside)
    if best is None or len(best[2]) < config.structuring_min_deposits:
        return []
    start, end_at, inside = best
    return [
        Finding(
            STRUCTURING,
            AmlAction.ALERT,
            {
                "trigger_event_id": new.event_id,
                "event_ids": [a.event_id for a in inside],
                "amounts_eur_minor": [a.amount_eur_minor for a in inside],
                "count": len(inside),
                "min_count": config.structuring_min_deposits,
                "band_eur_minor": [floor, threshold],
                "threshold_eur_minor": threshold,
                "window": _window(start, end_at),
            },
        )
    ]


def _low_turnover_evidence(
    withdrawal: Activity, history: list[Activity], config: AmlConfig
) -> dict[str, Any] | None:
    """The evidence if this withdrawal request comes after deposits with too little play."""
    start = withdrawal.at - dt.timedelta(days=config.low_turnover_window_days)
    # What came before the request in event-time order, whatever order it arrived in.
    before = [a for a in history if start < a.at and _order(a) <= _order(withdrawal)]
    deposits = [a for a in before if a.kind == DEPOSIT]
    deposited = sum(a.amount_eur_minor for a in deposits)
    if not deposits or deposited < config.low_turnover_min_deposits_eur_minor:
        return None
    # Play since the first of those deposits (stakes before it were other money).
    since = deposits[0].at
    play = [a for a in before if a.kind in (BET, BET_ROLLBACK) and since <= a.at]
    staked = _net_stakes(play)
    if staked * 100 >= deposited * config.low_turnover_min_percent:
        return None
    return {
        "withdrawal_event_id": withdrawal.event_id,
        "withdrawal_id": withdrawal.withdrawal_id,
        "withdrawal_eur_minor": withdrawal.amount_eur_minor,
        "deposit_event_ids": [a.event_id for a in deposits],
        "deposits_eur_minor": deposited,
        "stakes_eur_minor": staked,
        "min_turnover_percent": config.low_turnover_min_percent,
        "min_deposits_eur_minor": config.low_turnover_min_deposits_eur_minor,
        "window": _window(start, withdrawal.at),
    }


def _low_turnover(new: Activity, history: list[Activity], config: AmlConfig) -> list[Finding]:
    # A withdrawal request is judged on the deposits and play before it: a late deposit or
    # rolled-back stake can make an earlier-seen request one with too little play. (A late
    # stake only lessens the pattern; an alert already raised stays for the officer.)
    if new.kind not in TRIGGERS[LOW_TURNOVER]:
        return []
    span = dt.timedelta(days=config.low_turnover_window_days)
    requests = [
        a
        for a in history
        if a.kind == WITHDRAWAL_RESERVE and _order(a) >= _order(new) and a.at < new.at + span
    ]
    others = _others(history, new)
    findings = []
    for request in requests:
        evidence = _low_turnover_evidence(request, history, config)
        if evidence is None:
            continue
        if request is not new and _low_turnover_evidence(request, others, config) is not None:
            continue  # flagged before `new` came
        findings.append(
            Finding(LOW_TURNOVER, AmlAction.ALERT, {"trigger_event_id": new.event_id, **evidence})
        )
    return findings


def _fast_large_spend(
    new: Activity, history: list[Activity], opened: dt.datetime | None, config: AmlConfig
) -> list[Finding]:
    if new.kind not in TRIGGERS[FAST_LARGE_SPEND] or opened is None:
        return []
    span = dt.timedelta(hours=config.fast_spend_window_hours)
    young = dt.timedelta(days=config.new_account_days)
    play = [a for a in history if a.kind in (BET, BET_ROLLBACK)]
    times = [a.at for a in play]
    # Net stakes up to each position: a window's net is a difference of two (no rescans).
    running = list(
        itertools.accumulate(
            (a.amount_eur_minor if a.kind == BET else -a.amount_eur_minor for a in play), initial=0
        )
    )
    # The stake itself, then each later stake whose window holds it, at most one finding:
    # the hold is one pattern, and a later stake already over the amount was reported.
    for position, stake in enumerate(play):
        if stake.kind != BET or _order(stake) < _order(new) or stake.at >= new.at + span:
            continue
        age = stake.at - opened
        if age >= young:
            continue
        start = stake.at - span
        first = bisect.bisect_right(times, start)
        net = running[position + 1] - running[first]
        if net < config.fast_spend_eur_minor:
            continue
        if stake is not new and net - new.amount_eur_minor >= config.fast_spend_eur_minor:
            continue
        window_play = play[first : position + 1]
        return [
            Finding(
                FAST_LARGE_SPEND,
                AmlAction.HOLD_PLAY,
                {
                    "trigger_event_id": new.event_id,
                    "stake_event_id": stake.event_id,
                    "account_opened": opened.isoformat(),
                    "account_age_hours": int(age.total_seconds() // 3600),
                    "new_account_days": config.new_account_days,
                    "stake_event_ids": [a.event_id for a in window_play if a.kind == BET],
                    "stakes_eur_minor": _net_stakes(window_play),
                    "threshold_eur_minor": config.fast_spend_eur_minor,
                    "window": _window(start, stake.at),
                },
            )
        ]
    return []


@dataclass(frozen=True)
class _InstrumentFlag:
    use: Activity  # the first use of an instrument in its window, making it one too many
    first_use: dict[str, Activity]  # each instrument of the window: its first use
    start: dt.datetime


def _instrument_flags(uses: list[Activity], config: AmlConfig) -> list[_InstrumentFlag]:
    """Payment-instrument uses (event-time order) replayed in that order: each use of an
    instrument not used before in its window that brings the window's distinct instruments
    to the minimum or more."""
    span = dt.timedelta(days=config.instruments_window_days)
    flags = []
    counts: collections.Counter[str] = collections.Counter()
    first = 0
    for i, use in enumerate(uses):
        start = use.at - span
        while first < i and uses[first].at <= start:
            counts[uses[first].instrument or ""] -= 1
            first += 1
        instrument = use.instrument or ""
        known = counts[instrument] > 0
        distinct = sum(1 for n in counts.values() if n > 0) + (0 if known else 1)
        if not known and distinct >= config.instruments_min_distinct:
            first_use: dict[str, Activity] = {}
            for a in uses[first : i + 1]:
                first_use.setdefault(a.instrument or "", a)
            flags.append(_InstrumentFlag(use, first_use, start))
        counts[instrument] += 1
    return flags


def _multiple_instruments(
    new: Activity, history: list[Activity], config: AmlConfig
) -> list[Finding]:
    if new.kind not in TRIGGERS[MULTIPLE_INSTRUMENTS] or not new.instrument:
        return []
    span = dt.timedelta(days=config.instruments_window_days)
    uses = [a for a in history if a.kind in (DEPOSIT, WITHDRAWAL_RESERVE) and a.instrument]

    def affected(flags: list[_InstrumentFlag]) -> list[_InstrumentFlag]:
        # Flags whose window can hold `new`: at or after it, less than a window later.
        return [f for f in flags if _order(f.use) >= _order(new) and f.use.at < new.at + span]

    flags = affected(_instrument_flags(uses, config))
    before = affected(_instrument_flags(_others(uses, new), config))
    # What is reported is which instruments were used together: an instrument already in a
    # flagged window is not news when a late use moves where the flag falls.
    seen = {i for f in before for i in f.first_use}
    flag = next((f for f in flags if set(f.first_use) - seen), None)
    if flag is None:
        return []
    instruments = sorted(flag.first_use)
    return [
        Finding(
            MULTIPLE_INSTRUMENTS,
            AmlAction.ALERT,
            {
                "trigger_event_id": new.event_id,
                "flagged_event_id": flag.use.event_id,
                "instruments": instruments,
                "first_use_event_ids": [flag.first_use[i].event_id for i in instruments],
                "count": len(instruments),
                "min_distinct": config.instruments_min_distinct,
                "window": _window(flag.start, flag.use.at),
            },
        )
    ]


def _withdrawal_reversal(
    new: Activity, history: list[Activity], config: AmlConfig
) -> list[Finding]:
    span = dt.timedelta(hours=config.reversal_window_hours)

    def stakes_after(release: Activity) -> list[Activity]:
        return [a for a in history if a.kind == BET and release.at < a.at <= release.at + span]

    # A release is reported once, with its first stake, whichever of them arrives last: on
    # the release when stakes after it were seen first, else on the first stake seen.
    pairs: list[tuple[Activity, Activity]] = []
    if new.kind == WITHDRAWAL_RELEASE:
        stakes = stakes_after(new)
        if stakes:
            pairs.append((new, stakes[0]))
    elif new.kind == BET:
        for release in history:
            if release.kind != WITHDRAWAL_RELEASE or not release.at < new.at <= release.at + span:
                continue
            stakes = stakes_after(release)
            if [a.event_id for a in stakes] == [new.event_id]:
                pairs.append((release, new))
    return [
        Finding(
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
        for release, stake in pairs
    ]


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
