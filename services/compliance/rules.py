"""Compliance rules: pure decisions from a player's compliance state, the request and the
configuration. No I/O: the store reads the state, these functions say ALLOW or DENY and
why, and the verdict log records it.

Defaults follow the UK Gambling Commission (RTS 12-14, LCCP 3.5, MLR 2017); every number is
configuration."""

from __future__ import annotations

import datetime as dt
import enum
import functools
import hashlib
import json
from dataclasses import asdict, dataclass, field

from services.compliance.aml import cdd_threshold_reached
from services.runtime.errors import DomainError, InvalidArgument

RULE_VERSION = "compliance-rules/2026.11.3"


class Action(enum.StrEnum):
    REGISTRATION = "REGISTRATION"
    DEPOSIT = "DEPOSIT"
    BET = "BET"
    WITHDRAWAL = "WITHDRAWAL"
    GAME_LAUNCH = "GAME_LAUNCH"
    LIMIT_CHANGE = "LIMIT_CHANGE"
    EXCLUSION = "EXCLUSION"
    KYC_UPDATE = "KYC_UPDATE"
    ENROLMENT = "ENROLMENT"
    REALITY_CHECK_CHANGE = "REALITY_CHECK_CHANGE"
    RULE_FLAG_CHANGE = "RULE_FLAG_CHANGE"
    # AML transaction monitoring (services.compliance.monitoring) and its case handling.
    AML_MONITORING = "AML_MONITORING"
    AML_ALERT_CLOSE = "AML_ALERT_CLOSE"


class LimitKind(enum.StrEnum):
    DEPOSIT = "DEPOSIT"
    LOSS = "LOSS"
    STAKE = "STAKE"


class Period(enum.StrEnum):
    DAY = "DAY"
    WEEK = "WEEK"
    MONTH = "MONTH"

    @property
    def length(self) -> dt.timedelta:
        return {
            "DAY": dt.timedelta(days=1),
            "WEEK": dt.timedelta(days=7),
            "MONTH": dt.timedelta(days=30),
        }[self.value]


@dataclass(frozen=True)
class ComplianceConfig:
    """Per jurisdiction. Amounts are minor units of `currency`."""

    allowed_countries: list[str] = field(default_factory=lambda: ["GB", "IE", "MT"])
    minimum_age: int = 18
    limit_cooling_off_hours: int = 24
    timeout_min_hours: int = 24
    timeout_max_hours: int = 24 * 7 * 6
    self_exclusion_min_days: int = 183
    currency: str = "GBP"
    slot_stake_cap_minor: int = 500
    young_adult_slot_stake_cap_minor: int = 200
    young_adult_max_age: int = 24
    # Customer due diligence: single or linked (rolling 24 h) deposits worth this many EUR
    # minor units or more (MLR 2017 reg. 27, the EU directive's EUR 2,000 for casinos), in
    # EUR whatever `currency` is: the checks compare in `currency`, the threshold converted
    # at the configured fx_to_eur rate and rounded down (never looser than in EUR).
    cdd_threshold_eur_minor: int = 200_000
    # Reality checks (RTS 13): the interval a player may choose, the default when they have
    # not, and how old a game session's start may be when its check data is asked for.
    reality_check_default_minutes: int = 60
    reality_check_min_minutes: int = 10
    reality_check_max_minutes: int = 120
    reality_check_max_session_hours: int = 24
    # Affordability (UKGC financial vulnerability / affordability checks; behind the
    # AFFORDABILITY flag): rolling-30-day deposits at or above this need an assessment no
    # older than the validity period.
    affordability_threshold_minor: int = 200_000
    affordability_assessment_valid_days: int = 180

    @functools.cached_property
    def version(self) -> str:
        # Cached: a frozen config never changes, and every verdict records its version.
        canonical = json.dumps(asdict(self), sort_keys=True).encode()
        return "config/" + hashlib.sha256(canonical).hexdigest()[:12]


@dataclass(frozen=True)
class Reason:
    reason: str
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    allow: bool
    reasons: list[Reason]

    @property
    def verdict(self) -> str:
        return "ALLOW" if self.allow else "DENY"


def age_on(birth_date: dt.date, day: dt.date) -> int:
    before_birthday = (day.month, day.day) < (birth_date.month, birth_date.day)
    return day.year - birth_date.year - before_birthday


