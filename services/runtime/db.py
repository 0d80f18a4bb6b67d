"""PostgreSQL access: SQLAlchemy Core on psycopg 3, one async engine per service, connecting
as the service's own role with its password read from a file.

Every unit of work, reads included, runs in `engine.begin()` and so ends in COMMIT. psycopg
prepares a statement on a connection after its fifth execution there and forgets every
prepared statement of the connection on ROLLBACK (and a read in `engine.connect()` ends in
one when the connection goes back to the pool): with reads rolled back, the pooled
connections kept losing their prepared statements and the money path's statements were
parsed and planned again on nearly every execution. Committing a read-only transaction
writes nothing and costs the same round trip as rolling it back.

A generic plan is a hazard where statements join arrays of keys to a growing table:
PostgreSQL, after five executions of a prepared statement, may settle on one plan costed for
the table as it was, and for a table that was small then, that plan scans it whole and keeps
doing so as it grows, until an ANALYZE replans it (on a server without autovacuum, never):
the wallet's read of a batch's keys took 844 ms at 300,000 transactions. An engine built with
`custom_plans` has its sessions plan every execution for its values (`plan_cache_mode =
force_custom_plan`; tests/integration/test_prepared_statements.py). It costs a planning per
execution: the wallet, whose batches share it, takes it; the compliance check, one planning
of several complex statements per check at low load, measured 1-1.5 ms slower with it and
relies on autovacuum's analyses instead (services warn at start when it is off).

A unit of work that is one statement (a single-row read, say) runs instead on
:func:`autocommit`'s engine, the same pool without psycopg's transaction: PostgreSQL runs a
lone statement as its own transaction (atomic, one snapshot), so it costs one round trip
where BEGIN, the statement and COMMIT cost three, and nothing is rolled back. A frequent one
runs as :func:`fetch`, on psycopg's cursor without SQLAlchemy's execute.

A unit of work on the money path whose statements need not wait for each other's results
one by one (lock, then read, then write) runs as a :func:`pipelined_transaction` on that
same pool: the statements go out in psycopg's pipeline mode, two round trips in all."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Generic, TypeVar

import psycopg
from psycopg.rows import namedtuple_row
from sqlalchemy import TextClause, text
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import PoolProxiedConnection

from services.runtime.config import DatabaseConfig
from services.runtime.secrets import read_secret


def database_url(config: DatabaseConfig) -> URL:
    url = make_url(config.url)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    if config.password_file is not None:
        url = url.set(password=read_secret(config.password_file))
    return url


# Rows a statement writes in bulk travel as one JSON document (a list of objects keyed by
# column): encoded by the json module in C and decoded by PostgreSQL, where a list per column
# would be dumped by the driver element by element. `columns` are (name, SQL type); bytea
# travels as hex text.
Columns = Sequence[tuple[str, str]]


def json_rows(param: str, columns: Columns) -> str:
    """The FROM item reading the document bound to `param` as rows aliased `v`."""
    typed = ", ".join(f"{name} {'text' if kind == 'bytea' else kind}" for name, kind in columns)
    return f"jsonb_to_recordset(CAST(:{param} AS jsonb)) AS v({typed})"


def json_row_values(columns: Columns) -> str:
    """The select list giving `json_rows`' columns as their table takes them."""
    return ", ".join(
        f"decode(v.{name}, 'hex')" if kind == "bytea" else f"v.{name}" for name, kind in columns
    )


def column_names(columns: Columns) -> str:
    return ", ".join(name for name, _ in columns)


def create_engine(
    config: DatabaseConfig, application_name: str, *, custom_plans: bool = False
) -> AsyncEngine:
    """`custom_plans`: the sessions plan every execution of a prepared statement for its
    values (see the module's docstring): for a service whose statements join key arrays to
    tables that grow under them, at the cost of a planning per execution."""
    options = {"options": "-c plan_cache_mode=force_custom_plan"} if custom_plans else {}
    return create_async_engine(
        database_url(config),
        pool_size=config.pool_size,
        max_overflow=0,
        # No ping on every checkout: it is a round trip per transaction on the money path.
        # A connection the server dropped fails its statement instead; SQLAlchemy then
        # invalidates the whole pool, the call answers UNAVAILABLE (DEPENDENCY_UNAVAILABLE)
        # and the caller's retry, under the same idempotency key, gets a fresh connection.
        pool_pre_ping=False,
        pool_timeout=config.pool_timeout_seconds,
        # A database error's text never carries the statement's values (emails, birth
        # dates, password hashes): it is logged, by the runtime and by workers.
        hide_parameters=True,
        connect_args={
            "connect_timeout": max(1, round(config.connect_timeout_seconds)),
            "application_name": application_name,
            **options,
        },
    )


