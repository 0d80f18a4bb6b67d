"""SQL of the compliance service. Functions run inside the caller's transaction; the
transaction boundary belongs to `decisions`."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from services.compliance.aml import Activity, AmlAlert
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
    cdd_linked_since,
)
from services.runtime import db, verdict_log

# The columns of a player's compliance state (each a PlayerState field).
_STATE_COLUMNS = (
    "player_id, birth_date, country, name_verified, address_verified,"
    " birth_date_verified, cdd_required, excluded_until, excluded_indefinitely, exclusion_kind,"
    " play_hold, reality_check_minutes, affordability_assessed_at, cdd_cleared_at"
)
_PLAYER = text(f"SELECT {_STATE_COLUMNS} FROM compliance.players WHERE player_id = :p")
_PLAYER_FOR_UPDATE = text(_PLAYER.text + " FOR UPDATE")
_PLAYERS_WITH_VERSIONS = text(
    f"SELECT version, {_STATE_COLUMNS} FROM compliance.players WHERE player_id = ANY(:ids)"
)


async def player(
    conn: AsyncConnection, player_id: str, *, lock: bool = False
) -> PlayerState | None:
    """The player's compliance state; with lock=True, FOR UPDATE: decisions about one player
    serialise, so two concurrent stakes cannot both fit under one limit."""
    row = (await conn.execute(_PLAYER_FOR_UPDATE if lock else _PLAYER, {"p": player_id})).first()
    return None if row is None else _player_state(row)


def _columns(row: Any) -> Mapping[str, Any]:
    """A row's columns by name: SQLAlchemy's rows and a pipeline's named tuples alike."""
    return row._mapping if hasattr(row, "_mapping") else row._asdict()  # type: ignore[no-any-return]


def _player_state(row: Any) -> PlayerState:
    """A players row as state: every selected column that is a PlayerState field."""
    columns = _columns(row)
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
    affordability_assessed: bool = False,
) -> None:
    """Verification only ever adds: a flag set stays set; CDD clears only explicitly, and
    its clearance is dated now (the CDD threshold links activity after it only). An
    affordability assessment is dated now (it is valid for a configured period)."""
    await conn.execute(
        text(
            "UPDATE compliance.players SET name_verified = name_verified OR :n,"
            " address_verified = address_verified OR :a,"
            " birth_date_verified = birth_date_verified OR :b,"
            " cdd_required = cdd_required AND NOT :cdd, update_time = :now,"
            " cdd_cleared_at = CASE WHEN :cdd THEN :now ELSE cdd_cleared_at END,"
            " affordability_assessed_at = CASE WHEN :afford THEN :now"
            "   ELSE affordability_assessed_at END,"
            " version = version + 1"
            " WHERE player_id = :p"
        ),
        {
            "n": name,
            "a": address,
            "b": birth_date,
            "cdd": cdd_cleared,
            "afford": affordability_assessed,
            "now": now,
            "p": player_id,
        },
    )


_REQUIRE_CDD = text(
    "UPDATE compliance.players SET cdd_required = true, update_time = :now,"
    " version = version + 1 WHERE player_id = ANY(:ids)"
)


async def require_cdd(conn: AsyncConnection, player_id: str, now: dt.datetime) -> None:
    await conn.execute(_REQUIRE_CDD, {"ids": [player_id], "now": now})


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


_PERIODS = list(Period)
_USAGE_TOTALS = text(
    "SELECT u.player_id, u.action, "
    + ", ".join(
        f"sum(u.amount_minor) FILTER (WHERE u.at > :since_{i}) AS total_{i},"
        f" min(u.at) FILTER (WHERE u.at > :since_{i}) AS oldest_{i}"
        for i in range(len(_PERIODS))
    )
    + ", sum(u.amount_minor) FILTER (WHERE u.at > s.linked_since) AS cdd_linked"
    " FROM compliance.usage u JOIN unnest(CAST(:ids AS text[]),"
    " CAST(:linked_since AS timestamptz[])) AS s(player_id, linked_since)"
    " ON s.player_id = u.player_id"
    " WHERE u.player_id = ANY(:ids) AND u.at > :longest"
    " GROUP BY u.player_id, u.action"
)


