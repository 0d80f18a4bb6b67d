"""SQL of the games schema: the round journal (compare-and-set steps, leases for recovery),
the monthly-partitioned round archive with its hash chain, and round history pages."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.games.rounds import RoundRecord, State
from services.runtime import outbox, verdict_log

SCHEMA = "games"
ARCHIVED_ACTION = "ROUND_ARCHIVED"
ARCHIVE_FORMAT = "archive/v1"

_COLUMNS = (
    "player_id, round_id, request_id, request_hash, session_id, game_id, math_version,"
    " currency, country, bet, stake_minor, bet_verdict_id, client_seed, state, rng_round_id,"
    " rng_generator, rng_sampling, fair_commitment, fair_nonce, bet_transaction_id,"
    " settle_transaction_id, draws, outcome, payout_minor, balance_after_minor, void_reason,"
    " open_time, close_time"
)


def _record(row: Any) -> RoundRecord:
    (
        player_id, round_id, request_id, request_hash, session_id, game_id, math_version,
        currency, country, bet, stake, verdict_id, client_seed, state, rng_round_id,
        rng_generator, rng_sampling, fair_commitment, fair_nonce, bet_tx, settle_tx, draws,
        outcome, payout, balance_after, void_reason, open_time, close_time,
    ) = row  # fmt: skip
    return RoundRecord(
        player_id=player_id,
        round_id=round_id,
        request_id=request_id,
        request_hash=bytes(request_hash),
        session_id=session_id,
        game_id=game_id,
        math_version=math_version,
        currency=currency,
        country=country,
        bet=bet,
        stake_minor=stake,
        bet_verdict_id=verdict_id,
        client_seed=client_seed,
        state=State(state),
        rng_round_id=rng_round_id,
        rng_generator=rng_generator,
        rng_sampling=rng_sampling,
        fair_commitment=fair_commitment,
        fair_nonce=fair_nonce,
        bet_transaction_id=bet_tx,
        settle_transaction_id=settle_tx,
        draws=tuple(draws) if draws is not None else None,
        outcome=outcome,
        payout_minor=payout,
        balance_after_minor=balance_after,
        void_reason=void_reason,
        open_time=open_time,
        close_time=close_time,
    )


# ------------------------------------------------------------------------------ journal


async def find(conn: AsyncConnection, player_id: str, request_id: str) -> RoundRecord | None:
    row = (
        await conn.execute(
            text(
                f"SELECT {_COLUMNS} FROM {SCHEMA}.rounds WHERE player_id = :p AND request_id = :r"
            ),
            {"p": player_id, "r": request_id},
        )
    ).one_or_none()
    return _record(row) if row is not None else None


async def get(conn: AsyncConnection, player_id: str, round_id: uuid.UUID) -> RoundRecord | None:
    row = (
        await conn.execute(
            text(f"SELECT {_COLUMNS} FROM {SCHEMA}.rounds WHERE player_id = :p AND round_id = :id"),
            {"p": player_id, "id": round_id},
        )
    ).one_or_none()
    return _record(row) if row is not None else None


async def insert_open(conn: AsyncConnection, r: RoundRecord, lease_seconds: float) -> bool:
    """The round's first step. False when a concurrent call with the same request_id won."""
    row = (
        await conn.execute(
            text(
                f"INSERT INTO {SCHEMA}.rounds (player_id, round_id, request_id, request_hash,"
                " session_id, game_id, math_version, currency, country, bet, stake_minor,"
                " bet_verdict_id, client_seed, open_time, lease_until)"
                " VALUES (:p, :id, :rid, :hash, :sid, :game, :mv, :cur, :country,"
                " CAST(:bet AS jsonb), :stake, :verdict, :cs, :open,"
                " now() + make_interval(secs => :lease))"
                " ON CONFLICT (player_id, request_id) DO NOTHING RETURNING 1"
            ),
            {
                "p": r.player_id,
                "id": r.round_id,
                "rid": r.request_id,
                "hash": r.request_hash,
                "sid": r.session_id,
                "game": r.game_id,
                "mv": r.math_version,
                "cur": r.currency,
                "country": r.country,
                "bet": json.dumps(r.bet),
                "stake": r.stake_minor,
                "verdict": r.bet_verdict_id,
                "cs": r.client_seed,
                "open": r.open_time,
                "lease": lease_seconds,
            },
        )
    ).one_or_none()
    return row is not None


# Columns a step may set, and how each is bound.
_STEP_COLUMNS = {
    "rng_round_id": ":rng_round_id",
    "rng_generator": ":rng_generator",
    "rng_sampling": ":rng_sampling",
    "fair_commitment": ":fair_commitment",
    "fair_nonce": ":fair_nonce",
    "bet_transaction_id": ":bet_transaction_id",
    "settle_transaction_id": ":settle_transaction_id",
    "draws": "CAST(:draws AS bigint[])",
    "outcome": "CAST(:outcome AS jsonb)",
    "payout_minor": ":payout_minor",
    "balance_after_minor": ":balance_after_minor",
    "void_reason": ":void_reason",
}


