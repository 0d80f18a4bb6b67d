"""Rule feature flags: a new rule ships behind a flag, is enabled for a segment of players
first (countries, then a stable percentage), and can be switched off at runtime without a
deploy.

The flags live in `compliance.rule_flags`; every change is appended to
`compliance.rule_flag_changes` and announced with NOTIFY in the same transaction. Each
replica holds an in-memory snapshot, replaced (a) at once in the process that made the
change, (b) in every other replica on the NOTIFY, and (c) by a periodic poll as a safety net
for a missed notification. A failed refresh keeps the last snapshot; a replica that never
read the table is not ready (checks fail closed until it has)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
from prometheus_client import Counter, Gauge
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.compliance import rules
from services.runtime.errors import DependencyUnavailable, InvalidArgument
from services.runtime.logs import get_logger

# The NOTIFY channel; its payload is the changed rule's name (informative: a notification
# makes a replica re-read every flag).
CHANNEL = "compliance_rule_flags"


@dataclass(frozen=True)
class RuleSpec:
    default_enabled: bool
    description: str


# Every rule that can be flagged. A flag row for a name not here is refused; a rule here
# without a row runs with its default, for every player.
REGISTRY: Mapping[str, RuleSpec] = {
    rules.AFFORDABILITY: RuleSpec(
        False,
        "Deposits taking 30-day deposits to the affordability threshold need an assessment.",
    ),
    "AML_CDD_THRESHOLD": RuleSpec(True, "AML: deposits reaching the CDD threshold."),
    "AML_STRUCTURING": RuleSpec(True, "AML: deposits split to stay under the CDD threshold."),
    "AML_LOW_TURNOVER": RuleSpec(True, "AML: deposits withdrawn with little play."),
    "AML_FAST_LARGE_SPEND": RuleSpec(True, "AML: a large amount staked soon after deposit."),
    "AML_MULTIPLE_INSTRUMENTS": RuleSpec(True, "AML: many payment instruments in a short time."),
    "AML_WITHDRAWAL_REVERSAL": RuleSpec(True, "AML: withdrawals repeatedly reversed."),
}


def known_rule(rule: str) -> RuleSpec:
    try:
        return REGISTRY[rule]
    except KeyError:
        raise InvalidArgument("rule", f"{rule!r} is not a flaggable rule") from None


def bucket(rule: str, player_id: str) -> int:
    """The player's stable bucket 0..99 for a rule: the same player stays in or out of a
    rollout as its percentage grows, and each rule draws its own sample."""
    digest = hashlib.sha256(f"{rule}:{player_id}".encode()).digest()
    return int.from_bytes(digest, "big") % 100


@dataclass(frozen=True)
class RuleFlag:
    rule: str
    enabled: bool
    rollout_percent: int = 100
    countries: tuple[str, ...] = ()  # empty: every country
    version: int = 0  # 0: no row, the registry's default
    updated_by: str = ""
    update_time: dt.datetime | None = None

    def applies_to(self, player_id: str, country: str) -> bool:
        if not self.enabled:
            return False
        if self.countries and country not in self.countries:
            return False
        return bucket(self.rule, player_id) < self.rollout_percent


def default_flag(rule: str) -> RuleFlag:
    return RuleFlag(rule, REGISTRY[rule].default_enabled)


@dataclass(frozen=True)
class Snapshot:
    """Every registered rule's flag as read at one moment. The version names the content,
    so replicas holding the same flags report the same version."""

    flags: Mapping[str, RuleFlag] = field(default_factory=dict)

    @classmethod
    def of(cls, stored: Iterable[RuleFlag]) -> Snapshot:
        flags = {rule: default_flag(rule) for rule in REGISTRY}
        # Rows for rules no longer in the registry are ignored (a rule was retired).
        flags.update({f.rule: f for f in stored if f.rule in REGISTRY})
        return cls(flags)

    @functools.cached_property
    def version(self) -> str:
        # Cached: a snapshot never changes, and every check records its version.
        canonical = json.dumps(
            [
                [f.rule, f.enabled, f.rollout_percent, list(f.countries), f.version]
                for f in sorted(self.flags.values(), key=lambda f: f.rule)
            ]
        ).encode()
        return "flags/" + hashlib.sha256(canonical).hexdigest()[:12]

    def enabled(self, rule: str, player_id: str, country: str) -> bool:
        return self.flags[rule].applies_to(player_id, country)

    def evaluate(self, names: Iterable[str], player_id: str, country: str) -> dict[str, bool]:
        return {rule: self.enabled(rule, player_id, country) for rule in names}


# I/O: the table, and the snapshot each replica holds.

REFRESH_FAILURES = Counter(
    "casino_compliance_rule_flags_refresh_failures_total",
    "Rule-flag refreshes that failed (the last snapshot stayed in force).",
    ["source"],
)
REFRESHED = Gauge(
    "casino_compliance_rule_flags_refreshed_timestamp_seconds",
    "When this replica last read the rule flags successfully (Unix time).",
)

log = get_logger()


def _flag(row: Any) -> RuleFlag:
    return RuleFlag(
        rule=row.rule,
        enabled=row.enabled,
        rollout_percent=row.rollout_percent,
        countries=tuple(row.countries),
        version=row.version,
        updated_by=row.updated_by,
        update_time=row.update_time,
    )


async def read_flags(conn: AsyncConnection) -> list[RuleFlag]:
    rows = await conn.execute(
        text(
            "SELECT rule, enabled, rollout_percent, countries, version, updated_by, update_time"
            " FROM compliance.rule_flags"
        )
    )
    return [_flag(r) for r in rows]


async def write_flag(
    conn: AsyncConnection,
    rule: str,
    *,
    enabled: bool,
    rollout_percent: int,
    countries: tuple[str, ...],
    updated_by: str,
    reason: str,
    now: dt.datetime,
) -> RuleFlag:
    """The flag as it now stands and its change in the history, announced to every replica
    when (and only if) the caller's transaction commits."""
    row = (
        await conn.execute(
            text(
                "INSERT INTO compliance.rule_flags (rule, enabled, rollout_percent, countries,"
                " updated_by, update_time) VALUES (:rule, :enabled, :pct, :countries, :by, :now)"
                " ON CONFLICT (rule) DO UPDATE SET enabled = excluded.enabled,"
                " rollout_percent = excluded.rollout_percent, countries = excluded.countries,"
                " updated_by = excluded.updated_by, update_time = excluded.update_time,"
                " version = compliance.rule_flags.version + 1"
                " RETURNING rule, enabled, rollout_percent, countries, version, updated_by,"
                " update_time"
            ),
            {
                "rule": rule,
                "enabled": enabled,
                "pct": rollout_percent,
                "countries": list(countries),
                "by": updated_by,
                "now": now,
            },
        )
    ).one()
    flag = _flag(row)
    await conn.execute(
        text(
            "INSERT INTO compliance.rule_flag_changes (rule, enabled, rollout_percent,"
            " countries, version, updated_by, reason, change_time)"
            " VALUES (:rule, :enabled, :pct, :countries, :version, :by, :reason, :now)"
        ),
        {
            "rule": rule,
            "enabled": flag.enabled,
            "pct": flag.rollout_percent,
            "countries": list(flag.countries),
            "version": flag.version,
            "by": updated_by,
            "reason": reason,
            "now": now,
        },
    )
    await conn.execute(
        text("SELECT pg_notify(:channel, :rule)"), {"channel": CHANNEL, "rule": rule}
    )
    return flag


