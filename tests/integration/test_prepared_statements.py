"""A service's pooled connections keep their prepared statements between units of work.

psycopg prepares a statement on a connection after its fifth execution there, and forgets
all of that connection's prepared statements on ROLLBACK. The runtime's engine and its
unit-of-work rule (reads too run in `engine.begin()`, see services/runtime/db.py) are what
keep the money path's statements prepared; this checks them together, on the server."""

from __future__ import annotations

from sqlalchemy import text

from services.runtime import db
from services.runtime.config import DatabaseConfig
from tests.conftest import SECRETS, database_url

READ = text("SELECT posted FROM wallet.accounts WHERE player_id = :p AND currency = :c")
PREPARED = text(
    "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE '%wallet.accounts%'"
)


async def _prepared_after_reads(test_database: str, *, commit: bool) -> int:
    engine = db.create_engine(
        DatabaseConfig(
            url=database_url("wallet"),
            password_file=SECRETS / "postgres" / "casino_wallet",
            pool_size=1,  # one pooled connection: every unit of work gets the same one
        ),
        "test",
    )
    try:
        for _ in range(8):
            unit = engine.begin() if commit else engine.connect()
            async with unit as conn:
                await conn.execute(READ, {"p": "nobody", "c": "EUR"})
        async with engine.begin() as conn:
            return int((await conn.execute(PREPARED)).scalar_one())
    finally:
        await engine.dispose()


async def test_reads_in_committed_units_of_work_stay_prepared(test_database: str) -> None:
    assert await _prepared_after_reads(test_database, commit=True) == 1


async def test_reads_left_to_roll_back_lose_them(test_database: str) -> None:
    # Why the rule exists: the same reads, each rolled back when the connection is returned.
    assert await _prepared_after_reads(test_database, commit=False) == 0