async def step(
    conn: AsyncConnection,
    r: RoundRecord,
    new_state: State,
    lease_seconds: float,
    **changes: Any,
) -> bool:
    """Move the round from the state `r` was read in to `new_state`, recording `changes`.
    Compare-and-set: False (nothing written) when another worker moved it first."""
    unknown = set(changes) - set(_STEP_COLUMNS)
    if unknown:
        raise ValueError(f"not step columns: {sorted(unknown)}")
    assignments = "".join(f", {name} = {_STEP_COLUMNS[name]}" for name in changes)
    params = dict(changes)
    if "outcome" in params:
        params["outcome"] = json.dumps(params["outcome"])
    if "draws" in params:
        params["draws"] = list(params["draws"])
    result = await conn.execute(
        text(
            f"UPDATE {SCHEMA}.rounds SET state = :new, update_time = now(),"
            f" lease_until = now() + make_interval(secs => :lease){assignments}"
            " WHERE player_id = :p AND round_id = :id AND state = :old"
        ),
        {
            **params,
            "new": new_state.value,
            "old": r.state.value,
            "lease": lease_seconds,
            "p": r.player_id,
            "id": r.round_id,
        },
    )
    return result.rowcount == 1  # type: ignore[attr-defined,no-any-return]


async def claim_unfinished(
    conn: AsyncConnection, limit: int, lease_seconds: float
) -> list[RoundRecord]:
    """Rounds whose lease ran out part way (their call died or gave up), leased to the
    caller. SKIP LOCKED: replicas' workers share the backlog without waiting on each other."""
    rows = (
        await conn.execute(
            text(
                f"UPDATE {SCHEMA}.rounds r"
                " SET lease_until = now() + make_interval(secs => :lease),"
                " recovery_attempts = r.recovery_attempts + 1"
                f" FROM (SELECT player_id, round_id FROM {SCHEMA}.rounds"
                "       WHERE state NOT IN ('COMPLETED', 'VOIDED') AND lease_until < now()"
                "       ORDER BY lease_until LIMIT :limit FOR UPDATE SKIP LOCKED) due"
                " WHERE r.player_id = due.player_id AND r.round_id = due.round_id"
                f" RETURNING {', '.join('r.' + c.strip() for c in _COLUMNS.split(','))}"
            ),
            {"lease": lease_seconds, "limit": limit},
        )
    ).all()
    return [_record(row) for row in rows]


# ------------------------------------------------------------------------------ archive