async def usage_totals(
    pipeline: db.Pipeline,
    player_ids: list[str],
    now: dt.datetime,
    cdd_cleared: dict[str, dt.datetime | None] | None = None,
) -> db.Queued[dict[str, UsageTotals]]:
    """Each player's counted usage summed per action over every limit period, and their
    deposits linked for the CDD threshold (since `cdd_cleared[player]`, their last CDD
    clearance, within the day), in one query (the rows never leave the database)."""
    cleared = cdd_cleared or {}
    params: dict[str, Any] = {f"since_{i}": now - p.length for i, p in enumerate(_PERIODS)}
    longest = max(p.length for p in _PERIODS)
    linked_since = [cdd_linked_since(now, cleared.get(p)) for p in player_ids]

    def parse(rows: list[Any]) -> dict[str, UsageTotals]:
        windows: dict[str, dict[tuple[str, Period], Window]] = {p: {} for p in player_ids}
        linked: dict[str, int] = {}
        for row in rows:
            columns = _columns(row)
            for i, period in enumerate(_PERIODS):
                total = columns[f"total_{i}"]
                if total is not None:
                    windows[row.player_id][(row.action, period)] = Window(
                        int(total), columns[f"oldest_{i}"]
                    )
            if row.action == "DEPOSIT" and row.cdd_linked is not None:
                linked[row.player_id] = int(row.cdd_linked)
        return {p: UsageTotals(w, linked.get(p, 0), cleared.get(p)) for p, w in windows.items()}

    return await pipeline.queue(
        _USAGE_TOTALS,
        {**params, "ids": player_ids, "linked_since": linked_since, "longest": now - longest},
        parse,
    )


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


# The players' rows locked in id order with their versions, and in the same round trip the
# checks already decided under the batch's (player_id, request_id) keys.
_LOCK_VERSIONS = text(
    "WITH locked AS MATERIALIZED (SELECT player_id, version FROM compliance.players"
    " WHERE player_id = ANY(:ids) ORDER BY player_id FOR UPDATE)"
    " SELECT player_id, version, NULL AS request_id, NULL AS action,"
    " CAST(NULL AS bigint) AS amount_minor, NULL AS currency, CAST(NULL AS uuid) AS verdict_id,"
    " NULL AS request_country, CAST(NULL AS boolean) AS slots, NULL AS caller,"
    " CAST(NULL AS timestamptz) AS at FROM locked"
    " UNION ALL SELECT c.player_id, NULL, c.request_id, c.action, c.amount_minor, c.currency,"
    " c.verdict_id, c.request_country, c.slots, c.caller, c.at"
    " FROM compliance.check_requests c JOIN unnest(CAST(:key_players AS text[]),"
    " CAST(:key_requests AS text[])) AS k(player_id, request_id)"
    " ON c.player_id = k.player_id AND c.request_id = k.request_id"
)
# A check's request and, for an allowed deposit or stake, its counted usage: written by the
# statement appending the checks' verdicts (services.runtime.verdict_log.Writes), so a batch
# of checks is recorded in one round trip. The request is inserted without ON CONFLICT: a
# concurrent check with the same key that committed after the batch's lookup fails this batch
# (unique violation), which is then decided again and answered from that check's record.
# Rows travel as JSON documents (db.json_rows).
_CHECK_COLUMNS = (
    ("player_id", "text"),
    ("request_id", "text"),
    ("action", "text"),
    ("amount_minor", "bigint"),
    ("currency", "text"),
    ("verdict_id", "uuid"),
    ("request_country", "text"),
    ("slots", "boolean"),
    ("caller", "text"),
)
_USAGE_COLUMNS = (
    ("player_id", "text"),
    ("request_id", "text"),
    ("action", "text"),
    ("amount_minor", "bigint"),
)
_RECORD_CHECKS = (
    f"requests AS (INSERT INTO compliance.check_requests ({db.column_names(_CHECK_COLUMNS)}, at)"
    f" SELECT {db.json_row_values(_CHECK_COLUMNS)}, CAST(:checked_at AS timestamptz)"
    f" FROM {db.json_rows('checks', _CHECK_COLUMNS)}),"
    f" counted AS (INSERT INTO compliance.usage ({db.column_names(_USAGE_COLUMNS)}, at)"
    f" SELECT {db.json_row_values(_USAGE_COLUMNS)}, CAST(:checked_at AS timestamptz)"
    f" FROM {db.json_rows('usages', _USAGE_COLUMNS)} ON CONFLICT DO NOTHING)"
)
CHECK_REQUESTS_KEY = "check_requests_pkey"


