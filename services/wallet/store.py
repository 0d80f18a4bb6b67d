"""SQL of the wallet. Every statement is explicit; every table is keyed by player first.

Functions take a connection already inside the caller's transaction, or for the batch's
three statements its pipeline (`db.pipelined_transaction`), returning what they queued: the
transaction boundary belongs to `postings`, which owns the invariants.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.runtime import db
from services.runtime.outbox import Event, events_document, insert_events
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
from services.wallet.reconcile import AccountRow, EntryRow, JournalRow


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
    payment_instrument: str = ""


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
        payment_instrument=request.payment_instrument,
    )


# The journal's columns with their types (the batch write types its JSON rows by them).
_TX_TYPES = (
    ("player_id", "text"),
    ("request_id", "text"),
    ("kind", "text"),
    ("currency", "text"),
    ("amount", "bigint"),
    ("reserved_delta", "bigint"),
    ("fingerprint", "bytea"),
    ("outcome", "text"),
    ("refusal_reason", "text"),
    ("refusal_metadata", "jsonb"),
    ("nothing_to_undo", "boolean"),
    ("sequence", "bigint"),
    ("posted_after", "bigint"),
    ("reserved_after", "bigint"),
    ("sequence_after", "bigint"),
    ("round_id", "text"),
    ("game_id", "text"),
    ("provider", "text"),
    ("bet_request_id", "text"),
    ("withdrawal_id", "text"),
    ("payment_id", "text"),
    ("reason", "text"),
    ("operator_id", "text"),
    ("caller", "text"),
    ("create_time", "timestamptz"),
    ("payment_instrument", "text"),
)
_TX_COLUMNS = db.column_names(_TX_TYPES)


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
        payment_instrument=row.payment_instrument or "",
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


_READ_ACCOUNT = text(
    "SELECT posted, reserved, last_sequence, last_hash FROM wallet.accounts"
    " WHERE player_id = :p AND currency = :c"
)


async def read_account(conn: AsyncConnection, player_id: str, currency: str) -> AccountState | None:
    """The account's balances, one row: a consistent snapshot, in `conn`'s unit of work."""
    row = (await conn.execute(_READ_ACCOUNT, {"p": player_id, "c": currency})).first()
    return None if row is None else _account(row)


async def read_account_alone(
    engine: AsyncEngine, player_id: str, currency: str
) -> AccountState | None:
    """`read_account` as a unit of work of its own (`engine` is `db.autocommit`'s): the read
    behind a player's balance."""
    rows = await db.fetch(engine, _READ_ACCOUNT, {"p": player_id, "c": currency})
    return _account(rows[0]) if rows else None


def _account(row: Any) -> AccountState:
    return AccountState(row.posted, row.reserved, row.last_sequence, bytes(row.last_hash))


def _prior(row: StoredTransaction) -> Prior:
    return Prior(
        request_id=row.request_id,
        kind=Kind(row.kind),
        outcome=row.outcome,
        currency=row.currency,
        amount=row.amount,
        reserved_delta=row.reserved_delta,
        round_id=row.round_id or "",
        game_id=row.game_id or "",
        provider=row.provider or "",
    )


# Currencies travel as char(3)[], the column's own type: compared as text[], the column
# would be cast per row and only the player half of the key usable, and the planner turns
# to hashing the whole accounts table (a sequential scan per batch, growing with players).
_LOCK_ACCOUNTS = text(
    "SELECT a.player_id, a.currency, a.posted, a.reserved, a.last_sequence, a.last_hash"
    " FROM wallet.accounts a"
    " JOIN unnest(CAST(:players AS text[]), CAST(:currencies AS char(3)[])) AS k(p, c)"
    " ON a.player_id = k.p AND a.currency = k.c"
    " ORDER BY a.player_id, a.currency FOR UPDATE OF a"
)


async def lock_accounts(
    pipeline: db.Pipeline, keys: Sequence[tuple[str, str]]
) -> db.Queued[dict[tuple[str, str], AccountState]]:
    """Lock the accounts' rows FOR UPDATE, in key order (so two transactions locking
    overlapping sets never deadlock): every posting to an account serialises here. A
    statement of its own: what is queued after it sees everything committed before the lock
    was granted."""

    def parse(rows: list[Any]) -> dict[tuple[str, str], AccountState]:
        return {
            (r.player_id, r.currency): AccountState(
                r.posted, r.reserved, r.last_sequence, bytes(r.last_hash)
            )
            for r in rows
        }

    return await pipeline.queue(
        _LOCK_ACCOUNTS,
        {"players": [k[0] for k in keys], "currencies": [k[1] for k in keys]},
        parse,
    )


# Everything a batch of decisions reads, in one statement: the rows already under the
# requests' own keys, and the bets and withdrawals the requests refer to.
_READ_KNOWN = text(
    "WITH k AS (SELECT * FROM unnest(CAST(:k_players AS text[]), CAST(:k_ids AS text[]))"
    "   AS k(player_id, ref)),"
    " b AS (SELECT * FROM unnest(CAST(:b_players AS text[]), CAST(:b_ids AS text[]))"
    "   AS b(player_id, ref)),"
    " w AS (SELECT * FROM unnest(CAST(:w_players AS text[]), CAST(:w_ids AS text[]))"
    "   AS w(player_id, ref))"
    " SELECT 'key' AS role, k.ref, t.* FROM k JOIN wallet.transactions t"
    "   ON t.player_id = k.player_id AND t.request_id = k.ref"
    " UNION ALL SELECT 'bet', b.ref, t.* FROM b JOIN wallet.transactions t"
    "   ON t.player_id = b.player_id AND t.request_id = b.ref AND t.kind = 'BET'"
    " UNION ALL SELECT 'rollback', b.ref, t.* FROM b JOIN wallet.transactions t"
    "   ON t.player_id = b.player_id AND t.bet_request_id = b.ref"
    "   AND t.kind = 'BET_ROLLBACK' AND t.outcome = 'applied'"
    " UNION ALL SELECT 'win', b.ref, t.* FROM b JOIN wallet.transactions bet"
    "   ON bet.player_id = b.player_id AND bet.request_id = b.ref AND bet.kind = 'BET'"
    "   CROSS JOIN LATERAL (SELECT * FROM wallet.transactions x WHERE x.player_id = b.player_id"
    "     AND x.kind = 'WIN' AND x.outcome = 'applied' AND x.round_id = bet.round_id LIMIT 1) t"
    " UNION ALL SELECT 'withdrawal', w.ref, t.* FROM w JOIN wallet.transactions t"
    "   ON t.player_id = w.player_id AND t.withdrawal_id = w.ref AND t.outcome = 'applied'"
)


@dataclass(frozen=True)
class Known:
    """What the ledger already holds for a batch of requests (read under their locks)."""

    existing: dict[tuple[str, str], StoredTransaction]  # under the requests' own keys
    facts: list[Facts]  # per request, in order
    related: dict[tuple[str, str], StoredTransaction]  # every referenced transaction


def _bet_ref(request: Request) -> str | None:
    if request.kind is Kind.BET:
        return request.request_id
    if request.kind in (Kind.WIN, Kind.BET_ROLLBACK):
        return request.bet_request_id
    return None


async def read_known(pipeline: db.Pipeline, requests: Sequence[Request]) -> db.Queued[Known]:
    bets = [(r.player_id, ref) for r in requests if (ref := _bet_ref(r))]
    wds = [(r.player_id, r.withdrawal_id) for r in requests if r.withdrawal_id]
    return await pipeline.queue(
        _READ_KNOWN,
        {
            "k_players": [r.player_id for r in requests],
            "k_ids": [r.request_id for r in requests],
            "b_players": [k[0] for k in bets],
            "b_ids": [k[1] for k in bets],
            "w_players": [k[0] for k in wds],
            "w_ids": [k[1] for k in wds],
        },
        lambda rows: _known(requests, rows),
    )


def _known(requests: Sequence[Request], rows: list[Any]) -> Known:
    existing: dict[tuple[str, str], StoredTransaction] = {}
    related: dict[tuple[str, str], StoredTransaction] = {}
    found: dict[tuple[str, str, str], list[Prior]] = {}
    for row in rows:
        tx = _stored(row)
        if row.role == "key":
            existing[(tx.player_id, tx.request_id)] = tx
            continue
        related[(tx.player_id, tx.request_id)] = tx
        found.setdefault((row.role, tx.player_id, row.ref), []).append(_prior(tx))
    facts = []
    for r in requests:
        ref = _bet_ref(r)
        if ref is not None:

            def one(role: str, player: str = r.player_id, bet: str = ref) -> Prior | None:
                return next(iter(found.get((role, player, bet), [])), None)

            facts.append(
                Facts(
                    bet=one("bet") if r.kind is not Kind.BET else None,
                    rollback=one("rollback"),
                    round_settled=one("win") is not None,
                )
            )
        elif r.withdrawal_id:
            priors = found.get(("withdrawal", r.player_id, r.withdrawal_id), [])
            facts.append(
                Facts(
                    reservation=next(
                        (p for p in priors if p.kind is Kind.WITHDRAWAL_RESERVE), None
                    ),
                    finalisation=next(
                        (
                            p
                            for p in priors
                            if p.kind in (Kind.WITHDRAWAL_COMMIT, Kind.WITHDRAWAL_RELEASE)
                        ),
                        None,
                    ),
                )
            )
        else:
            facts.append(Facts())
    return Known(existing, facts, related)


def _tx_values(tx: StoredTransaction) -> dict[str, Any]:
    refusal = tx.refusal
    return {
        "player_id": tx.player_id,
        "request_id": tx.request_id,
        "kind": tx.kind.value,
        "currency": tx.currency,
        "amount": tx.amount,
        "reserved_delta": tx.reserved_delta,
        "fingerprint": tx.fingerprint.hex(),
        "outcome": tx.outcome,
        "refusal_reason": refusal.reason if refusal else None,
        "refusal_metadata": (
            {**refusal.metadata, "_message": refusal.message} if refusal else None
        ),
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
        "create_time": tx.create_time.isoformat(),
        "payment_instrument": tx.payment_instrument or None,
    }


_ENTRY_TYPES = (
    ("player_id", "text"),
    ("currency", "text"),
    ("sequence", "bigint"),
    ("leg", "smallint"),
    ("account", "text"),
    ("request_id", "text"),
    ("kind", "text"),
    ("amount", "bigint"),
    ("reserved_delta", "bigint"),
    ("balance_after", "bigint"),
    ("reserved_after", "bigint"),
    ("prev_hash", "bytea"),
    ("hash", "bytea"),
    ("create_time", "timestamptz"),
)


# The batch's transactions and entries travel as two JSON documents (db.json_rows: 40 lists
# per batch had cost a tenth of a posting's CPU in the driver). The account moves stay
# arrays: the planner knows an array's length but guesses 100 rows for a JSON recordset, and
# the UPDATE must reach each account by its key (tests/wallet/test_query_plans.py), never by
# hashing the whole table against the guess.
#
# The journal's primary key is the idempotency check: a key that exists already (a
# concurrent request of the player under another currency's lock took it) fails the
# statement, and the transaction with it (`KEY_CONSTRAINT`).
_WRITE_POSTINGS = text(
    f"WITH tx AS (INSERT INTO wallet.transactions ({_TX_COLUMNS})"
    f" SELECT {db.json_row_values(_TX_TYPES)} FROM {db.json_rows('txs', _TX_TYPES)}),"
    f" entries AS (INSERT INTO wallet.entries ({db.column_names(_ENTRY_TYPES)})"
    f" SELECT {db.json_row_values(_ENTRY_TYPES)} FROM {db.json_rows('entries', _ENTRY_TYPES)}),"
    " moved AS (UPDATE wallet.accounts a SET posted = v.posted, reserved = v.reserved,"
    " last_sequence = v.sequence, last_hash = v.hash"
    " FROM unnest(CAST(:a_players AS text[]), CAST(:a_currencies AS char(3)[]),"
    " CAST(:a_posted AS bigint[]), CAST(:a_reserved AS bigint[]),"
    " CAST(:a_sequences AS bigint[]), CAST(:a_hashes AS bytea[]))"
    " AS v(player_id, currency, posted, reserved, sequence, hash)"
    " WHERE a.player_id = v.player_id AND a.currency = v.currency)"
    f" {insert_events('wallet', 'events')}"
)
KEY_CONSTRAINT = "transactions_pkey"


def _legs(e: Entry) -> list[dict[str, Any]]:
    """The entry's rows of wallet.entries, ready for JSON: the player's leg, with the
    balances after it and its link in the hash chain, and the house account's opposite."""
    player = {
        "player_id": e.player_id,
        "currency": e.currency,
        "sequence": e.sequence,
        "leg": 0,
        "account": "player",
        "request_id": e.request_id,
        "kind": e.kind.value,
        "amount": e.amount,
        "reserved_delta": e.reserved_delta,
        "balance_after": e.balance_after,
        "reserved_after": e.reserved_after,
        "prev_hash": e.prev_hash.hex(),
        "hash": e.hash.hex(),
        "create_time": e.create_time.isoformat(),
    }
    if not e.house_account:
        return [player]
    house = {
        **player,
        "leg": 1,
        "account": e.house_account,
        "amount": e.house_amount,
        "reserved_delta": 0,
        "balance_after": None,
        "reserved_after": None,
        "prev_hash": None,
        "hash": None,
    }
    return [player, house]


async def write_postings(
    pipeline: db.Pipeline,
    txs: Sequence[StoredTransaction],
    entries: Sequence[Entry],
    events: Sequence[Event],
) -> None:
    """Record every outcome, both legs of each entry, each account moved to its entry's
    balances and the events to the outbox, in one statement, queued for the commit. A key
    that exists already fails it (unique violation of `KEY_CONSTRAINT`): nothing commits."""
    # Each account moves once, to its last entry's balances (an UPDATE ... FROM joining one
    # row to several source rows would apply an arbitrary one of them).
    moves = list({(e.player_id, e.currency): e for e in entries}.values())
    params = {
        "txs": json.dumps([_tx_values(tx) for tx in txs]),
        "entries": json.dumps([leg for e in entries for leg in _legs(e)]),
        "events": events_document(events),
        "a_players": [e.player_id for e in moves],
        "a_currencies": [e.currency for e in moves],
        "a_posted": [e.balance_after for e in moves],
        "a_reserved": [e.reserved_after for e in moves],
        "a_sequences": [e.sequence for e in moves],
        "a_hashes": [e.hash for e in moves],
    }
    await pipeline.queue(_WRITE_POSTINGS, params, lambda rows: None)


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
            " e.balance_after, e.reserved_after, e.prev_hash, e.hash, e.create_time,"
            " t.request_id AS t_request, t.kind AS t_kind, t.currency AS t_currency,"
            " t.amount AS t_amount, t.reserved_delta AS t_reserved, t.outcome AS t_outcome,"
            " t.sequence AS t_sequence"
            " FROM wallet.accounts a FULL JOIN wallet.entries e"
            " ON e.player_id = a.player_id AND e.currency = a.currency"
            " LEFT JOIN wallet.transactions t"
            " ON e.leg = 0 AND t.player_id = e.player_id AND t.request_id = e.request_id"
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
                    JournalRow(
                        r.key_player,
                        r.t_currency,
                        r.t_request,
                        r.t_kind,
                        r.t_amount,
                        r.t_reserved,
                        r.t_outcome,
                        r.t_sequence,
                    )
                    if r.t_request is not None
                    else None,
                )
            )
    if key is not None:
        yield account, entries