@dataclass(frozen=True)
class Applicant:
    given_name: str
    family_name: str
    birth_date: dt.date
    email: str
    postcode: str
    country: str

    def duplicate_key(self) -> tuple[str, str, str]:
        """Same name, date of birth and postcode: likely the same person."""
        name = f"{self.given_name} {self.family_name}".casefold().strip()
        return name, self.birth_date.isoformat(), self.postcode.replace(" ", "").casefold()


def registration(
    applicant: Applicant,
    *,
    today: dt.date,
    request_country: str,
    excluded_internally: bool,
    register_status: str,
    register_request_id: str,
    config: ComplianceConfig,
) -> Decision:
    """`register_status` is the national register's answer: EXCLUDED, NOT_EXCLUDED,
    PREVIOUSLY_EXCLUDED or UNAVAILABLE (which denies: fail closed)."""
    reasons = []
    age = age_on(applicant.birth_date, today)
    if age < config.minimum_age:
        reasons.append(Reason("UNDER_AGE", {"minimum_age": str(config.minimum_age)}))
    for country in {applicant.country, request_country} - {""}:
        if country not in config.allowed_countries:
            reasons.append(Reason("JURISDICTION_BLOCKED", {"country": country}))
    if excluded_internally:
        reasons.append(Reason("LIKELY_DUPLICATE_OF_EXCLUDED"))
    if register_status == "EXCLUDED":
        reasons.append(Reason("REGISTER_EXCLUDED", {"register_request_id": register_request_id}))
    elif register_status == "UNAVAILABLE":
        reasons.append(Reason("REGISTER_UNAVAILABLE", {"detail": register_request_id}))
    return Decision(not reasons, reasons)


@dataclass(frozen=True)
class PlayerState:
    player_id: str
    birth_date: dt.date
    country: str
    name_verified: bool
    address_verified: bool
    birth_date_verified: bool
    cdd_required: bool
    excluded_until: dt.datetime | None
    excluded_indefinitely: bool
    exclusion_kind: str | None  # TIMEOUT | SELF_EXCLUSION
    reality_check_minutes: int | None = None  # None: the jurisdiction's default
    affordability_assessed_at: dt.datetime | None = None
    # Set by an AML rule (fast large spend on a new account) until an officer closes the
    # alert: no new money in, no play.
    play_hold: bool = False
    # When due diligence was last recorded: the CDD threshold links activity after it only.
    cdd_cleared_at: dt.datetime | None = None

    def excluded_at(self, now: dt.datetime) -> bool:
        return self.excluded_indefinitely or (
            self.excluded_until is not None and now < self.excluded_until
        )


@dataclass(frozen=True)
class LimitState:
    kind: LimitKind
    period: Period
    amount_minor: int | None  # in force
    pending_minor: int | None
    pending_requested_at: dt.datetime | None
    update_time: dt.datetime

    def confirmable_at(self, cooling_off: dt.timedelta) -> dt.datetime | None:
        if self.pending_requested_at is None:
            return None
        return self.pending_requested_at + cooling_off


@dataclass(frozen=True)
class Usage:
    """One counted movement of the player: an allowed deposit or stake, a credited win, or
    a rolled-back stake (which no longer counts as staked)."""

    action: str  # DEPOSIT | BET | WIN | ROLLBACK
    amount_minor: int
    at: dt.datetime


@dataclass(frozen=True)
class Window:
    total_minor: int = 0
    oldest: dt.datetime | None = None


