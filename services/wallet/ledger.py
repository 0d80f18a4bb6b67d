"""Ledger rules: what each wallet operation does to a player's account, decided from the
account's locked state and the facts about related transactions. Pure: no I/O.

Double entry: every movement of money has a player leg and a house leg of opposite sign
(deposits_clearing, bets_in_play, wins_paid, withdrawals_clearing, adjustments), so each
currency sums to zero. Reservations move no money between accounts: they change the
player's reserved balance only. Each player entry is hash-linked to the previous one.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field

from services.runtime.errors import Code, DomainError, InvalidArgument
from services.runtime.fields import request_id_field, text_field

GENESIS_HASH = bytes(32)
# Far below int64: no sum of realistic postings can overflow a bigint balance.
MAX_AMOUNT_MINOR = 10**15
_CURRENCY = re.compile(r"^[A-Z]{3}$")
# A payment instrument's opaque fingerprint from payments: short and plain, so a card
# number or other personal data cannot pass for one by accident.
_INSTRUMENT = re.compile(r"^[A-Za-z0-9_:.-]{1,64}$")
_MAX_ID = 128


class Kind(enum.StrEnum):
    DEPOSIT = "DEPOSIT"
    WITHDRAWAL_RESERVE = "WITHDRAWAL_RESERVE"
    WITHDRAWAL_COMMIT = "WITHDRAWAL_COMMIT"
    WITHDRAWAL_RELEASE = "WITHDRAWAL_RELEASE"
    BET = "BET"
    WIN = "WIN"
    BET_ROLLBACK = "BET_ROLLBACK"
    ADJUSTMENT = "ADJUSTMENT"


HOUSE_ACCOUNT: dict[Kind, str] = {
    Kind.DEPOSIT: "deposits_clearing",
    Kind.WITHDRAWAL_COMMIT: "withdrawals_clearing",
    Kind.BET: "bets_in_play",
    Kind.WIN: "wins_paid",
    Kind.BET_ROLLBACK: "bets_in_play",
    Kind.ADJUSTMENT: "adjustments",
}


@dataclass(frozen=True)
class Request:
    """One mutating request, as validated at the surface."""

    kind: Kind
    player_id: str
    request_id: str
    currency: str
    # Magnitude for deposits, reservations, bets and wins; signed for adjustments; 0 for
    # commit, release and rollback (their amount comes from what they refer to).
    amount: int = 0
    round_id: str = ""
    game_id: str = ""
    provider: str = ""
    bet_request_id: str = ""
    withdrawal_id: str = ""
    payment_id: str = ""
    reason: str = ""
    operator_id: str = ""
    payment_instrument: str = ""

    def fingerprint(self) -> bytes:
        """What makes two requests under one key 'the same request'."""
        fields = asdict(self)
        # Absent instrument: left out, so requests recorded before the field existed keep
        # their fingerprints and their retries still replay.
        if not fields["payment_instrument"]:
            del fields["payment_instrument"]
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).digest()


@dataclass(frozen=True)
class AccountState:
    posted: int
    reserved: int
    sequence: int
    last_hash: bytes

    @property
    def available(self) -> int:
        return self.posted - self.reserved


@dataclass(frozen=True)
class Prior:
    """A transaction already recorded for this player."""

    request_id: str
    kind: Kind
    outcome: str  # "applied" | "refused"
    currency: str
    amount: int
    reserved_delta: int
    round_id: str = ""
    game_id: str = ""
    provider: str = ""

    @property
    def applied(self) -> bool:
        return self.outcome == "applied"


@dataclass(frozen=True)
class Facts:
    """What the store found about the transactions a request refers to, under the lock."""

    bet: Prior | None = None  # the referenced bet (WIN, BET_ROLLBACK)
    rollback: Prior | None = None  # an applied rollback (or tombstone) of the bet
    round_settled: bool = False  # the bet's round has an applied win
    reservation: Prior | None = None  # the applied reservation of the withdrawal_id
    finalisation: Prior | None = None  # its applied commit or release


@dataclass(frozen=True)
class Effect:
    """An accepted request: how it changes the account."""

    amount: int  # signed change of posted
    reserved_delta: int = 0
    nothing_to_undo: bool = False

    @property
    def writes_entry(self) -> bool:
        return self.amount != 0 or self.reserved_delta != 0


@dataclass(frozen=True)
class Refusal:
    """A refused request. Recorded under its key, so a retry gets the same answer."""

    reason: str
    message: str
    metadata: dict[str, str] = field(default_factory=dict)

    def error(self) -> DomainError:
        return DomainError(self.reason, self.message, self.metadata, code=Code.FAILED_PRECONDITION)


@dataclass(frozen=True)
class ReplayOf:
    """The request repeats one already applied under another key (a second rollback of the
    same bet): answer with that transaction's result."""

    request_id: str