async def journal_without_entries(
    conn: AsyncConnection, player_id: str | None, currency: str | None
) -> list[JournalRow]:
    """Applied journal rows with no entry of their own, though every applied request moves
    money except a win of nothing and a rollback with nothing to undo (a refusal turned
    into an applied bet, say, which a win would then pay on)."""
    where, params = "", {}
    if player_id:
        where, params = " AND t.player_id = :p AND t.currency = :c", {"p": player_id, "c": currency}
    rows = await conn.execute(
        text(
            "SELECT t.player_id, t.currency, t.request_id, t.kind, t.amount, t.reserved_delta,"
            " t.outcome, t.sequence FROM wallet.transactions t"
            " WHERE t.outcome = 'applied' AND (t.sequence IS NOT NULL OR t.amount <> 0"
            " OR t.reserved_delta <> 0 OR t.kind NOT IN ('WIN', 'BET_ROLLBACK'))"
            " AND NOT EXISTS (SELECT 1 FROM wallet.entries e WHERE e.player_id = t.player_id"
            " AND e.currency = t.currency AND e.sequence = t.sequence AND e.leg = 0"
            f" AND e.request_id = t.request_id){where}"
            " ORDER BY t.player_id, t.currency, t.request_id"
        ),
        params,
    )
    return [JournalRow(*row) for row in rows]