@dataclass(frozen=True)
class CheckRecord:
    """A decided check's request, by (player_id, request_id): what it asked, its verdict."""

    action: str
    amount_minor: int
    currency: str
    verdict_id: uuid.UUID
    # Where, for what and by whom it was asked (None in records from before they were kept).
    request_country: str | None = None
    slots: bool | None = None
    caller: str | None = None
    # When it was decided (None for a record about to be written).
    at: dt.datetime | None = None


async def lock_versions(
    pipeline: db.Pipeline, player_ids: list[str], keys: list[tuple[str, str]]
) -> db.Queued[tuple[dict[str, int], dict[tuple[str, str], CheckRecord]]]:
    """Lock the players' rows, in id order, and read only their versions; with the checks
    recorded under `keys` (player_id, request_id), whether those players exist or not."""

    def parse(rows: list[Any]) -> tuple[dict[str, int], dict[tuple[str, str], CheckRecord]]:
        versions: dict[str, int] = {}
        records: dict[tuple[str, str], CheckRecord] = {}
        for r in rows:
            if r.request_id is None:
                versions[r.player_id] = r.version
            else:
                records[(r.player_id, r.request_id)] = CheckRecord(
                    r.action,
                    r.amount_minor,
                    r.currency,
                    r.verdict_id,
                    r.request_country,
                    r.slots,
                    r.caller,
                    r.at,
                )
        return versions, records

    return await pipeline.queue(
        _LOCK_VERSIONS,
        {
            "ids": player_ids,
            "key_players": [k[0] for k in keys],
            "key_requests": [k[1] for k in keys],
        },
        parse,
    )


async def players(
    pipeline: db.Pipeline, player_ids: list[str]
) -> db.Queued[dict[str, tuple[int, PlayerState]]]:
    """The players' states with their versions (inside the caller's lock)."""
    return await pipeline.queue(
        _PLAYERS_WITH_VERSIONS,
        {"ids": player_ids},
        lambda rows: {r.player_id: (r.version, _player_state(r)) for r in rows},
    )


_LIMITS_OF = text(
    "SELECT player_id, kind, period, amount_minor, pending_minor, pending_requested_at,"
    " update_time FROM compliance.limits WHERE player_id = ANY(:ids)"
    " ORDER BY player_id, kind, period"
)


async def limits_of(
    pipeline: db.Pipeline, player_ids: list[str]
) -> db.Queued[dict[str, list[LimitState]]]:
    def parse(rows: list[Any]) -> dict[str, list[LimitState]]:
        found: dict[str, list[LimitState]] = {}
        for r in rows:
            found.setdefault(r.player_id, []).append(_limit(r))
        return found

    return await pipeline.queue(_LIMITS_OF, {"ids": player_ids}, parse)


async def queue_require_cdd(pipeline: db.Pipeline, player_ids: list[str], now: dt.datetime) -> None:
    """`require_cdd` for several players, queued in a pipelined transaction."""
    await pipeline.queue(_REQUIRE_CDD, {"ids": player_ids, "now": now}, lambda rows: None)


