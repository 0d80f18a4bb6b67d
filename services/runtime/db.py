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
where BEGIN, the statement and COMMIT cost three, and nothing is rolled back."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

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