Decision = Effect | Refusal | ReplayOf


class AccountNotFound(DomainError):
    code = Code.NOT_FOUND

    def __init__(self, player_id: str, currency: str) -> None:
        super().__init__(
            "ACCOUNT_NOT_FOUND",
            f"player {player_id} has no {currency} account",
            {"player_id": player_id, "currency_code": currency},
        )


class CurrencyNotSupported(DomainError):
    code = Code.INVALID_ARGUMENT

    def __init__(self, currency: str) -> None:
        super().__init__(
            "CURRENCY_NOT_SUPPORTED", f"the wallet holds no {currency}", {"currency_code": currency}
        )


def insufficient_funds(account: AccountState, currency: str, wanted: int) -> Refusal:
    return Refusal(
        "INSUFFICIENT_FUNDS",
        f"available balance {account.available} is less than {wanted}",
        {
            "available_minor": str(account.available),
            "posted_minor": str(account.posted),
            "reserved_minor": str(account.reserved),
            "currency_code": currency,
        },
    )


def _same_origin(request: Request, bet: Prior) -> bool:
    """A win or rollback that names its game or provider names its bet's: one provider's
    round ids and bet ids may be another's too, and must never settle them."""
    return (not request.game_id or not bet.game_id or request.game_id == bet.game_id) and (
        not request.provider or not bet.provider or request.provider == bet.provider
    )


def decide(request: Request, account: AccountState, facts: Facts) -> Decision:
    kind = request.kind
    if kind is Kind.DEPOSIT:
        return Effect(request.amount)
    if kind is Kind.BET:
        if facts.rollback is not None:
            return Refusal(
                "BET_ROLLED_BACK",
                "this bet was rolled back before it arrived",
                {"bet_request_id": request.request_id},
            )
        if account.available < request.amount:
            return insufficient_funds(account, request.currency, request.amount)
        return Effect(-request.amount)
    if kind is Kind.WIN:
        bet = facts.bet
        if bet is None or not bet.applied or bet.kind is not Kind.BET:
            return Refusal(
                "BET_NOT_FOUND",
                "the win refers to no applied bet",
                {"bet_request_id": request.bet_request_id},
            )
        if facts.rollback is not None:
            return Refusal(
                "BET_ROLLED_BACK",
                "the win refers to a rolled-back bet",
                {"bet_request_id": request.bet_request_id},
            )
        if (
            bet.currency != request.currency
            or bet.round_id != request.round_id
            or not _same_origin(request, bet)
        ):
            return Refusal(
                "BET_NOT_FOUND",
                "the win's round, currency, game or provider differs from its bet's",
                {"bet_request_id": request.bet_request_id, "round_id": bet.round_id},
            )
        return Effect(request.amount)
    if kind is Kind.BET_ROLLBACK:
        if facts.rollback is not None:
            return ReplayOf(facts.rollback.request_id)
        bet = facts.bet
        if bet is None or not bet.applied or bet.kind is not Kind.BET:
            # Never seen (or refused): the tombstone stops the bet if it arrives later.
            return Effect(0, nothing_to_undo=True)
        if bet.currency != request.currency or not _same_origin(request, bet):
            return Refusal(
                "BET_NOT_FOUND",
                "the bet is in another currency, game or provider",
                {"bet_request_id": request.bet_request_id},
            )
        if facts.round_settled:
            return Refusal(
                "ALREADY_SETTLED",
                "the bet's round already has a win",
                {"bet_request_id": request.bet_request_id, "round_id": bet.round_id},
            )
        return Effect(-bet.amount)  # the bet's amount is negative: this credits it back
    if kind is Kind.WITHDRAWAL_RESERVE:
        if facts.reservation is not None:
            return Refusal(
                "WITHDRAWAL_ID_IN_USE",
                "this withdrawal_id already has a reservation",
                {"withdrawal_id": request.withdrawal_id},
            )
        if account.available < request.amount:
            return insufficient_funds(account, request.currency, request.amount)
        return Effect(0, reserved_delta=request.amount)
    if kind in (Kind.WITHDRAWAL_COMMIT, Kind.WITHDRAWAL_RELEASE):
        reservation = facts.reservation
        if reservation is None or reservation.currency != request.currency:
            return Refusal(
                "WITHDRAWAL_NOT_FOUND",
                "no reservation with this withdrawal_id",
                {"withdrawal_id": request.withdrawal_id},
            )
        if facts.finalisation is not None:
            return Refusal(
                "WITHDRAWAL_ALREADY_FINALISED",
                "the reservation was already committed or released",
                {"withdrawal_id": request.withdrawal_id, "state": facts.finalisation.kind.value},
            )
        held = reservation.reserved_delta
        if kind is Kind.WITHDRAWAL_COMMIT:
            return Effect(-held, reserved_delta=-held)
        return Effect(0, reserved_delta=-held)
    if kind is Kind.ADJUSTMENT:
        if request.amount < 0 and account.available < -request.amount:
            return insufficient_funds(account, request.currency, -request.amount)
        return Effect(request.amount)
    raise AssertionError(f"unhandled kind {kind}")