def record_checks(
    requests: list[tuple[str, str, CheckRecord]],
    usages: list[tuple[str, str, str, int]],
    at: dt.datetime,
) -> verdict_log.Writes:
    """The rows recording decided checks, (player_id, request_id, record) each (a duplicate
    key raises IntegrityError on CHECK_REQUESTS_KEY), and counting allowed deposits and
    stakes, (player_id, request_id, action, amount_minor) each, once per request_id: for the
    statement appending their verdicts."""
    checks = [
        {
            "player_id": player_id,
            "request_id": request_id,
            "action": record.action,
            "amount_minor": record.amount_minor,
            "currency": record.currency,
            "verdict_id": str(record.verdict_id),
            "request_country": record.request_country,
            "slots": record.slots,
            "caller": record.caller,
        }
        for player_id, request_id, record in requests
    ]
    counted = [
        {"player_id": p, "request_id": r, "action": a, "amount_minor": m} for p, r, a, m in usages
    ]
    return verdict_log.Writes(
        _RECORD_CHECKS,
        {"checks": json.dumps(checks), "usages": json.dumps(counted), "checked_at": at},
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


# AML monitoring (services.compliance.monitoring, services.compliance.cases).


async def mark_event_processed(conn: AsyncConnection, event_id: uuid.UUID) -> bool:
    """False when the event was processed before (a redelivery): then nothing else is done.
    A concurrent first delivery waits here on the key until the other commits."""
    result = await conn.execute(
        text(
            "INSERT INTO compliance.processed_events (event_id) VALUES (:e)"
            " ON CONFLICT (event_id) DO NOTHING RETURNING 1"
        ),
        {"e": event_id},
    )
    return result.first() is not None


async def record_activity(
    conn: AsyncConnection,
    player_id: str,
    activity: Activity,
    *,
    amount_minor: int,
    currency: str,
) -> None:
    await conn.execute(
        text(
            "INSERT INTO compliance.activity (player_id, event_id, kind, amount_minor,"
            " currency, amount_eur_minor, instrument, withdrawal_id, at)"
            " VALUES (:p, :e, :k, :m, :c, :eur, :i, :w, :at) ON CONFLICT DO NOTHING"
        ),
        {
            "p": player_id,
            "e": uuid.UUID(activity.event_id),
            "k": activity.kind,
            "m": amount_minor,
            "c": currency,
            "eur": activity.amount_eur_minor,
            "i": activity.instrument,
            "w": activity.withdrawal_id,
            "at": activity.at,
        },
    )


async def activity_between(
    conn: AsyncConnection, player_id: str, since: dt.datetime, until: dt.datetime
) -> list[Activity]:
    """The player's recorded activity in (since, until] of event time: what a rule reads
    around an event, after it included (events arrive out of order)."""
    rows = await conn.execute(
        text(
            "SELECT event_id, kind, amount_eur_minor, at, instrument, withdrawal_id"
            " FROM compliance.activity WHERE player_id = :p AND at > :since AND at <= :until"
            " ORDER BY at"
        ),
        {"p": player_id, "since": since, "until": until},
    )
    return [
        Activity(str(r.event_id), r.kind, r.amount_eur_minor, r.at, r.instrument, r.withdrawal_id)
        for r in rows
    ]


async def account_opened(conn: AsyncConnection, player_id: str) -> dt.datetime | None:
    row = (
        await conn.execute(
            text("SELECT create_time FROM compliance.players WHERE player_id = :p"),
            {"p": player_id},
        )
    ).first()
    return None if row is None else row.create_time


async def set_play_hold(
    conn: AsyncConnection, player_id: str, hold: bool, now: dt.datetime
) -> None:
    await conn.execute(
        text(
            "UPDATE compliance.players SET play_hold = :h, update_time = :now,"
            " version = version + 1 WHERE player_id = :p"
        ),
        {"p": player_id, "h": hold, "now": now},
    )


_ALERT_COLUMNS = (
    "player_id, alert_id, rule, status, action, evidence, opened_at, updated_at, closed_at,"
    " closed_by, resolution"
)


def _alert(row: Any) -> AmlAlert:
    return AmlAlert(
        player_id=row.player_id,
        alert_id=row.alert_id,
        rule=row.rule,
        status=row.status,
        action=row.action,
        evidence=row.evidence,
        opened_at=row.opened_at,
        updated_at=row.updated_at,
        closed_at=row.closed_at,
        closed_by=row.closed_by,
        resolution=row.resolution,
    )


async def raise_alert(
    conn: AsyncConnection,
    player_id: str,
    rule: str,
    action: str,
    evidence: dict[str, Any],
    now: dt.datetime,
) -> tuple[AmlAlert, bool]:
    """The player's OPEN alert for `rule` with `evidence` added, or a new one (True). Runs
    under the player's row lock, so two findings cannot both open one."""
    updated = (
        await conn.execute(
            text(
                "UPDATE compliance.aml_alerts SET updated_at = :now,"
                " evidence = jsonb_set(evidence, '{findings}',"
                "   (evidence -> 'findings') || jsonb_build_array(CAST(:ev AS jsonb)))"
                f" WHERE player_id = :p AND rule = :r AND status = 'OPEN'"
                f" RETURNING {_ALERT_COLUMNS}"
            ),
            {"p": player_id, "r": rule, "ev": json.dumps(evidence), "now": now},
        )
    ).first()
    if updated is not None:
        return _alert(updated), False
    created = (
        await conn.execute(
            text(
                f"INSERT INTO compliance.aml_alerts ({_ALERT_COLUMNS})"
                " VALUES (:p, :id, :r, 'OPEN', :a, CAST(:ev AS jsonb), :now, :now, NULL, NULL,"
                f" NULL) RETURNING {_ALERT_COLUMNS}"
            ),
            {
                "p": player_id,
                "id": uuid.uuid4(),
                "r": rule,
                "a": action,
                "ev": json.dumps({"findings": [evidence]}),
                "now": now,
            },
        )
    ).one()
    return _alert(created), True


async def alert(
    conn: AsyncConnection, player_id: str, alert_id: uuid.UUID, *, lock: bool = False
) -> AmlAlert | None:
    row = (
        await conn.execute(
            text(
                f"SELECT {_ALERT_COLUMNS} FROM compliance.aml_alerts"
                " WHERE player_id = :p AND alert_id = :id" + (" FOR UPDATE" if lock else "")
            ),
            {"p": player_id, "id": alert_id},
        )
    ).first()
    return None if row is None else _alert(row)


async def close_alert(
    conn: AsyncConnection,
    player_id: str,
    alert_id: uuid.UUID,
    *,
    closed_by: str,
    resolution: str,
    now: dt.datetime,
) -> AmlAlert:
    row = (
        await conn.execute(
            text(
                "UPDATE compliance.aml_alerts SET status = 'CLOSED', closed_at = :now,"
                " updated_at = :now, closed_by = :by, resolution = :res"
                f" WHERE player_id = :p AND alert_id = :id RETURNING {_ALERT_COLUMNS}"
            ),
            {"p": player_id, "id": alert_id, "by": closed_by, "res": resolution, "now": now},
        )
    ).one()
    return _alert(row)


async def open_hold_alerts(conn: AsyncConnection, player_id: str) -> int:
    return int(
        (
            await conn.execute(
                text(
                    "SELECT count(*) FROM compliance.aml_alerts WHERE player_id = :p"
                    " AND status = 'OPEN' AND action = 'HOLD_PLAY'"
                ),
                {"p": player_id},
            )
        ).scalar_one()
    )


async def list_alerts(
    conn: AsyncConnection,
    *,
    player_id: str | None,
    status: str | None,
    before: tuple[dt.datetime, uuid.UUID] | None,
    limit: int,
) -> list[AmlAlert]:
    """Newest first, keyset-paged on (opened_at, alert_id)."""
    where = ["true"]
    params: dict[str, Any] = {"limit": limit}
    if player_id:
        where.append("player_id = :p")
        params["p"] = player_id
    if status:
        where.append("status = :s")
        params["s"] = status
    if before:
        where.append("(opened_at, alert_id) < (:b_time, :b_id)")
        params["b_time"], params["b_id"] = before
    rows = await conn.execute(
        text(
            f"SELECT {_ALERT_COLUMNS} FROM compliance.aml_alerts WHERE {' AND '.join(where)}"
            " ORDER BY opened_at DESC, alert_id DESC LIMIT :limit"
        ),
        params,
    )
    return [_alert(r) for r in rows]
