"""PostgreSQL access: SQLAlchemy Core on psycopg 3, one async engine per service, connecting
as the service's own role with its password read from a file.

Every unit of work, reads included, runs in `engine.begin()` and so ends in COMMIT. psycopg
prepares a statement on a connection after its fifth execution there and forgets every
prepared statement of the connection on ROLLBACK (and a read in `engine.connect()` ends in
one when the connection goes back to the pool): with reads rolled back, the pooled
connections kept losing their prepared statements and the money path's statements were
parsed and planned again on nearly every execution. Committing a read-only transaction
writes nothing and costs the same round trip as rolling it back.

Sessions plan every execution of a prepared statement for its values
(`plan_cache_mode = force_custom_plan`): a generic plan is costed for the table as it was
when first made and can scan a table that has since grown a thousandfold
(tests/integration/test_prepared_statements.py).

A unit of work that is one statement (a single-row read, say) runs instead on
:func:`autocommit`'s engine, the same pool without psycopg's transaction: PostgreSQL runs a
lone statement as its own transaction (atomic, one snapshot), so it costs one round trip
where BEGIN, the statement and COMMIT cost three, and nothing is rolled back."""

from __future__ import annotations

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


def create_engine(config: DatabaseConfig, application_name: str) -> AsyncEngine:
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
            # Plan each execution of a prepared statement for its values. PostgreSQL may
            # otherwise settle on one generic plan, costed for a table as it was when the
            # statement was prepared: prepared while the wallet's transactions were few, the
            # read of a batch's keys went on scanning the whole table as it grew (844 ms a
            # batch at 300,000 rows) until an ANALYZE replanned it. Planning costs far less
            # than that; psycopg's preparing still saves the parse.
            "options": "-c plan_cache_mode=force_custom_plan",
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
