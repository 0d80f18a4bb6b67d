"""What runs beside the games server: the recovery worker that finishes rounds a crash or a
timeout left part way, and the maintenance of the archive's monthly partitions."""

from __future__ import annotations

import asyncio
import datetime as dt

from prometheus_client import Counter, Gauge
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.games import store
from services.games.lifecycle import Lifecycle
from services.runtime.logs import get_logger

log = get_logger()

RECOVERED = Counter(
    "casino_games_rounds_recovered_total",
    "Rounds finished by the recovery worker, by how they ended (or failed to).",
    ["outcome"],
)
UNFINISHED = Gauge(
    "casino_games_rounds_unfinished",
    "Rounds part way through their lifecycle (live or awaiting recovery).",
)


class RoundRecovery:
    def __init__(
        self,
        engine: AsyncEngine,
        lifecycle: Lifecycle,
        *,
        interval_seconds: float,
        batch: int,
        lease_seconds: float,
    ) -> None:
        self._engine = engine
        self._lifecycle = lifecycle
        self._interval = interval_seconds
        self._batch = batch
        self._lease = lease_seconds

    async def run_once(self) -> int:
        """Finish every round whose lease ran out; returns how many were finished."""
        async with self._engine.begin() as conn:
            due = await store.claim_unfinished(conn, self._batch, self._lease)
            unfinished = (
                await conn.execute(
                    text(
                        f"SELECT count(*) FROM {store.SCHEMA}.rounds"  # noqa: S608
                        " WHERE state NOT IN ('COMPLETED', 'VOIDED')"
                    )
                )
            ).scalar_one()
        UNFINISHED.set(unfinished)
        finished = 0
        for r in due:
            try:
                done = await self._lifecycle.advance(r, recovering=True)
            except Exception as exc:  # one stuck round must not stop the others
                RECOVERED.labels("failed").inc()
                log.warning(
                    "round recovery failed; retried after its lease",
                    round_id=str(r.round_id),
                    state=r.state.value,
                    error=str(exc),
                )
                continue
            finished += 1
            RECOVERED.labels(done.state.value.lower()).inc()
            log.info(
                "round recovered",
                round_id=str(r.round_id),
                from_state=r.state.value,
                state=done.state.value,
                void_reason=done.void_reason,
            )
        return finished

    async def run(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as exc:  # the database may be away; try again next interval
                log.warning("round recovery pass failed", error=str(exc))
            await asyncio.sleep(self._interval)

    async def close(self) -> None:
        return None


class ArchivePartitions:
    """Creates the archive's monthly partitions from `months_back` months ago (so a restored
    or back-dated archive has somewhere to go) to `months_ahead` months ahead, at start and
    then daily: an insert never finds its month missing."""

    def __init__(
        self, engine: AsyncEngine, months_back: int, months_ahead: int, interval_seconds: float
    ) -> None:
        self._engine = engine
        self._back = months_back
        self._ahead = months_ahead
        self._interval = interval_seconds

    async def ensure_once(self) -> list[str]:
        months = store.partition_months(dt.datetime.now(dt.UTC).date(), self._back, self._ahead)
        async with self._engine.begin() as conn:
            return await store.ensure_partitions(conn, months)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.ensure_once()
            except Exception as exc:  # months ahead exist already; alert on repeats
                log.error("archive partition maintenance failed", error=str(exc))

    async def close(self) -> None:
        return None
