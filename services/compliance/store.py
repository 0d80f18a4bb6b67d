"""SQL of the compliance service. Functions run inside the caller's transaction; the
transaction boundary belongs to `decisions`."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.compliance.rules import (
    Applicant,
    Exclusion,
    LimitChange,
    LimitKind,
    LimitState,
    Period,
    PlayerState,
    UsageTotals,
    Window,
)

_PLAYER = text(
    "SELECT player_id, birth_date, country, name_verified, address_verified,"
    " birth_date_verified, cdd_required, excluded_until, excluded_indefinitely, exclusion_kind"
    " FROM compliance.players WHERE player_id = :p"
)
_PLAYER_FOR_UPDATE = text(_PLAYER.text + " FOR UPDATE")


async def player(
    conn: AsyncConnection, player_id: str, *, lock: bool = False
) -> PlayerState | None:
    """The player's compliance state; with lock=True, FOR UPDATE: decisions about one player
    serialise, so two concurrent stakes cannot both fit under one limit."""
    row = (await conn.execute(_PLAYER_FOR_UPDATE if lock else _PLAYER, {"p": player_id})).first()
    return None if row is None else _player_state(row)


def _player_state(row: Any) -> PlayerState:
    """A players row as state: every selected column that is a PlayerState field."""
    columns = row._mapping
    return PlayerState(
        **{f.name: columns[f.name] for f in dataclasses.fields(PlayerState) if f.name in columns}
    )


async def enrol(conn: AsyncConnection, player_id: str, a: Applicant) -> bool:
    result = await conn.execute(
        text(
            "INSERT INTO compliance.players (player_id, given_name, family_name, birth_date,"
            " email, postcode, country) VALUES (:p, :g, :f, :b, :e, :pc, :c)"
            " ON CONFLICT (player_id) DO NOTHING RETURNING player_id"
        ),
        {
            "p": player_id,
            "g": a.given_name,
            "f": a.family_name,
            "b": a.birth_date,
            "e": a.email,
            "pc": a.postcode,
            "c": a.country,
        },
    )
    return result.first() is not None


async def excluded_lookalike(conn: AsyncConnection, a: Applicant, now: dt.datetime) -> bool:
    """Is someone with this name + birth date + postcode, or this email, excluded now?"""
    name, birth, postcode = a.duplicate_key()
    row = (
        await conn.execute(
            text(
                "SELECT 1 FROM compliance.players WHERE"
                " ((lower(given_name || ' ' || family_name) = :name AND birth_date = :b"
                "   AND lower(replace(postcode, ' ', '')) = :pc) OR lower(email) = :e)"
                " AND (excluded_indefinitely OR excluded_until > :now) LIMIT 1"
            ),
            {
                "name": name,
                "b": dt.date.fromisoformat(birth),
                "pc": postcode,
                "e": a.email.casefold(),
                "now": now,
            },
        )
    ).first()
    return row is not None


async def update_verification(
    conn: AsyncConnection,
    player_id: str,
    *,
    name: bool,
    address: bool,
    birth_date: bool,
    cdd_cleared: bool,
    now: dt.datetime,
) -> None:
    """Verification only ever adds: a flag set stays set; CDD clears only explicitly."""
    await conn.execute(
        text(
            "UPDATE compliance.players SET name_verified = name_verified OR :n,"
            " address_verified = address_verified OR :a,"
            " birth_date_verified = birth_date_verified OR :b,"
            " cdd_required = cdd_required AND NOT :cdd, update_time = :now,"
            " version = version + 1"
            " WHERE player_id = :p"
        ),
        {"n": name, "a": address, "b": birth_date, "cdd": cdd_cleared, "now": now, "p": player_id},
    )


async def require_cdd(conn: AsyncConnection, player_id: str, now: dt.datetime) -> None:
    await conn.execute(
        text(
            "UPDATE compliance.players SET cdd_required = true, update_time = :now,"
            " version = version + 1"
            " WHERE player_id = :p"
        ),
        {"p": player_id, "now": now},
    )


async def bump_version(conn: AsyncConnection, player_id: str, now: dt.datetime) -> None:
    """Every change to what a check reads (the player row, their limits) bumps the version,
    which invalidates cached copies of the state everywhere."""
    await conn.execute(
        text(
            "UPDATE compliance.players SET version = version + 1, update_time = :now"
            " WHERE player_id = :p"
        ),
        {"p": player_id, "now": now},
    )


def _limit(row: Any) -> LimitState:
    return LimitState(
        kind=LimitKind(row.kind),
        period=Period(row.period),
        amount_minor=row.amount_minor,
        pending_minor=row.pending_minor,
        pending_requested_at=row.pending_requested_at,
        update_time=row.update_time,
    )


async def limits(conn: AsyncConnection, player_id: str) -> list[LimitState]:
    rows = await conn.execute(
        text(
            "SELECT kind, period, amount_minor, pending_minor, pending_requested_at, update_time"
            " FROM compliance.limits WHERE player_id = :p ORDER BY kind, period"
        ),
        {"p": player_id},
    )
    return [_limit(r) for r in rows]


async def write_limit(
    conn: AsyncConnection,
    player_id: str,
    kind: LimitKind,
    period: Period,
    change: LimitChange,
    now: dt.datetime,
) -> LimitState:
    """The limit as it now stands, and the change in the history, with its request time
    and (for an increase, not yet) its effective time."""
    row = (
        await conn.execute(
            text(
                "INSERT INTO compliance.limits (player_id, kind, period, amount_minor,"
                " pending_minor, pending_requested_at, update_time)"
                " VALUES (:p, :k, :pe, :a, :pm, :pr, :now)"
                " ON CONFLICT (player_id, kind, period) DO UPDATE SET"
                " amount_minor = excluded.amount_minor, pending_minor = excluded.pending_minor,"
                " pending_requested_at = excluded.pending_requested_at,"
                " update_time = excluded.update_time"
                " RETURNING kind, period, amount_minor, pending_minor, pending_requested_at,"
                " update_time"
            ),
            {
                "p": player_id,
                "k": kind.value,
                "pe": period.value,
                "a": change.amount_minor,
                "pm": change.pending_minor,
                "pr": change.pending_requested_at,
                "now": now,
            },
        )
    ).one()
    await bump_version(conn, player_id, now)
    await conn.execute(
        text(
            "INSERT INTO compliance.limit_changes (player_id, kind, period, change,"
            " amount_minor, requested_at, effective_at) VALUES (:p, :k, :pe, :c, :a, :r, :e)"
        ),
        {
            "p": player_id,
            "k": kind.value,
            "pe": period.value,
            "c": change.change,
            "a": change.pending_minor or change.amount_minor,
            "r": change.pending_requested_at or now,
            "e": change.effective_at,
        },
    )
    return _limit(row)


async def usage_totals(
    conn: AsyncConnection, player_ids: list[str], now: dt.datetime
) -> dict[str, UsageTotals]:
    """Each player's counted usage summed per action over every limit period, in one query
    (the rows never leave the database)."""
    periods = list(Period)
    columns = ", ".join(
        f"sum(amount_minor) FILTER (WHERE at > :since_{i}) AS total_{i},"
        f" min(at) FILTER (WHERE at > :since_{i}) AS oldest_{i}"
        for i in range(len(periods))
    )
    params: dict[str, Any] = {f"since_{i}": now - p.length for i, p in enumerate(periods)}
    longest = max(p.length for p in periods)
    rows = await conn.execute(
        text(
            f"SELECT player_id, action, {columns} FROM compliance.usage"
            " WHERE player_id = ANY(:ids) AND at > :longest GROUP BY player_id, action"
        ),
        {**params, "ids": player_ids, "longest": now - longest},
    )
    windows: dict[str, dict[tuple[str, Period], Window]] = {p: {} for p in player_ids}
    for row in rows:
        for i, period in enumerate(periods):
            total = row._mapping[f"total_{i}"]
            if total is not None:
                windows[row.player_id][(row.action, period)] = Window(
                    int(total), row._mapping[f"oldest_{i}"]
                )
    return {p: UsageTotals(w) for p, w in windows.items()}


async def record_usage(
    conn: AsyncConnection,
    player_id: str,
    request_id: str,
    action: str,
    amount_minor: int,
    at: dt.datetime,
) -> bool:
    """Count an allowed deposit or stake once per request_id (a retried check is no new
    money)."""
    result = await conn.execute(
        text(
            "INSERT INTO compliance.usage (player_id, request_id, action, amount_minor, at)"
            " VALUES (:p, :r, :a, :m, :at) ON CONFLICT DO NOTHING RETURNING 1"
        ),
        {"p": player_id, "r": request_id, "a": action, "m": amount_minor, "at": at},
    )
    return result.first() is not None


async def write_exclusion(
    conn: AsyncConnection, player_id: str, exclusion: Exclusion, now: dt.datetime
) -> None:
    await conn.execute(
        text(
            "UPDATE compliance.players SET excluded_until = :until,"
            " excluded_indefinitely = :indefinite, exclusion_kind = :kind, update_time = :now,"
            " version = version + 1"
            " WHERE player_id = :p"
        ),
        {
            "until": exclusion.until,
            "indefinite": exclusion.until is None,
            "kind": exclusion.kind,
            "now": now,
            "p": player_id,
        },
    )
    await conn.execute(
        text(
            "INSERT INTO compliance.exclusions (player_id, kind, requested_at, until)"
            " VALUES (:p, :k, :now, :until)"
        ),
        {"p": player_id, "k": exclusion.kind, "now": now, "until": exclusion.until},
    )


# Batched reads and writes for action checks (services.compliance.checks).


async def lock_versions(conn: AsyncConnection, player_ids: list[str]) -> dict[str, int]:
    """Lock the players' rows, in id order, and read only their versions."""
    rows = await conn.execute(
        text(
            "SELECT player_id, version FROM compliance.players WHERE player_id = ANY(:ids)"
            " ORDER BY player_id FOR UPDATE"
        ),
        {"ids": player_ids},
    )
    return {r.player_id: r.version for r in rows}