def partition_months(today: dt.date, months_back: int, months_ahead: int) -> list[dt.date]:
    """First days of the months from `months_back` before `today`'s to `months_ahead` after."""
    index = today.year * 12 + today.month - 1
    return [
        dt.date(i // 12, i % 12 + 1, 1)
        for i in range(index - months_back, index + months_ahead + 1)
    ]


async def ensure_partitions(conn: AsyncConnection, months: Sequence[dt.date]) -> list[str]:
    names = []
    for month in months:
        names.append(
            (
                await conn.execute(
                    text(f"SELECT {SCHEMA}.ensure_archive_partition(:m)"), {"m": month}
                )
            ).scalar_one()
        )
    return names


async def archive(
    conn: AsyncConnection,
    r: RoundRecord,
    final: RoundRecord,
    record: dict[str, Any],
    record_hash: bytes,
    events: Sequence[outbox.Event],
) -> bool:
    """In the caller's transaction: close the journal row (compare-and-set from `r`'s state),
    append the record to the archive and its hash to the chain, enqueue the round's events.
    False (nothing written) when another worker archived it first."""
    assert final.close_time is not None and final.state in (State.COMPLETED, State.VOIDED)
    closed = await conn.execute(
        text(
            f"UPDATE {SCHEMA}.rounds SET state = :new, update_time = now(),"
            " close_time = :close, settle_transaction_id = :settle, void_reason = :void,"
            " bet_transaction_id = :bet,"
            " balance_after_minor = :balance, rng_round_id = :rng_round_id,"
            " rng_generator = :rng_generator, rng_sampling = :rng_sampling,"
            " fair_commitment = :fair_commitment, fair_nonce = :fair_nonce"
            " WHERE player_id = :p AND round_id = :id AND state = :old"
        ),
        {
            "rng_round_id": final.rng_round_id,
            "rng_generator": final.rng_generator,
            "rng_sampling": final.rng_sampling,
            "fair_commitment": final.fair_commitment,
            "fair_nonce": final.fair_nonce,
            "new": final.state.value,
            "close": final.close_time,
            "settle": final.settle_transaction_id,
            "bet": final.bet_transaction_id,
            "void": final.void_reason,
            "balance": final.balance_after_minor,
            "p": r.player_id,
            "id": r.round_id,
            "old": r.state.value,
        },
    )
    if closed.rowcount != 1:  # type: ignore[attr-defined]
        return False
    await conn.execute(
        text(
            f"INSERT INTO {SCHEMA}.round_archive"
            " (player_id, close_time, round_id, game_id, state, record, record_hash)"
            " VALUES (:p, :close, :id, :game, :state, CAST(:record AS jsonb), :hash)"
        ),
        {
            "p": final.player_id,
            "close": final.close_time,
            "id": final.round_id,
            "game": final.game_id,
            "state": final.state.value,
            "record": json.dumps(record),
            "hash": record_hash,
        },
    )
    await verdict_log.append(
        conn,
        SCHEMA,
        verdict_log.Verdict(
            verdict_id=archive_chain_id(final.round_id),
            player_id=final.player_id,
            action=ARCHIVED_ACTION,
            decision="RECORDED",
            reasons=[],
            inputs={
                "round_id": str(final.round_id),
                "close_time": record["close_time"],
                "record_hash": record_hash.hex(),
            },
            rule_version=final.math_version,
            config_version=ARCHIVE_FORMAT,
            caller="games",
            create_time=final.close_time,
        ),
    )
    await outbox.enqueue(conn, SCHEMA, events)
    return True


def archive_chain_id(round_id: uuid.UUID) -> uuid.UUID:
    """The chain record of a round's archiving: one per round, found again from its id."""
    return uuid.uuid5(round_id, "archived")


async def archived(
    conn: AsyncConnection, player_id: str, round_id: uuid.UUID, close_time: dt.datetime
) -> tuple[dict[str, Any], bytes] | None:
    row = (
        await conn.execute(
            text(
                f"SELECT record, record_hash FROM {SCHEMA}.round_archive"
                " WHERE player_id = :p AND close_time = :close AND round_id = :id"
            ),
            {"p": player_id, "close": close_time, "id": round_id},
        )
    ).one_or_none()
    return (row[0], bytes(row[1])) if row is not None else None


async def history(
    conn: AsyncConnection,
    player_id: str,
    *,
    game_id: str | None,
    start: dt.datetime | None,
    end: dt.datetime | None,
    after: tuple[dt.datetime, uuid.UUID] | None,
    limit: int,
) -> list[tuple[dict[str, Any], bytes]]:
    """Archived rounds of a player, newest first (keyset on close_time, round_id): each page
    is an index range scan of the partitions the time range touches."""
    where = ["player_id = :p"]
    params: dict[str, Any] = {"p": player_id, "limit": limit}
    if game_id:
        where.append("game_id = :game")
        params["game"] = game_id
    if start is not None:
        where.append("close_time >= :start")
        params["start"] = start
    if end is not None:
        where.append("close_time < :end")
        params["end"] = end
    if after is not None:
        where.append("(close_time, round_id) < (:after_time, :after_id)")
        params["after_time"], params["after_id"] = after
    rows = (
        await conn.execute(
            text(
                f"SELECT record, record_hash FROM {SCHEMA}.round_archive"
                f" WHERE {' AND '.join(where)}"
                " ORDER BY close_time DESC, round_id DESC LIMIT :limit"
            ),
            params,
        )
    ).all()
    return [(row[0], bytes(row[1])) for row in rows]


async def archive_rows(
    conn: AsyncConnection, start: dt.datetime, end: dt.datetime
) -> list[tuple[uuid.UUID, dict[str, Any], bytes, str, dt.datetime, str]]:
    """Every archived round closed in [start, end): id, record, hash and the indexed columns
    the record must agree with (player, close time, state)."""
    rows = (
        await conn.execute(
            text(
                "SELECT round_id, record, record_hash, player_id, close_time, state"
                f" FROM {SCHEMA}.round_archive"
                " WHERE close_time >= :start AND close_time < :end ORDER BY close_time"
            ),
            {"start": start, "end": end},
        )
    ).all()
    return [(r[0], r[1], bytes(r[2]), r[3], r[4], r[5]) for r in rows]


async def chain_records(
    conn: AsyncConnection, start: dt.datetime, end: dt.datetime
) -> dict[uuid.UUID, tuple[str, dict[str, Any]]]:
    """The chain's archiving records of rounds closed in [start, end), by round id."""
    rows = (
        await conn.execute(
            text(
                f"SELECT player_id, inputs FROM {SCHEMA}.verdicts"
                " WHERE action = :action AND create_time >= :start AND create_time < :end"
            ),
            {"action": ARCHIVED_ACTION, "start": start, "end": end},
        )
    ).all()
    return {uuid.UUID(r[1]["round_id"]): (r[0], r[1]) for r in rows}