@dataclass(frozen=True)
class UsageTotals:
    """The player's counted usage summed over each limit period (rolling, ending now), with
    the oldest counted entry of each window (when the window starts to free up). The store
    computes it in SQL; rules never see individual entries, so a check costs the same for a
    player with ten bets a month as for one with ten thousand."""

    windows: dict[tuple[str, Period], Window] = field(default_factory=dict)
    # Deposits linked for the CDD threshold: the rolling day's, counted only after the
    # player's last CDD clearance (`cdd_cleared_at`, None: never), which restarts the count.
    cdd_linked_minor: int = 0
    cdd_cleared_at: dt.datetime | None = None

    @classmethod
    def of(
        cls, entries: list[Usage], now: dt.datetime, cdd_cleared_at: dt.datetime | None = None
    ) -> UsageTotals:
        totals = cls(cdd_cleared_at=cdd_cleared_at)
        for entry in entries:
            totals = totals.plus(entry, now)
        return totals

    def plus(self, entry: Usage, now: dt.datetime) -> UsageTotals:
        """These totals with one more entry (a decision earlier in the same batch)."""
        windows = dict(self.windows)
        for period in Period:
            if entry.at <= now - period.length:
                continue
            window = windows.get((entry.action, period), Window())
            oldest = entry.at if window.oldest is None else min(window.oldest, entry.at)
            windows[(entry.action, period)] = Window(
                window.total_minor + entry.amount_minor, oldest
            )
        linked = self.cdd_linked_minor
        if entry.action == "DEPOSIT" and entry.at > cdd_linked_since(now, self.cdd_cleared_at):
            linked += entry.amount_minor
        return UsageTotals(windows, linked, self.cdd_cleared_at)

    def total(self, action: str, period: Period) -> int:
        return self.windows.get((action, period), Window()).total_minor

    def resets_at(self, actions: set[str], period: Period, now: dt.datetime) -> dt.datetime:
        """A rolling window frees up when its oldest counted entry leaves it."""
        oldest = [
            w.oldest
            for a in actions
            if (w := self.windows.get((a, period))) is not None and w.oldest is not None
        ]
        return (min(oldest) if oldest else now) + period.length


# What an exclusion or an AML hold closes: play and new money in, never withdrawals.
_PLAY_AND_NEW_MONEY = frozenset({Action.DEPOSIT, Action.BET, Action.GAME_LAUNCH})


def action_check(
    state: PlayerState | None,
    action: Action,
    *,
    amount_minor: int,
    slots: bool,
    request_country: str,
    limits: list[LimitState],
    usage: UsageTotals,
    now: dt.datetime,
    config: ComplianceConfig,
    enabled_rules: frozenset[str] = frozenset(),
) -> Decision:
    """Deposit, bet, withdrawal or game launch. Every failing rule is listed, not just the
    first, so the player sees all that stands in the way. A rule shipped behind a flag
    (FLAGGED_CHECK_RULES) applies only when named in `enabled_rules`: the caller evaluates
    the flags for this player, so this stays pure."""
    if state is None:
        return Decision(False, [Reason("PLAYER_UNKNOWN")])
    reasons: list[Reason] = []
    if state.excluded_at(now) and action in _PLAY_AND_NEW_MONEY:
        # A time-out or self-exclusion closes every product, but the player's own balance
        # stays theirs to withdraw (UKGC: funds are returned on self-exclusion).
        until = "indefinite" if state.excluded_indefinitely else state.excluded_until.isoformat()  # type: ignore[union-attr]
        reasons.append(
            Reason(
                "SELF_EXCLUDED", {"until": until, "kind": state.exclusion_kind or "SELF_EXCLUSION"}
            )
        )
    missing = [
        name
        for name, ok in (
            ("name", state.name_verified),
            ("address", state.address_verified),
            ("birth_date", state.birth_date_verified),
        )
        if not ok
    ]
    if missing:
        reasons.append(Reason("KYC_REQUIRED", {"missing": ",".join(missing)}))
    for country in {state.country, request_country} - {""}:
        if country not in config.allowed_countries:
            reasons.append(Reason("JURISDICTION_BLOCKED", {"country": country}))
    if state.cdd_required:
        reasons.append(Reason("CDD_REQUIRED"))
    if state.play_hold and action in _PLAY_AND_NEW_MONEY:
        # Withdrawals stay possible under an AML hold: the hold stops further play and new
        # money while the case is reviewed; holding a player's own funds needs a legal basis
        # (a consent request to the authorities) that is the officer's call, not a rule's.
        reasons.append(Reason("AML_HOLD"))

    for limit in limits:
        if limit.amount_minor is None:
            continue
        period = limit.period
        staked = usage.total("BET", period) - usage.total("ROLLBACK", period)
        if limit.kind is LimitKind.DEPOSIT and action is Action.DEPOSIT:
            used, actions = usage.total("DEPOSIT", period), {"DEPOSIT"}
        elif limit.kind is LimitKind.STAKE and action is Action.BET:
            used, actions = staked, {"BET"}
        elif limit.kind is LimitKind.LOSS and action is Action.BET:
            # Net loss: stakes minus credited wins; the new stake could all be lost.
            used, actions = staked - usage.total("WIN", period), {"BET"}
        else:
            continue
        if used + amount_minor > limit.amount_minor:
            reasons.append(
                Reason(
                    "LIMIT_EXCEEDED",
                    {
                        "limit_kind": limit.kind.value,
                        "period": limit.period.value,
                        "limit_minor": str(limit.amount_minor),
                        "used_minor": str(max(used, 0)),
                        "resets_at": usage.resets_at(actions, period, now).isoformat(),
                    },
                )
            )
    if action is Action.BET and slots:
        young = age_on(state.birth_date, now.date()) <= config.young_adult_max_age
        cap = config.young_adult_slot_stake_cap_minor if young else config.slot_stake_cap_minor
        if amount_minor > cap:
            reasons.append(Reason("STAKE_CAP_EXCEEDED", {"cap_minor": str(cap)}))
    if AFFORDABILITY in enabled_rules and action is Action.DEPOSIT:
        affordability = affordability_check(state, amount_minor, usage, now, config)
        if affordability is not None:
            reasons.append(affordability)
    return Decision(not reasons, reasons)