async def players(
    conn: AsyncConnection, player_ids: list[str]
) -> dict[str, tuple[int, PlayerState]]:
    """The players' states with their versions (inside the caller's lock)."""
    rows = await conn.execute(
        text(
            _PLAYER.text.replace("player_id = :p", "player_id = ANY(:ids)").replace(
                "SELECT player_id,", "SELECT version, player_id,"
            )
        ),
        {"ids": player_ids},
    )
    return {r.player_id: (r.version, _player_state(r)) for r in rows}


async def limits_of(conn: AsyncConnection, player_ids: list[str]) -> dict[str, list[LimitState]]:
    rows = await conn.execute(
        text(
            "SELECT player_id, kind, period, amount_minor, pending_minor, pending_requested_at,"
            " update_time FROM compliance.limits WHERE player_id = ANY(:ids)"
            " ORDER BY player_id, kind, period"
        ),
        {"ids": player_ids},
    )
    found: dict[str, list[LimitState]] = {}
    for r in rows:
        found.setdefault(r.player_id, []).append(_limit(r))
    return found


async def record_usages(
    conn: AsyncConnection, entries: list[tuple[str, str, str, int]], at: dt.datetime
) -> None:
    """Count allowed deposits and stakes, (player_id, request_id, action, amount_minor) each,
    once per request_id (a retried check is no new money)."""
    await conn.execute(
        text(
            "INSERT INTO compliance.usage (player_id, request_id, action, amount_minor, at)"
            " SELECT p, r, a, m, :at FROM unnest(CAST(:p AS text[]), CAST(:r AS text[]),"
            " CAST(:a AS text[]), CAST(:m AS bigint[])) AS u(p, r, a, m)"
            " ON CONFLICT DO NOTHING"
        ),
        {
            "p": [e[0] for e in entries],
            "r": [e[1] for e in entries],
            "a": [e[2] for e in entries],
            "m": [e[3] for e in entries],
            "at": at,
        },
    )


# Reality checks (services.compliance.reality).


async def set_reality_check(
    conn: AsyncConnection, player_id: str, minutes: int, now: dt.datetime
) -> None:
    await conn.execute(
        text(
            "UPDATE compliance.players SET reality_check_minutes = :m, update_time = :now,"
            " version = version + 1 WHERE player_id = :p"
        ),
        {"m": minutes, "now": now, "p": player_id},
    )


async def session_totals(
    conn: AsyncConnection, player_id: str, since: dt.datetime
) -> dict[str, int]:
    """The player's counted stakes, rolled-back stakes and wins since a session started,
    summed per action in the database."""
    rows = await conn.execute(
        text(
            "SELECT action, sum(amount_minor) AS total FROM compliance.usage"
            " WHERE player_id = :p AND at >= :since AND action IN ('BET', 'WIN', 'ROLLBACK')"
            " GROUP BY action"
        ),
        {"p": player_id, "since": since},
    )
    return {r.action: int(r.total) for r in rows}