# --------------------------------------------------------------------------------------------
# Checkpoints (see checkpoints.py)

# Any constant: one checkpoint writer at a time across replicas sharing a directory.
_CHECKPOINT_LOCK = 0x77616C6C6574  # "wallet"


@dataclass(frozen=True)
class Head:
    """An account's last player-leg entry, as a checkpoint records it."""

    player_id: str
    currency: str
    sequence: int
    hash: bytes
    create_time: dt.datetime


async def lock_checkpoint_writer(conn: AsyncConnection) -> bool:
    """Take the checkpoint writer's lock for this transaction; False if another holds it."""
    return bool(
        (
            await conn.execute(
                text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": _CHECKPOINT_LOCK}
            )
        ).scalar_one()
    )


async def heads_since(conn: AsyncConnection, since: dt.datetime | None) -> AsyncIterator[Head]:
    """The head of every account with a player-leg entry created after `since` (all
    accounts when None), by account, from a server-side cursor. Uses the partial index on
    entries(create_time) WHERE leg = 0, so the cost follows the entries in the window."""
    where, params = "", {}
    if since is not None:
        where, params = " AND create_time > :since", {"since": since}
    result = await conn.stream(
        text(
            "SELECT DISTINCT ON (player_id, currency) player_id, currency, sequence, hash,"
            f" create_time FROM wallet.entries WHERE leg = 0{where}"
            " ORDER BY player_id, currency, sequence DESC"
        ),
        params,
        execution_options={"yield_per": 1000},
    )
    async for r in result:
        yield Head(r.player_id, r.currency, r.sequence, bytes(r.hash), r.create_time)


async def entry_hashes(
    conn: AsyncConnection, keys: Sequence[tuple[str, str, int]]
) -> list[bytes | None]:
    """The hash of the player-leg entry at each (player, currency, sequence), in order;
    None where there is no such entry. One round trip for the whole batch."""
    rows = await conn.execute(
        text(
            "SELECT k.ord, e.hash FROM unnest(CAST(:players AS text[]),"
            " CAST(:currencies AS char(3)[]), CAST(:sequences AS bigint[]))"
            " WITH ORDINALITY AS k(player_id, currency, sequence, ord)"
            " LEFT JOIN wallet.entries e ON e.player_id = k.player_id"
            " AND e.currency = k.currency AND e.sequence = k.sequence AND e.leg = 0"
            " ORDER BY k.ord"
        ),
        {
            "players": [k[0] for k in keys],
            "currencies": [k[1] for k in keys],
            "sequences": [k[2] for k in keys],
        },
    )
    return [None if h is None else bytes(h) for _, h in rows]