# Rules shipped behind a flag (services.compliance.flags holds their registry).
AFFORDABILITY = "AFFORDABILITY"
FLAGGED_CHECK_RULES: tuple[str, ...] = (AFFORDABILITY,)


def affordability_check(
    state: PlayerState,
    amount_minor: int,
    usage: UsageTotals,
    now: dt.datetime,
    config: ComplianceConfig,
) -> Reason | None:
    """UKGC financial vulnerability / affordability: a deposit taking the rolling 30 days'
    deposits to the threshold waits for an assessment of what the player can afford, unless
    one was made within its validity period."""
    used = usage.total("DEPOSIT", Period.MONTH)
    if used + amount_minor < config.affordability_threshold_minor:
        return None
    assessed = state.affordability_assessed_at
    valid = dt.timedelta(days=config.affordability_assessment_valid_days)
    if assessed is not None and now - assessed <= valid:
        return None
    return Reason(
        "AFFORDABILITY_CHECK_REQUIRED",
        {
            "threshold_minor": str(config.affordability_threshold_minor),
            "used_minor": str(used),
        },
    )


@dataclass(frozen=True)
class Jurisdiction:
    """The rules a player lives under: their country of residence's configuration, or the
    default one for a country without its own."""

    code: str  # the country code, or DEFAULT
    config: ComplianceConfig


DEFAULT_JURISDICTION = "DEFAULT"


def jurisdiction_of(
    country: str, default: ComplianceConfig, jurisdictions: dict[str, ComplianceConfig]
) -> Jurisdiction:
    if country in jurisdictions:
        return Jurisdiction(country, jurisdictions[country])
    return Jurisdiction(DEFAULT_JURISDICTION, default)


def cdd_linked_since(now: dt.datetime, cleared_at: dt.datetime | None) -> dt.datetime:
    """Deposits after this moment are linked for the CDD threshold: the rolling day's, but
    none from before the player's last CDD clearance (due diligence covered those)."""
    start = now - Period.DAY.length
    return start if cleared_at is None else max(start, cleared_at)


def crosses_cdd_threshold(
    action: Action,
    amount_minor: int,
    usage: UsageTotals,
    threshold_minor: int,
) -> bool:
    """A withdrawal reaching the customer-due-diligence threshold alone, or a deposit
    reaching it alone or taking the linked deposits (the last 24 h's since the last CDD
    clearance) from under it to at or over it: the rule monitoring applies to wallet
    activity (aml.cdd_threshold_reached), so the gate trips once per crossing and an
    explicit clearance restarts the count. `threshold_minor` is in the currency of the
    amounts (the jurisdiction's: policy.PlayerPolicy.cdd_threshold_minor)."""
    threshold = threshold_minor
    if action is Action.WITHDRAWAL:
        return cdd_threshold_reached(amount_minor, 0, threshold)
    if action is Action.DEPOSIT:
        return cdd_threshold_reached(amount_minor, usage.cdd_linked_minor, threshold)
    return False