def autocommit(engine: AsyncEngine) -> AsyncEngine:
    """``engine``'s pool for one-statement units of work: every statement commits alone, so
    never use it for two statements that must agree or land together. Build it once per
    service (building it costs about as much as a round trip's Python)."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")


async def ping(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("SELECT 1"))


def violated_constraint(exc: DBAPIError) -> str | None:
    """The constraint a failed statement violated (a unique key raced by a concurrent
    writer, say), or None."""
    diag = getattr(exc.orig, "diag", None)
    return getattr(diag, "constraint_name", None)


# Pipelined transactions: the money path's unit of work in two round trips.

T = TypeVar("T")


class Queued(Generic[T]):
    """A statement queued in a pipelined transaction, its result not yet read."""

    def __init__(
        self,
        cursor: psycopg.AsyncCursor[Any] | None,
        parse: Callable[[list[Any]], T],
        pipeline: Pipeline | None = None,
    ) -> None:
        self._cursor, self._parse, self._pipeline = cursor, parse, pipeline

    @classmethod
    def of(cls, value: T) -> Queued[T]:
        """A result known without asking the database."""
        return cls(None, lambda rows: value)

    async def result(self) -> T:
        """The parsed rows. Inside the transaction, the first read of a round sends every
        statement queued before it in one write and waits once for all of them; later reads
        find their rows already here; after it, every result is here (the commit's round)."""
        if self._cursor is None:
            return self._parse([])
        if self._pipeline is not None:
            await self._pipeline.send()
        return self._parse(await self._cursor.fetchall())


class Pipeline:
    """The statements of one pipelined transaction (`pipelined_transaction`)."""

    def __init__(self, connection: psycopg.AsyncConnection[Any]) -> None:
        self._connection = connection

    async def queue(
        self,
        statement: TextClause | str,
        params: dict[str, Any] | None,
        parse: Callable[[list[Any]], T],
    ) -> Queued[T]:
        """Queue `statement` (SQLAlchemy's `text`, `:name` parameters; or driver SQL as a
        string, as BEGIN and COMMIT are) without sending it;
        `parse` makes its result of the rows (attribute access, as SQLAlchemy's). It goes
        out with the next read of a result, or with the COMMIT. A statement that returns no
        rows is queued and never read (its failure fails the transaction all the same)."""
        cursor = self._connection.cursor(row_factory=namedtuple_row)
        sql = statement if isinstance(statement, str) else _driver_sql(statement)
        async with self._connection.lock:
            await self._connection.wait(_queue_gen(cursor, sql, params))
        return Queued(cursor, parse, self)

    async def send(self) -> None:
        """Hand every queued statement to libpq, which buffers them in pipeline mode: the
        read that follows flushes them in one write. (psycopg's own `execute` flushes each
        statement as it is queued: a zero-timeout poll and a write per statement, system
        calls that cost more than the statement's Python on a small virtual machine.)"""
        pipeline = self._connection._pipeline
        if pipeline is None:  # the transaction is over: every result has been read
            return
        async with self._connection.lock:
            while pipeline.command_queue:
                pipeline.command_queue.popleft()()


def _queue_gen(
    cursor: psycopg.AsyncCursor[Any], sql: str, params: dict[str, Any] | None
) -> psycopg.abc.PQGen[None]:
    """psycopg's `AsyncCursor.execute` in pipeline mode without its last step, which sends
    the statement at once (`BaseCursor._execute_gen` of psycopg 3.3; pinned in
    pyproject.toml): the statement is converted, prepared when it is due, and left on the
    pipeline's queue of commands with its cursor on the queue of results."""
    yield from cursor._start_query(sql)
    query = cursor._convert_query(sql, params)
    yield from cursor._maybe_prepare_gen(query, prepare=None, binary=None)
    cursor._last_query = sql
    yield from cursor._conn._prepared.maintain_gen(cursor._conn)


@functools.cache
def _driver_sql(statement: TextClause) -> str:
    return statement.compile(dialect=_DIALECT).string


_DIALECT = PGDialect_psycopg()  # type: ignore[no-untyped-call]


@contextlib.asynccontextmanager
async def pipelined_transaction(engine: AsyncEngine) -> AsyncIterator[Pipeline]:
    """One transaction on the driver's connection in pipeline mode, from `autocommit`'s
    engine. BEGIN goes out with the first statements; reading a result sends everything
    queued and waits once for all of it; COMMIT is queued behind the last statement and sent
    with the closing Sync. So lock-then-read-then-write costs two round trips where
    SQLAlchemy's transaction costs five (BEGIN, each statement, COMMIT), and each round trip
    of a busy service's batch also waits for its event loop to come round again.

    Statements still run one after another on the server, each with its own snapshot
    (READ COMMITTED): one queued after a `FOR UPDATE` sees what was committed before the
    lock was granted. A failed statement fails the transaction: nothing commits, and the
    error is raised on leaving the block, as SQLAlchemy's DBAPIError (so it is classified
    like any other database error), with the connection discarded if it broke."""
    async with _driver_connection(engine) as driver, driver.pipeline():
        pipeline = Pipeline(driver)
        await pipeline.queue("BEGIN", None, list)
        yield pipeline
        await pipeline.queue("COMMIT", None, list)
        await pipeline.send()


async def fetch(engine: AsyncEngine, statement: TextClause, params: dict[str, Any]) -> list[Any]:
    """A unit of work that is one statement, on `autocommit`'s engine: its rows (attribute
    access, as SQLAlchemy's). On psycopg's cursor directly: SQLAlchemy's execute (a greenlet
    switch, an execution context, a result) measured about 100 us of CPU more than this for
    a single-row read that costs about 170 us in all, on the read behind every balance a
    player sees. `statement` must be built once (a module constant): its driver SQL is
    cached by the statement. Errors as `pipelined_transaction`'s."""
    async with _driver_connection(engine) as driver:
        cursor = driver.cursor(row_factory=namedtuple_row)
        await cursor.execute(_driver_sql(statement), params)
        return await cursor.fetchall()


@contextlib.asynccontextmanager
async def _driver_connection(engine: AsyncEngine) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A pooled connection's psycopg connection, from `autocommit`'s engine. A psycopg error
    leaving the block is raised as SQLAlchemy's DBAPIError, after the connection is rolled
    back or, if broken, discarded (`_end_failed`)."""
    async with engine.connect() as conn:
        pooled = await conn.get_raw_connection()
        driver = pooled.driver_connection
        assert isinstance(driver, psycopg.AsyncConnection) and driver.autocommit, (
            "the driver's connection is used from autocommit(engine) only"
        )
        try:
            yield driver
        except BaseException as exc:
            await _end_failed(conn, pooled, driver, exc)
            if isinstance(exc, psycopg.Error):
                raise DBAPIError.instance(
                    None,
                    None,
                    exc,
                    psycopg.Error,
                    hide_parameters=True,
                    connection_invalidated=driver.broken,
                ) from exc
            raise


async def _end_failed(
    conn: AsyncConnection,
    pooled: PoolProxiedConnection,
    driver: psycopg.AsyncConnection[Any],
    exc: BaseException,
) -> None:
    """Roll back what a failed unit of work on the driver's connection left open, or discard
    the connection when its state is unknown (it broke, or the block was cancelled
    mid-round)."""
    status = driver.info.transaction_status
    if driver.broken:
        # As SQLAlchemy does on a disconnect: the pool's other connections, opened before
        # this one broke, went with the same server or network, so each is replaced at its
        # next checkout rather than found dead by the next unit of work (a test: the first
        # retry after the database is back succeeds).
        conn.sync_engine.pool._invalidate(pooled, exc, _checkin=False)
    if driver.broken or status == psycopg.pq.TransactionStatus.ACTIVE:
        await conn.invalidate()
    elif status != psycopg.pq.TransactionStatus.IDLE:
        try:
            await driver.execute("ROLLBACK")
        except psycopg.Error:
            await conn.invalidate()
