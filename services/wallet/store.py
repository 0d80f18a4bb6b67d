"""SQL of the wallet. Every statement is explicit; every table is keyed by player first.

Functions take a connection already inside the caller's transaction: the transaction
boundary belongs to `postings`, which owns the invariants.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.wallet.ledger import (
    AccountState,
    Effect,
    Entry,
    Facts,
    Kind,
    Prior,
    Refusal,
    Request,
)
from services.wallet.reconcile import AccountRow, EntryRow


@dataclass(frozen=True)
class StoredTransaction:
    """A row of wallet.transactions: the recorded outcome of one request."""

    player_id: str
    request_id: str
    kind: Kind
    currency: str
    amount: int
    reserved_delta: int
    fingerprint: bytes
    outcome: str
    refusal: Refusal | None
    nothing_to_undo: bool
    sequence: int | None
    posted_after: int
    reserved_after: int
    sequence_after: int
    round_id: str
    game_id: str
    provider: str
    bet_request_id: str
    withdrawal_id: str
    payment_id: str
    reason: str
    operator_id: str
    caller: str
    create_time: dt.datetime


def new_transaction(
    request: Request,
    *,
    caller: str,
    effect: Effect,
    refusal: Refusal | None,
    sequence: int | None,
    after: AccountState,
    create_time: dt.datetime,
) -> StoredTransaction:
    """The row recording a request's outcome, before it is inserted."""
    return StoredTransaction(
        player_id=request.player_id,
        request_id=request.request_id,
        kind=request.kind,
        currency=request.currency,
        amount=effect.amount,
        reserved_delta=effect.reserved_delta,
        fingerprint=request.fingerprint(),
        outcome="refused" if refusal else "applied",
        refusal=refusal,
        nothing_to_undo=effect.nothing_to_undo,
        sequence=sequence,
        posted_after=after.posted,
        reserved_after=after.reserved,
        sequence_after=after.sequence,
        round_id=request.round_id,
        game_id=request.game_id,
        provider=request.provider,
        bet_request_id=request.bet_request_id,
        withdrawal_id=request.withdrawal_id,
        payment_id=request.payment_id,
        reason=request.reason,
        operator_id=request.operator_id,
        caller=caller,
        create_time=create_time,
    )


_TX_COLUMNS = (
    "player_id, request_id, kind, currency, amount, reserved_delta, fingerprint, outcome,"
    " refusal_reason, refusal_metadata, nothing_to_undo, sequence, posted_after,"
    " reserved_after, sequence_after, round_id, game_id, provider, bet_request_id,"
    " withdrawal_id, payment_id, reason, operator_id, caller, create_time"
)


def _stored(row: Any) -> StoredTransaction:
    refusal = None
    if row.outcome == "refused":
        metadata = dict(row.refusal_metadata or {})
        message = metadata.pop("_message", row.refusal_reason)
        refusal = Refusal(row.refusal_reason, message, metadata)
    return StoredTransaction(
        player_id=row.player_id,
        request_id=row.request_id,
        kind=Kind(row.kind),
        currency=row.currency,
        amount=row.amount,
        reserved_delta=row.reserved_delta,
        fingerprint=bytes(row.fingerprint),
        outcome=row.outcome,
        refusal=refusal,
        nothing_to_undo=row.nothing_to_undo,
        sequence=row.sequence,
        posted_after=row.posted_after,
        reserved_after=row.reserved_after,
        sequence_after=row.sequence_after,
        round_id=row.round_id or "",
        game_id=row.game_id or "",
        provider=row.provider or "",
        bet_request_id=row.bet_request_id or "",
        withdrawal_id=row.withdrawal_id or "",
        payment_id=row.payment_id or "",
        reason=row.reason or "",
        operator_id=row.operator_id or "",
        caller=row.caller,
        create_time=row.create_time,
    )