# Limits and exclusions: what a change request does.


@dataclass(frozen=True)
class LimitChange:
    amount_minor: int | None  # in force after the change
    pending_minor: int | None
    pending_requested_at: dt.datetime | None
    effective_at: dt.datetime | None  # when the new value applies (None: not yet)
    change: str  # SET | DECREASE | INCREASE_PENDING | CONFIRMED


def set_limit(current: LimitState | None, requested_minor: int, now: dt.datetime) -> LimitChange:
    """A first limit or a decrease applies at once; an increase waits for cooling-off and a
    confirmation after it (and the limit in force stays until then)."""
    if requested_minor <= 0:
        raise InvalidArgument("amount.amount_minor", "a limit must be positive")
    in_force = current.amount_minor if current else None
    if in_force is None:
        return LimitChange(requested_minor, None, None, now, "SET")
    if requested_minor <= in_force:
        # A decrease also cancels any pending increase.
        return LimitChange(requested_minor, None, None, now, "DECREASE")
    return LimitChange(in_force, requested_minor, now, None, "INCREASE_PENDING")


class CoolingOffNotOver(DomainError):
    def __init__(self, confirmable_at: dt.datetime) -> None:
        super().__init__(
            "COOLING_OFF_NOT_OVER",
            "the increase can be confirmed only after its cooling-off period",
            {"confirmable_at": confirmable_at.isoformat()},
        )


class NothingPending(DomainError):
    def __init__(self) -> None:
        super().__init__("NO_PENDING_INCREASE", "there is no pending increase to confirm")


def confirm_increase(
    current: LimitState | None, now: dt.datetime, cooling_off: dt.timedelta
) -> LimitChange:
    if current is None or current.pending_minor is None:
        raise NothingPending()
    confirmable = current.confirmable_at(cooling_off)
    assert confirmable is not None
    if now < confirmable:
        raise CoolingOffNotOver(confirmable)
    return LimitChange(current.pending_minor, None, None, now, "CONFIRMED")


@dataclass(frozen=True)
class Exclusion:
    kind: str  # TIMEOUT | SELF_EXCLUSION
    until: dt.datetime | None  # None: indefinite


class ExclusionTooShort(DomainError):
    def __init__(self, current_until: str) -> None:
        super().__init__(
            "EXCLUSION_CANNOT_BE_SHORTENED",
            "an exclusion in force can be extended but never shortened",
            {"until": current_until},
        )


def exclude(
    state: PlayerState,
    *,
    timeout_hours: int | None,
    self_exclusion_days: int | None,
    indefinite: bool,
    now: dt.datetime,
    config: ComplianceConfig,
) -> Exclusion:
    if timeout_hours is not None:
        if not config.timeout_min_hours <= timeout_hours <= config.timeout_max_hours:
            raise InvalidArgument(
                "timeout_hours",
                f"a time-out lasts {config.timeout_min_hours} to {config.timeout_max_hours} hours",
            )
        wanted = Exclusion("TIMEOUT", now + dt.timedelta(hours=timeout_hours))
    elif self_exclusion_days is not None:
        if self_exclusion_days < config.self_exclusion_min_days:
            raise InvalidArgument(
                "self_exclusion_days",
                f"self-exclusion lasts at least {config.self_exclusion_min_days} days",
            )
        wanted = Exclusion("SELF_EXCLUSION", now + dt.timedelta(days=self_exclusion_days))
    elif indefinite:
        wanted = Exclusion("SELF_EXCLUSION", None)
    else:
        raise InvalidArgument("length", "give timeout_hours, self_exclusion_days or indefinite")
    if state.excluded_at(now):
        current_end = None if state.excluded_indefinitely else state.excluded_until
        shorter = current_end is None or (wanted.until is not None and wanted.until < current_end)
        if shorter:
            raise ExclusionTooShort(
                "indefinite" if current_end is None else current_end.isoformat()
            )
        # A time-out extended into a self-exclusion becomes a self-exclusion.
        if state.exclusion_kind == "SELF_EXCLUSION":
            wanted = Exclusion("SELF_EXCLUSION", wanted.until)
    return wanted
