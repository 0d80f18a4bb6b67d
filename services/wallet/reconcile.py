"""Reconciliation: prove that every balance equals the sum of its entries, that every
account's hash chain is intact, that every currency sums to zero, and that the journal of
outcomes (wallet.transactions, which replays, rollbacks and withdrawal commits read) agrees
with the entries. Pure: it judges rows the store read in one snapshot."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field

from services.wallet.ledger import GENESIS_HASH, Entry, Kind, chain_hash


@dataclass(frozen=True)
class EntryRow:
    player_id: str
    currency: str
    sequence: int
    leg: int
    account: str
    request_id: str
    kind: str
    amount: int
    reserved_delta: int
    balance_after: int | None
    reserved_after: int | None
    prev_hash: bytes | None
    hash: bytes | None
    create_time: dt.datetime
    # The player leg's journal row (same player and request id), if there is one.
    journal: JournalRow | None = None


@dataclass(frozen=True)
class JournalRow:
    """The recorded outcome of a request (a wallet.transactions row), as reconcile sees it."""

    player_id: str
    currency: str
    request_id: str
    kind: str
    amount: int
    reserved_delta: int
    outcome: str
    sequence: int | None


@dataclass(frozen=True)
class AccountRow:
    player_id: str
    currency: str
    posted: int
    reserved: int
    last_sequence: int
    last_hash: bytes


@dataclass(frozen=True)
class Discrepancy:
    account: str
    kind: str
    sequence: int = 0
    expected: str = ""
    actual: str = ""


@dataclass
class Report:
    accounts_checked: int = 0
    entries_checked: int = 0
    # Signed checkpoints verified, and the account heads they recorded (checkpoints.py).
    checkpoints_checked: int = 0
    checkpoint_heads_checked: int = 0
    discrepancies: list[Discrepancy] = field(default_factory=list)
    # currency -> sum of every leg; currency -> house account -> balance
    currency_sums: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    house: dict[str, dict[str, int]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(int))
    )


def account_name(player_id: str, currency: str) -> str:
    return f"players/{player_id}/accounts/{currency}"


def check_account(account: AccountRow | None, legs: list[EntryRow], report: Report) -> None:
    """Walk one account's entries in sequence order (both legs of each). `account` is None
    for entries whose account row is missing."""
    if account is None:
        first = legs[0]
        report.discrepancies.append(
            Discrepancy(
                account_name(first.player_id, first.currency),
                "ACCOUNT_MISSING",
                first.sequence,
                "an account row",
                "entries without one",
            )
        )
        return
    name = account_name(account.player_id, account.currency)
    report.accounts_checked += 1
    by_sequence: dict[int, dict[int, EntryRow]] = defaultdict(dict)
    for row in legs:
        by_sequence[row.sequence][row.leg] = row
        report.currency_sums[row.currency] += row.amount
        if row.leg == 1:
            report.house[row.currency][row.account] += row.amount

    def flag(kind: str, sequence: int = 0, expected: object = "", actual: object = "") -> None:
        report.discrepancies.append(Discrepancy(name, kind, sequence, str(expected), str(actual)))

    posted = reserved = 0
    prev_hash = GENESIS_HASH
    expected_sequence = 1
    for sequence in sorted(by_sequence):
        report.entries_checked += 1
        if sequence != expected_sequence:
            flag("SEQUENCE_GAP", sequence, expected_sequence, sequence)
            expected_sequence = sequence
        expected_sequence += 1
        legs_of = by_sequence[sequence]
        player, house = legs_of.get(0), legs_of.get(1)
        if player is None:
            flag("CHAIN_BROKEN", sequence, "player leg", "missing")
            continue
        posted += player.amount
        reserved += player.reserved_delta
        if player.balance_after != posted or player.reserved_after != reserved:
            flag(
                "RUNNING_BALANCE_MISMATCH",
                sequence,
                f"{posted}/{reserved}",
                f"{player.balance_after}/{player.reserved_after}",
            )
        if posted < 0 or reserved < 0 or reserved > posted:
            flag("NEGATIVE_BALANCE", sequence, ">= 0", f"{posted}/{reserved}")
        recomputed = chain_hash(
            Entry(
                player_id=player.player_id,
                currency=player.currency,
                sequence=player.sequence,
                request_id=player.request_id,
                kind=Kind(player.kind),
                amount=player.amount,
                reserved_delta=player.reserved_delta,
                balance_after=player.balance_after or 0,
                reserved_after=player.reserved_after or 0,
                house_account=house.account if house else None,
                create_time=player.create_time,
                prev_hash=prev_hash,
            )
        )
        journal = player.journal
        if journal is None or (
            journal.outcome,
            journal.kind,
            journal.currency,
            journal.amount,
            journal.reserved_delta,
            journal.sequence,
        ) != (
            "applied",
            player.kind,
            player.currency,
            player.amount,
            player.reserved_delta,
            player.sequence,
        ):
            # What a rollback would refund or a commit would take is read from the journal.
            flag(
                "JOURNAL_MISMATCH",
                sequence,
                f"applied {player.kind} {player.amount}/{player.reserved_delta}",
                _journal_text(journal),
            )
        if house is not None and house.amount != -player.amount:
            flag("CHAIN_BROKEN", sequence, -player.amount, house.amount)
        elif player.prev_hash != prev_hash or player.hash != recomputed:
            flag("CHAIN_BROKEN", sequence, recomputed.hex(), (player.hash or b"").hex())
        prev_hash = player.hash or b""

    if account.posted != posted:
        flag("BALANCE_MISMATCH", account.last_sequence, posted, account.posted)
    if account.reserved != reserved:
        flag("RESERVED_MISMATCH", account.last_sequence, reserved, account.reserved)
    if account.last_sequence != len(by_sequence) or (
        by_sequence and account.last_hash != prev_hash
    ):
        flag(
            "CHAIN_BROKEN",
            account.last_sequence,
            f"head {len(by_sequence)}",
            f"account head {account.last_sequence}",
        )


def check_currency_sums(report: Report) -> None:
    for currency, total in sorted(report.currency_sums.items()):
        if total != 0:
            report.discrepancies.append(
                Discrepancy(f"currencies/{currency}", "CURRENCY_NOT_BALANCED", 0, "0", str(total))
            )


def check_journal_without_entries(rows: list[JournalRow], report: Report) -> None:
    """`rows`: applied journal rows that should have an entry and have none (see
    store.journal_without_entries)."""
    for row in rows:
        report.discrepancies.append(
            Discrepancy(
                account_name(row.player_id, row.currency),
                "JOURNAL_WITHOUT_ENTRY",
                row.sequence or 0,
                "an entry",
                _journal_text(row),
            )
        )


def _journal_text(row: JournalRow | None) -> str:
    if row is None:
        return "no journal row"
    return f"{row.outcome} {row.kind} {row.amount}/{row.reserved_delta} ({row.request_id})"