@dataclass(frozen=True)
class Entry:
    """The player leg of a posting, with the house leg it balances against."""

    player_id: str
    currency: str
    sequence: int
    request_id: str
    kind: Kind
    amount: int
    reserved_delta: int
    balance_after: int
    reserved_after: int
    house_account: str | None
    create_time: dt.datetime
    prev_hash: bytes

    @property
    def house_amount(self) -> int:
        return -self.amount

    @property
    def hash(self) -> bytes:
        return chain_hash(self)


def chain_hash(entry: Entry) -> bytes:
    """SHA-256 over the previous hash and every field of both legs: changing any stored
    byte of an entry, or removing one, breaks the chain from there on."""
    canonical = "|".join(
        str(v)
        for v in (
            entry.player_id,
            entry.currency,
            entry.sequence,
            entry.request_id,
            entry.kind.value,
            entry.amount,
            entry.reserved_delta,
            entry.balance_after,
            entry.reserved_after,
            entry.house_account or "",
            entry.house_amount if entry.house_account else 0,
            entry.create_time.astimezone(dt.UTC).isoformat(timespec="microseconds"),
        )
    )
    return hashlib.sha256(entry.prev_hash + canonical.encode()).digest()


def next_entry(request: Request, account: AccountState, effect: Effect, now: dt.datetime) -> Entry:
    return Entry(
        player_id=request.player_id,
        currency=request.currency,
        sequence=account.sequence + 1,
        request_id=request.request_id,
        kind=request.kind,
        amount=effect.amount,
        reserved_delta=effect.reserved_delta,
        balance_after=account.posted + effect.amount,
        reserved_after=account.reserved + effect.reserved_delta,
        house_account=HOUSE_ACCOUNT.get(request.kind) if effect.amount else None,
        create_time=now,
        prev_hash=account.last_hash,
    )


# Input rules, applied at the surface before anything is locked.


def require_id(field_name: str, value: str) -> str:
    if field_name == "request_id":
        return request_id_field(value, limit=_MAX_ID)
    return text_field(field_name, value, limit=_MAX_ID)


def optional_id(field_name: str, value: str) -> str:
    return text_field(field_name, value, required=False, limit=_MAX_ID)


def optional_instrument(value: str, field_name: str = "payment_instrument") -> str:
    if value and not _INSTRUMENT.match(value):
        raise InvalidArgument(
            field_name,
            f"{field_name} must be at most 64 characters of A-Z a-z 0-9 _ : . -",
        )
    return value


def require_currency(currency: str, supported: frozenset[str], field_name: str) -> str:
    if not _CURRENCY.match(currency):
        raise InvalidArgument(field_name, "currency_code must be an ISO 4217 code like EUR")
    if currency not in supported:
        raise CurrencyNotSupported(currency)
    return currency


def require_amount(
    amount: int, field_name: str, *, allow_zero: bool = False, signed: bool = False
) -> int:
    if abs(amount) > MAX_AMOUNT_MINOR:
        raise InvalidArgument(field_name, f"amount exceeds {MAX_AMOUNT_MINOR} minor units")
    if signed:
        if amount == 0:
            raise InvalidArgument(field_name, "an adjustment must not be zero")
    elif amount < 0 or (amount == 0 and not allow_zero):
        raise InvalidArgument(
            field_name,
            "amount must be positive" if not allow_zero else "amount must not be negative",
        )
    return amount