async def open_account(conn: AsyncConnection, player_id: str, currency: str) -> bool:
    """Create the account row (so later postings have a row to lock). True if created."""
    result = await conn.execute(
        text(
            "INSERT INTO wallet.accounts (player_id, currency) VALUES (:p, :c)"
            " ON CONFLICT (player_id, currency) DO NOTHING RETURNING player_id"
        ),
        {"p": player_id, "c": currency},
    )
    return result.first() is not None


async def read_account(
    conn: AsyncConnection, player_id: str, currency: str, *, lock: bool = False
) -> AccountState | None:
    """The account's balances; with lock=True, FOR UPDATE: every posting to this account
    serialises here, inside its transaction."""
    row = (
        await conn.execute(
            text(
                "SELECT posted, reserved, last_sequence, last_hash FROM wallet.accounts"
                " WHERE player_id = :p AND currency = :c" + (" FOR UPDATE" if lock else "")
            ),
            {"p": player_id, "c": currency},
        )
    ).first()
    if row is None:
        return None
    return AccountState(row.posted, row.reserved, row.last_sequence, bytes(row.last_hash))


def _prior(row: Any) -> Prior:
    return Prior(
        request_id=row.request_id,
        kind=Kind(row.kind),
        outcome=row.outcome,
        currency=row.currency,
        amount=row.amount,
        reserved_delta=row.reserved_delta,
        round_id=row.round_id or "",
    )


_FACT_COLUMNS = "request_id, kind, outcome, currency, amount, reserved_delta, round_id"


async def load_facts(conn: AsyncConnection, request: Request) -> Facts:
    """The related transactions a decision needs, in one round trip per request."""
    kind = request.kind
    if kind in (Kind.BET, Kind.WIN, Kind.BET_ROLLBACK):
        bet_id = request.request_id if kind is Kind.BET else request.bet_request_id
        rows = (
            await conn.execute(
                text(
                    f"SELECT 'bet' AS role, {_FACT_COLUMNS} FROM wallet.transactions"
                    " WHERE player_id = :p AND request_id = :bet AND kind = 'BET'"
                    f" UNION ALL SELECT 'rollback', {_FACT_COLUMNS} FROM wallet.transactions"
                    " WHERE player_id = :p AND bet_request_id = :bet"
                    " AND kind = 'BET_ROLLBACK' AND outcome = 'applied'"
                    f" UNION ALL (SELECT 'win', {_FACT_COLUMNS} FROM wallet.transactions w"
                    " WHERE w.player_id = :p AND w.kind = 'WIN' AND w.outcome = 'applied'"
                    " AND w.round_id = (SELECT b.round_id FROM wallet.transactions b"
                    "   WHERE b.player_id = :p AND b.request_id = :bet AND b.kind = 'BET')"
                    " LIMIT 1)"
                ),
                {"p": request.player_id, "bet": bet_id},
            )
        ).all()
        by_role = {row.role: _prior(row) for row in rows}
        return Facts(
            bet=by_role.get("bet") if kind is not Kind.BET else None,
            rollback=by_role.get("rollback"),
            round_settled="win" in by_role,
        )
    if kind in (Kind.WITHDRAWAL_RESERVE, Kind.WITHDRAWAL_COMMIT, Kind.WITHDRAWAL_RELEASE):
        rows = (
            await conn.execute(
                text(
                    f"SELECT {_FACT_COLUMNS} FROM wallet.transactions"
                    " WHERE player_id = :p AND withdrawal_id = :w AND outcome = 'applied'"
                ),
                {"p": request.player_id, "w": request.withdrawal_id},
            )
        ).all()
        priors = [_prior(row) for row in rows]
        return Facts(
            reservation=next((p for p in priors if p.kind is Kind.WITHDRAWAL_RESERVE), None),
            finalisation=next(
                (p for p in priors if p.kind in (Kind.WITHDRAWAL_COMMIT, Kind.WITHDRAWAL_RELEASE)),
                None,
            ),
        )
    return Facts()


