"""The outbox keeps a bounded window: published events older than the retention are pruned
(a Pruner calling wallet.prune_outbox, as the wallet runs it beside its relay), undelivered
events never are, and the service role cannot delete rows itself."""

from __future__ import annotations

import datetime as dt
import uuid

import psycopg
import pytest

from services.runtime import db
from services.runtime.config import DatabaseConfig
from services.runtime.process import ServiceProcess
from services.runtime.retention import Pruner
from tests.conftest import SECRETS, database_url
from tests.wallet.conftest import admin_dsn, wallet_role_dsn


def _insert(conn: psycopg.Connection, shard: str, age: dt.timedelta, published: bool) -> int:
    row = conn.execute(
        "INSERT INTO wallet.outbox (shard_key, event_id, routing_key, message_type, payload,"
        " create_time, publish_time) VALUES (%s, %s, 'test.event', 'Test', '\\x00',"
        " now() - %s, CASE WHEN %s THEN now() - %s END) RETURNING id",
        (shard, uuid.uuid4(), age, published, age),
    ).fetchone()
    assert row is not None
    return int(row[0])


async def test_only_published_events_past_retention_are_pruned(
    wallet: ServiceProcess,  # a running wallet: its schema is migrated
) -> None:
    shard = f"retention-{uuid.uuid4().hex[:8]}"
    day = dt.timedelta(days=1)
    with psycopg.connect(admin_dsn(), autocommit=True) as conn:
        old_published = [_insert(conn, shard, 2 * day, True) for _ in range(3)]
        old_undelivered = _insert(conn, shard, 2 * day, False)
        recent_published = _insert(conn, shard, dt.timedelta(hours=1), True)

    engine = db.create_engine(
        DatabaseConfig(
            url=database_url("wallet"), password_file=SECRETS / "postgres" / "casino_wallet"
        ),
        "test",
    )
    pruner = Pruner(engine, "wallet.prune_outbox", day)
    try:
        assert await pruner.prune() >= len(old_published)
    finally:
        await engine.dispose()

    with psycopg.connect(admin_dsn()) as conn:
        left = {
            row[0]
            for row in conn.execute("SELECT id FROM wallet.outbox WHERE shard_key = %s", (shard,))
        }
        assert left == {old_undelivered, recent_published}
        conn.execute("DELETE FROM wallet.outbox WHERE shard_key = %s", (shard,))


def test_the_wallet_role_cannot_delete_outbox_rows_itself(wallet: ServiceProcess) -> None:
    with (
        psycopg.connect(wallet_role_dsn()) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("DELETE FROM wallet.outbox WHERE shard_key = 'nobody'")
