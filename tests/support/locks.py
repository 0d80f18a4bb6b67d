"""Waiting, in a test, until a backend is blocked on a lock: the moment a race is staged."""

from __future__ import annotations

import asyncio

import psycopg


async def until_waiting_on_a_lock(dsn: str, query_like: str, timeout: float = 10.0) -> None:
    """Return once a backend of this database waits on a lock while running a statement
    matching `query_like` (SQL LIKE); fail after `timeout` seconds."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        for _ in range(int(timeout / 0.02)):
            row = await (
                await conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND datname = current_database() AND query LIKE %s",
                    (query_like,),
                )
            ).fetchone()
            if row and row[0]:
                return
            await asyncio.sleep(0.02)
    raise AssertionError(f"no statement like {query_like!r} waited on a lock in {timeout}s")