async def insert_transaction(conn: AsyncConnection, tx: StoredTransaction) -> bool:
    """Record a request's outcome under its key. False when the key exists already: the
    primary key decides, in this transaction, never a read before the write."""
    refusal_metadata = (
        json.dumps({**tx.refusal.metadata, "_message": tx.refusal.message}) if tx.refusal else None
    )
    result = await conn.execute(
        text(
            f"INSERT INTO wallet.transactions ({_TX_COLUMNS}) VALUES (:player_id, :request_id,"
            " :kind, :currency, :amount, :reserved_delta, :fingerprint, :outcome,"
            " :refusal_reason, CAST(:refusal_metadata AS jsonb), :nothing_to_undo, :sequence,"
            " :posted_after, :reserved_after, :sequence_after, :round_id, :game_id, :provider,"
            " :bet_request_id, :withdrawal_id, :payment_id, :reason, :operator_id, :caller,"
            " :create_time)"
            " ON CONFLICT (player_id, request_id) DO NOTHING RETURNING request_id"
        ),
        {
            "player_id": tx.player_id,
            "request_id": tx.request_id,
            "kind": tx.kind.value,
            "currency": tx.currency,
            "amount": tx.amount,
            "reserved_delta": tx.reserved_delta,
            "fingerprint": tx.fingerprint,
            "outcome": tx.outcome,
            "refusal_reason": tx.refusal.reason if tx.refusal else None,
            "refusal_metadata": refusal_metadata,
            "nothing_to_undo": tx.nothing_to_undo,
            "sequence": tx.sequence,
            "posted_after": tx.posted_after,
            "reserved_after": tx.reserved_after,
            "sequence_after": tx.sequence_after,
            "round_id": tx.round_id or None,
            "game_id": tx.game_id or None,
            "provider": tx.provider or None,
            "bet_request_id": tx.bet_request_id or None,
            "withdrawal_id": tx.withdrawal_id or None,
            "payment_id": tx.payment_id or None,
            "reason": tx.reason or None,
            "operator_id": tx.operator_id or None,
            "caller": tx.caller,
            "create_time": tx.create_time,
        },
    )
    return result.first() is not None


async def get_transaction(
    conn: AsyncConnection, player_id: str, request_id: str
) -> StoredTransaction | None:
    row = (
        await conn.execute(
            text(
                f"SELECT {_TX_COLUMNS} FROM wallet.transactions"
                " WHERE player_id = :p AND request_id = :r"
            ),
            {"p": player_id, "r": request_id},
        )
    ).first()
    return _stored(row) if row is not None else None


async def append_entry(conn: AsyncConnection, entry: Entry) -> None:
    """Both legs of the posting, then the account row moved to the entry's balances."""
    legs: list[dict[str, Any]] = [
        {
            "player_id": entry.player_id,
            "currency": entry.currency,
            "sequence": entry.sequence,
            "leg": 0,
            "account": "player",
            "request_id": entry.request_id,
            "kind": entry.kind.value,
            "amount": entry.amount,
            "reserved_delta": entry.reserved_delta,
            "balance_after": entry.balance_after,
            "reserved_after": entry.reserved_after,
            "prev_hash": entry.prev_hash,
            "hash": entry.hash,
            "create_time": entry.create_time,
        }
    ]
    if entry.house_account:
        legs.append(
            {
                **legs[0],
                "leg": 1,
                "account": entry.house_account,
                "amount": entry.house_amount,
                "reserved_delta": 0,
                "balance_after": None,
                "reserved_after": None,
                "prev_hash": None,
                "hash": None,
            }
        )
    await conn.execute(
        text(
            "INSERT INTO wallet.entries (player_id, currency, sequence, leg, account, request_id,"
            " kind, amount, reserved_delta, balance_after, reserved_after, prev_hash, hash,"
            " create_time) VALUES (:player_id, :currency, :sequence, :leg, :account,"
            " :request_id, :kind, :amount, :reserved_delta, :balance_after, :reserved_after,"
            " :prev_hash, :hash, :create_time)"
        ),
        legs,
    )
    await conn.execute(
        text(
            "UPDATE wallet.accounts SET posted = :posted, reserved = :reserved,"
            " last_sequence = :sequence, last_hash = :hash"
            " WHERE player_id = :p AND currency = :c"
        ),
        {
            "posted": entry.balance_after,
            "reserved": entry.reserved_after,
            "sequence": entry.sequence,
            "hash": entry.hash,
            "p": entry.player_id,
            "c": entry.currency,
        },
    )