class RuleFlags:
    """The replica's snapshot of the flags, kept fresh while `run()` runs (a background
    worker of the service)."""

    def __init__(self, engine: AsyncEngine, *, poll_seconds: float = 5.0) -> None:
        self._engine = engine
        self._poll_seconds = poll_seconds
        self._snapshot: Snapshot | None = None
        # Refreshes run one at a time, so an older read never replaces a newer one.
        self._lock = asyncio.Lock()
        self._listening: psycopg.AsyncConnection[Any] | None = None

    @property
    def snapshot(self) -> Snapshot:
        """The flags in force; fails closed when they were never read."""
        if self._snapshot is None:
            raise DependencyUnavailable("rule flags")
        return self._snapshot

    def enabled(self, rule: str, player_id: str, country: str) -> bool:
        """Is the rule in force for this player (country of residence) now?"""
        return self.snapshot.enabled(rule, player_id, country)

    async def refresh(self, source: str = "change") -> Snapshot:
        async with self._lock:
            try:
                async with self._engine.begin() as conn:
                    stored = await read_flags(conn)
            except Exception as exc:
                REFRESH_FAILURES.labels(source).inc()
                log.warning(
                    "rule flags refresh failed; keeping the last snapshot",
                    source=source,
                    error=str(exc) or type(exc).__name__,
                    version=self._snapshot.version if self._snapshot else None,
                )
                raise
            snapshot = Snapshot.of(stored)
            if self._snapshot is None or snapshot.version != self._snapshot.version:
                log.info("rule flags in force", source=source, version=snapshot.version)
            self._snapshot = snapshot
            REFRESHED.set_to_current_time()
            return snapshot

    async def ready(self) -> None:
        """Readiness probe: ready once the flags have been read (later failures keep the
        last snapshot and do not take the replica out of rotation)."""
        if self._snapshot is None:
            await self.refresh("start")

    async def run(self) -> None:
        await asyncio.gather(self._poll(), self._listen())

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_seconds)
            with contextlib.suppress(Exception):
                await self.refresh("poll")

    async def _listen(self) -> None:
        """LISTEN on a connection of its own (outside the pool, which it would otherwise
        hold forever); reconnects with a backoff, re-reading after each (re)connect since
        notifications sent while it was away are lost."""
        url = self._engine.url
        backoff = 0.5
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    host=url.host,
                    port=url.port,
                    user=url.username,
                    password=url.password,
                    dbname=url.database,
                    autocommit=True,
                    application_name="compliance-rule-flags",
                ) as conn:
                    self._listening = conn
                    await conn.execute(f"LISTEN {CHANNEL}")
                    await self.refresh("listen")
                    backoff = 0.5
                    async for _ in conn.notifies():
                        await self.refresh("notify")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                REFRESH_FAILURES.labels("listen").inc()
                log.warning("rule flags listener lost", error=str(exc) or type(exc).__name__)
            finally:
                self._listening = None
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    async def close(self) -> None:
        if self._listening is not None:
            with contextlib.suppress(Exception):
                await self._listening.close()
