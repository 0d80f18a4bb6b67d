"""A pipelined transaction (`db.pipelined_transaction`, the wallet's batch) against the
server: lock, read and write in two round trips; a read queued behind a lock sees what was
committed while it waited; a failure commits nothing, says what failed, and leaves a
usable pool. And its one-statement sibling on the same driver connection (`db.fetch`, the
wallet's balance read): rows, prepared like any repeated statement, failures classified."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.runtime import db
from services.runtime.config import DatabaseConfig
from services.runtime.errors import DependencyUnavailable
from services.runtime.interceptors import _retryable
from tests.conftest import SECRETS, TEST_DATABASE
from tests.support.locks import until_waiting_on_a_lock
from tests.wallet.conftest import admin_dsn

LOCK = text("SELECT id, v FROM probe.accounts WHERE id = ANY(CAST(:ids AS int[])) FOR UPDATE")
FACTS = text("SELECT note FROM probe.facts WHERE account = :id ORDER BY note")
RECORD = text("INSERT INTO probe.facts (account, note) VALUES (:id, :note)")
MOVE = text("UPDATE probe.accounts SET v = v + :d WHERE id = :id")
BACKEND = text("SELECT pg_backend_pid() AS pid")
RECORD_RETURNING = text(
    "INSERT INTO probe.facts (account, note) VALUES (:id, :note) RETURNING account"
)
PREPARED = text("SELECT statement FROM pg_prepared_statements")
_WAIT = ("Flush", "Sync")


@pytest.fixture
async def engine(test_database: str) -> AsyncIterator[AsyncEngine]:
    """`autocommit(engine)` over one pooled connection, and a schema of its own."""
    with psycopg.connect(admin_dsn(), autocommit=True) as admin:
        admin.execute("DROP SCHEMA IF EXISTS probe CASCADE")
        admin.execute("CREATE SCHEMA probe")
        admin.execute("CREATE TABLE probe.accounts (id int PRIMARY KEY, v int NOT NULL)")
        admin.execute("CREATE TABLE probe.facts (account int, note text PRIMARY KEY)")
        admin.execute("INSERT INTO probe.accounts VALUES (1, 0), (2, 0)")
    engine = db.create_engine(
        DatabaseConfig(
            url=f"postgresql+psycopg://casino_admin@127.0.0.1:5432/{TEST_DATABASE}",
            password_file=SECRETS / "postgres" / "casino_admin",
            pool_size=1,  # every unit of work gets the same pooled connection
        ),
        "test",
    )
    try:
        yield db.autocommit(engine)
    finally:
        await engine.dispose()
        with psycopg.connect(admin_dsn(), autocommit=True) as admin:
            admin.execute("DROP SCHEMA probe CASCADE")


def _rows(*statements: str) -> list[Any]:
    with psycopg.connect(admin_dsn(), autocommit=True) as admin:
        return [admin.execute(s).fetchall() for s in statements]


async def test_lock_read_and_write_go_in_two_round_trips(engine: AsyncEngine) -> None:
    # libpq's trace of the session: a round trip is a Flush (results wanted now) or a Sync
    # (end of the pipeline) sent by the client, each answered before the client goes on.
    async with engine.connect() as conn:
        driver = (await conn.get_raw_connection()).driver_connection
        assert isinstance(driver, psycopg.AsyncConnection)
    with tempfile.TemporaryFile("w+") as trace:
        driver.pgconn.trace(trace.fileno())
        driver.pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            async with db.pipelined_transaction(engine) as pipeline:
                locked = await pipeline.queue(LOCK, {"ids": [1, 2]}, list)
                facts = await pipeline.queue(FACTS, {"id": 1}, list)
                assert [(r.id, r.v) for r in await locked.result()] == [(1, 0), (2, 0)]
                assert await facts.result() == []
                await pipeline.queue(MOVE, {"id": 1, "d": 5}, list)
                await pipeline.queue(RECORD, {"id": 1, "note": "moved"}, list)
        finally:
            driver.pgconn.untrace()
        os.fsync(trace.fileno())
        trace.seek(0)
        sent = [line.split("\t")[2].strip() for line in trace if line.startswith("F\t")]
    # The client waits once per run of Flush/Sync messages (on leaving, psycopg follows its
    # Sync with a Flush in the same write).
    waits = [
        m
        for m, before in zip(sent, ["", *sent], strict=False)
        if m in _WAIT and before not in _WAIT
    ]
    assert len(waits) == 2, sent
    assert sent.count("Sync") == 1, sent
    assert _rows("SELECT v FROM probe.accounts WHERE id = 1", "SELECT note FROM probe.facts") == [
        [(5,)],
        [("moved",)],
    ]


async def test_queued_statements_stay_in_the_client_until_a_result_is_read(
    engine: AsyncEngine,
) -> None:
    # A round trip is one write: psycopg's own execute sends each statement as it is queued
    # (a poll and a write per statement, system calls that cost more than the statement).
    async with db.pipelined_transaction(engine) as pipeline:
        (backend,) = await (await pipeline.queue(BACKEND, {}, list)).result()
        await pipeline.queue(MOVE, {"id": 1, "d": 5}, list)
        # The server's last statement of the session is still the one read.
        activity = f"SELECT query FROM pg_stat_activity WHERE pid = {backend.pid}"
        assert _rows(activity) == [[("SELECT pg_backend_pid() AS pid",)]]
        locked = await pipeline.queue(LOCK, {"ids": [1]}, list)
        assert [(r.id, r.v) for r in await locked.result()] == [(1, 5)]
        assert _rows(activity)[0][0][0].endswith("FOR UPDATE")


async def test_a_read_queued_behind_a_lock_sees_what_was_committed_while_it_waited(
    engine: AsyncEngine,
) -> None:
    # What the wallet relies on: the read of a batch's keys, sent with the lock of its
    # accounts, runs once the lock is granted, with a snapshot taken then.
    holder = await psycopg.AsyncConnection.connect(admin_dsn())
    try:
        await holder.execute("SELECT 1 FROM probe.accounts WHERE id = 1 FOR UPDATE")

        async def batch() -> list[str]:
            async with db.pipelined_transaction(engine) as pipeline:
                await pipeline.queue(LOCK, {"ids": [1]}, list)
                facts = await pipeline.queue(FACTS, {"id": 1}, list)
                return [r.note for r in await facts.result()]

        waiting = asyncio.create_task(batch())
        await until_waiting_on_a_lock(admin_dsn(), "%FOR UPDATE%")
        await holder.execute("INSERT INTO probe.facts VALUES (1, 'committed while it waited')")
        await holder.commit()
        assert await asyncio.wait_for(waiting, 10) == ["committed while it waited"]
    finally:
        await holder.close()


async def test_a_failed_statement_commits_nothing_and_the_pool_goes_on(
    engine: AsyncEngine,
) -> None:
    with pytest.raises(DBAPIError) as failed:
        async with db.pipelined_transaction(engine) as pipeline:
            await pipeline.queue(MOVE, {"id": 1, "d": 5}, list)
            await pipeline.queue(RECORD, {"id": 1, "note": "twice"}, list)
            await pipeline.queue(RECORD, {"id": 2, "note": "twice"}, list)
    assert isinstance(failed.value.orig, psycopg.errors.UniqueViolation)
    assert failed.value.orig.diag.constraint_name == "facts_pkey"
    assert not failed.value.connection_invalidated
    assert _rows("SELECT v FROM probe.accounts WHERE id = 1", "SELECT note FROM probe.facts") == [
        [(0,)],
        [],
    ]
    # The same pooled connection, rolled back, serves the next transaction.
    async with db.pipelined_transaction(engine) as pipeline:
        await pipeline.queue(RECORD, {"id": 2, "note": "after"}, list)
    assert _rows("SELECT note FROM probe.facts") == [[("after",)]]


async def test_an_exception_in_the_block_rolls_back_what_was_sent(engine: AsyncEngine) -> None:
    with pytest.raises(RuntimeError, match="decided against"):
        async with db.pipelined_transaction(engine) as pipeline:
            await pipeline.queue(MOVE, {"id": 1, "d": 5}, list)
            await (await pipeline.queue(LOCK, {"ids": [1]}, list)).result()  # the move has run
            raise RuntimeError("decided against")
    assert _rows("SELECT v FROM probe.accounts WHERE id = 1") == [[(0,)]]
    async with db.pipelined_transaction(engine) as pipeline:
        assert [r.v for r in await (await pipeline.queue(LOCK, {"ids": [1]}, list)).result()] == [0]


async def test_a_connection_lost_mid_transaction_is_discarded_and_reads_as_unavailable(
    engine: AsyncEngine,
) -> None:
    with pytest.raises(DBAPIError) as failed:
        async with db.pipelined_transaction(engine) as pipeline:
            (backend,) = await (await pipeline.queue(BACKEND, {}, list)).result()
            _rows(f"SELECT pg_terminate_backend({backend.pid})")
            await (await pipeline.queue(LOCK, {"ids": [1]}, list)).result()
    assert failed.value.connection_invalidated
    assert isinstance(_retryable(failed.value), DependencyUnavailable)
    # The pool opens a new connection for the next transaction.
    async with db.pipelined_transaction(engine) as pipeline:
        (again,) = await (await pipeline.queue(BACKEND, {}, list)).result()
    assert again.pid != backend.pid


async def test_fetch_answers_rows_by_name_and_none_for_no_row(engine: AsyncEngine) -> None:
    (row,) = await db.fetch(engine, LOCK, {"ids": [2]})
    assert (row.id, row.v) == (2, 0)
    assert await db.fetch(engine, FACTS, {"id": 1}) == []


async def test_a_repeated_fetch_is_prepared_on_its_connection(engine: AsyncEngine) -> None:
    # The point of fetch is the balance read's CPU; a statement parsed and planned on every
    # execution would give that back on the server.
    for _ in range(6):
        await db.fetch(engine, FACTS, {"id": 1})
    prepared = await db.fetch(engine, PREPARED, {})
    assert any("probe.facts" in row.statement for row in prepared)


async def test_a_failed_fetch_is_a_database_error_and_the_pool_goes_on(
    engine: AsyncEngine,
) -> None:
    (backend,) = await db.fetch(engine, BACKEND, {})
    with pytest.raises(DBAPIError) as failed:
        await db.fetch(engine, RECORD_RETURNING, {"id": 1, "note": None})
    assert isinstance(failed.value.orig, psycopg.errors.NotNullViolation)
    assert not failed.value.connection_invalidated
    assert _rows("SELECT note FROM probe.facts") == [[]]
    (same,) = await db.fetch(engine, BACKEND, {})
    assert same.pid == backend.pid


async def test_a_fetch_on_a_lost_connection_reads_as_unavailable_and_the_next_reconnects(
    engine: AsyncEngine,
) -> None:
    (backend,) = await db.fetch(engine, BACKEND, {})
    _rows(f"SELECT pg_terminate_backend({backend.pid})")
    with pytest.raises(DBAPIError) as failed:
        await db.fetch(engine, LOCK, {"ids": [1]})
    assert failed.value.connection_invalidated
    assert isinstance(_retryable(failed.value), DependencyUnavailable)
    (again,) = await db.fetch(engine, BACKEND, {})
    assert again.pid != backend.pid