async def list_transactions(
    conn: AsyncConnection,
    player_id: str,
    *,
    kinds: Sequence[str],
    currency: str | None,
    start: dt.datetime | None,
    end: dt.datetime | None,
    before: tuple[dt.datetime, str] | None,
    limit: int,
) -> list[StoredTransaction]:
    """Newest first, keyset-paged on (create_time, request_id)."""
    where = ["player_id = :p"]
    params: dict[str, Any] = {"p": player_id, "limit": limit}
    if kinds:
        where.append("kind = ANY(:kinds)")
        params["kinds"] = list(kinds)
    if currency:
        where.append("currency = :c")
        params["c"] = currency
    if start:
        where.append("create_time >= :start")
        params["start"] = start
    if end:
        where.append("create_time < :end")
        params["end"] = end
    if before:
        where.append("(create_time, request_id) < (:b_time, :b_id)")
        params["b_time"], params["b_id"] = before
    rows = await conn.execute(
        text(
            f"SELECT {_TX_COLUMNS} FROM wallet.transactions WHERE {' AND '.join(where)}"
            " ORDER BY create_time DESC, request_id DESC LIMIT :limit"
        ),
        params,
    )
    return [_stored(row) for row in rows]


async def stream_ledger(
    conn: AsyncConnection, player_id: str | None, currency: str | None
) -> AsyncIterator[tuple[AccountRow | None, list[EntryRow]]]:
    """Each account with its entries (both legs, in sequence order), one account at a time
    from a server-side cursor, so memory holds one account's history, not the ledger's. A
    FULL JOIN so entries without an account row surface too (as account None). Run it in a
    REPEATABLE READ transaction: one snapshot for the whole walk."""
    where, params = "", {}
    if player_id:
        where = " WHERE coalesce(a.player_id, e.player_id) = :p"
        where += " AND coalesce(a.currency, e.currency) = :c"
        params = {"p": player_id, "c": currency}
    result = await conn.stream(
        text(
            "SELECT coalesce(a.player_id, e.player_id) AS key_player,"
            " coalesce(a.currency, e.currency) AS key_currency, a.player_id AS a_player,"
            " a.posted, a.reserved, a.last_sequence, a.last_hash, e.player_id AS e_player,"
            " e.sequence, e.leg, e.account, e.request_id, e.kind, e.amount, e.reserved_delta,"
            " e.balance_after, e.reserved_after, e.prev_hash, e.hash, e.create_time"
            " FROM wallet.accounts a FULL JOIN wallet.entries e"
            " ON e.player_id = a.player_id AND e.currency = a.currency"
            f"{where} ORDER BY key_player, key_currency, e.sequence, e.leg"
        ),
        params,
    )
    key: tuple[str, str] | None = None
    account: AccountRow | None = None
    entries: list[EntryRow] = []
    async for r in result:
        if (r.key_player, r.key_currency) != key:
            if key is not None:
                yield account, entries
            key, entries = (r.key_player, r.key_currency), []
            account = (
                AccountRow(
                    r.key_player,
                    r.key_currency,
                    r.posted,
                    r.reserved,
                    r.last_sequence,
                    bytes(r.last_hash),
                )
                if r.a_player is not None
                else None
            )
        if r.e_player is not None:
            entries.append(
                EntryRow(
                    r.key_player,
                    r.key_currency,
                    r.sequence,
                    r.leg,
                    r.account,
                    r.request_id,
                    r.kind,
                    r.amount,
                    r.reserved_delta,
                    r.balance_after,
                    r.reserved_after,
                    bytes(r.prev_hash) if r.prev_hash is not None else None,
                    bytes(r.hash) if r.hash is not None else None,
                    r.create_time,
                )
            )
    if key is not None:
        yield account, entries
