"""Retention: rows that have served their purpose are deleted in the background, so a table
holds a bounded window rather than everything ever written.

The service role never gets DELETE on such a table. Its migration creates a function owned
by the schema's owner, `<schema>.<name>(keep interval, max_rows integer) RETURNS integer`,
that deletes only rows its own rule says are done (the outbox: published events; usage:
rows older than any limit period) and older than `keep`, at most `max_rows` per call, and
grants EXECUTE on it to the role. `Pruner` calls it on an interval until a call deletes
fewer than a batch: short statements, no long lock, nothing else for the role to misuse.
"""

from __future__ import annotations

import asyncio
import datetime as dt

from prometheus_client import Counter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.runtime.logs import get_logger

PRUNED = Counter(
    "casino_rows_pruned_total", "Rows deleted after their retention, by function.", ["function"]
)
BATCH = 5000

log = get_logger()


def prune_function_ddl(
    schema: str, name: str, table: str, key: str, done: str, order_by: str, role: str
) -> list[str]:
    """Statements (for a migration) creating `<schema>.<name>(keep interval, max_rows
    integer)`: deletes at most `max_rows` rows of `<schema>.<table>` matching `done` (an SQL
    condition that may use `keep`), oldest first by `order_by`, found by their primary key
    `key` (a column list); owned by the migration role, executable by `role` only."""
    function = f"{schema}.{name}(interval, integer)"
    return [
        f"""
        CREATE FUNCTION {schema}.{name}(keep interval, max_rows integer)
        RETURNS integer LANGUAGE sql SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp AS $$
            WITH gone AS (
                DELETE FROM {schema}.{table} WHERE ({key}) IN (
                    SELECT {key} FROM {schema}.{table} WHERE {done}
                    ORDER BY {order_by} LIMIT max_rows)
                RETURNING 1)
            SELECT count(*)::integer FROM gone
        $$
        """,  # noqa: S608 (names and conditions from migrations, never from input)
        f"REVOKE ALL ON FUNCTION {function} FROM PUBLIC",
        f"GRANT EXECUTE ON FUNCTION {function} TO {role}",
    ]


class Pruner:
    """A background worker (ServiceRuntime.add_background) calling `function` (qualified,
    e.g. "wallet.prune_outbox") with `keep` every `every_seconds`."""

    def __init__(
        self,
        engine: AsyncEngine,
        function: str,
        keep: dt.timedelta,
        *,
        every_seconds: float = 60.0,
        batch: int = BATCH,
    ) -> None:
        self._engine = engine
        self._function = function
        self._keep = keep
        self._every = every_seconds
        self._batch = batch
        self._statement = text(f"SELECT {function}(:keep, :n)")

    async def prune(self) -> int:
        """Delete what is past retention, in bounded statements; returns how many rows."""
        total = 0
        while True:
            async with self._engine.begin() as conn:
                deleted = int(
                    (
                        await conn.execute(self._statement, {"keep": self._keep, "n": self._batch})
                    ).scalar_one()
                )
            total += deleted
            PRUNED.labels(self._function).inc(deleted)
            if deleted < self._batch:
                return total

    async def run(self) -> None:
        while True:
            try:
                pruned = await self.prune()
                if pruned:
                    log.info("pruned after retention", function=self._function, rows=pruned)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database away: try again next round
                log.warning(
                    "retention prune failed", function=self._function, error=str(exc) or repr(exc)
                )
            await asyncio.sleep(self._every)

    async def close(self) -> None:
        return None
