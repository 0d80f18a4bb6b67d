"""A service's pooled connections keep their prepared statements between units of work.

psycopg prepares a statement on a connection after its fifth execution there, and forgets
all of that connection's prepared statements on ROLLBACK. The runtime's engine and its
unit-of-work rule (reads too run in `engine.begin()`, or alone on `db.autocommit(engine)`,
see services/runtime/db.py) are what keep the money path's statements prepared; this
checks them together, on the server."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Literal

import psycopg
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from services.runtime import db
from services.runtime.config import DatabaseConfig
from tests.conftest import SECRETS, database_url

READ = text("SELECT posted FROM wallet.accounts WHERE player_id = :p AND currency = :c")
PREPARED = text(
    "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%wallet.accounts%'"
)


Unit = Literal["begin", "one statement", "left to roll back"]


async def _prepared_after_reads(test_database: str, unit: Unit) -> int:
    engine = db.create_engine(
        DatabaseConfig(
            url=database_url("wallet"),
            password_file=SECRETS / "postgres" / "casino_wallet",
            pool_size=1,  # one pooled connection: every unit of work gets the same one
        ),
        "test",
    )
    one_statement = db.autocommit(engine)
    try:
        for _ in range(8):
            scope: AbstractAsyncContextManager[AsyncConnection] = (
                engine.begin()
                if unit == "begin"
                else one_statement.connect()
                if unit == "one statement"
                else engine.connect()
            )
            async with scope as conn:
                await conn.execute(READ, {"p": "nobody", "c": "EUR"})
                raw = (await conn.get_raw_connection()).driver_connection
                assert isinstance(raw, psycopg.AsyncConnection)
                # A lone statement opens no transaction: no BEGIN went out, no COMMIT follows.
                in_transaction = raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
                assert in_transaction == (unit != "one statement")
        async with engine.begin() as conn:
            prepared = int((await conn.execute(PREPARED)).scalar_one())
            # The same pooled connection is transactional again for the next unit of work.
            raw = (await conn.get_raw_connection()).driver_connection
            assert isinstance(raw, psycopg.AsyncConnection)
            assert raw.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
            return prepared
    finally:
        await engine.dispose()


async def test_reads_in_committed_units_of_work_stay_prepared(test_database: str) -> None:
    assert await _prepared_after_reads(test_database, "begin") == 1


async def test_one_statement_reads_stay_prepared_without_a_transaction(
    test_database: str,
) -> None:
    assert await _prepared_after_reads(test_database, "one statement") == 1


async def test_reads_left_to_roll_back_lose_them(test_database: str) -> None:
    # Why the rule exists: the same reads, each rolled back when the connection is returned.
    assert await _prepared_after_reads(test_database, "left to roll back") == 0


async def test_a_database_error_never_carries_the_statements_values(test_database: str) -> None:
    # What the runtime logs of a failed statement: the SQL, never the values bound to it.
    engine = db.create_engine(
        DatabaseConfig(
            url=database_url("wallet"), password_file=SECRETS / "postgres" / "casino_wallet"
        ),
        "test",
    )
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text("SELECT CAST(:secret AS text), 1 / 0"), {"secret": "hunter2-pii"}
            )
    except DBAPIError as exc:
        assert "hunter2-pii" not in str(exc)
    else:
        raise AssertionError("the division should have failed")
    finally:
        await engine.dispose()


async def test_with_custom_plans_a_statement_is_planned_for_the_table_as_it_is(
    test_database: str,
) -> None:
    # PostgreSQL may cache one generic plan for a prepared statement, costed for the table
    # as it was when the plan was made; prepared while a table is small, that plan scans it
    # whole and goes on scanning as it grows, until an ANALYZE happens to invalidate it
    # (never, on a server without autovacuum). Seen on the wallet's read of a batch's keys
    # (a join of key arrays to the transactions): 844 ms per batch at 300,000 transactions,
    # 0.12 ms once analyzed. An engine with custom plans (the wallet's) plans every
    # execution for the values given.
    engine = db.create_engine(
        DatabaseConfig(
            url=database_url("wallet"),
            password_file=SECRETS / "postgres" / "casino_wallet",
            pool_size=1,  # one session: the temporary table and the prepared statement
        ),
        "test",
        custom_plans=True,
    )
    lookup = text(
        "SELECT t.v FROM unnest(CAST(:players AS text[]), CAST(:ids AS text[]))"
        " AS k(player_id, id) JOIN growing t ON t.player_id = k.player_id AND t.id = k.id"
    )
    keys = {"players": ["p1", "p2"], "ids": ["r1", "r2"]}
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "CREATE TEMPORARY TABLE growing"
                    " (player_id text, id text, v int, PRIMARY KEY (player_id, id))"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO growing SELECT 'p' || i, 'r' || i, i FROM generate_series(1, 10) i"
                )
            )
        # psycopg prepares it at its fifth execution; PostgreSQL plans the first five of the
        # prepared statement for their values, then weighs one generic plan for all.
        for _ in range(15):
            async with engine.begin() as conn:
                await conn.execute(lookup, keys)
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO growing SELECT 'g' || i, 'x' || i, i"
                    " FROM generate_series(1, 100000) i"
                )
            )
            name = (
                await conn.execute(
                    text(
                        "SELECT name FROM pg_prepared_statements"
                        " WHERE statement LIKE '%JOIN growing%'"
                    )
                )
            ).scalar_one()
            explained = await conn.execute(
                text(f"EXPLAIN EXECUTE {name}('{{p1,p2}}', '{{r1,r2}}')")
            )
            plan = "\n".join(row[0] for row in explained)
    finally:
        await engine.dispose()
    assert "Index Scan using growing_pkey" in plan and "Seq Scan" not in plan, plan
