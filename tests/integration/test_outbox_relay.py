"""The outbox relay marks an event published only when the broker took it: a message the
broker returns (unroutable, its catch-all exchange gone) fails the batch and stays in the
outbox, to go out once the broker can route it. Real PostgreSQL and RabbitMQ."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.runtime.outbox import (
    UNROUTED,
    Event,
    OutboxRelay,
    declare_events_exchange,
    enqueue,
    outbox_ddl,
)
from tests.conftest import amqp_broker
from tests.support.amqp import connect


@pytest.fixture
async def scratch(test_database: str) -> AsyncIterator[tuple[AsyncEngine, str]]:
    """An outbox of its own in the test database (the services' outboxes hold other tests'
    events), as the superuser."""
    engine = create_async_engine(f"postgresql+psycopg://postgres@127.0.0.1:5432/{test_database}")
    schema = f"outbox_test_{uuid.uuid4().hex[:8]}"
    async with engine.begin() as conn:
        await conn.execute(text(f"CREATE SCHEMA {schema}"))
        for statement in outbox_ddl(schema, "postgres"):
            await conn.execute(text(statement))
    yield engine, schema
    async with engine.begin() as conn:
        await conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    await engine.dispose()


async def _unpublished(engine: AsyncEngine, schema: str) -> int:
    async with engine.begin() as conn:
        query = f"SELECT count(*) FROM {schema}.outbox WHERE publish_time IS NULL"
        return int((await conn.execute(text(query))).scalar_one())


async def test_a_returned_event_is_not_marked_published(
    scratch: tuple[AsyncEngine, str],
) -> None:
    engine, schema = scratch
    relay = OutboxRelay(engine, schema, amqp_broker())
    admin = await connect()
    try:
        assert await relay.publish_batch() == 0  # connected; the exchanges are declared
        async with engine.begin() as conn:
            event = Event("test.unbound.key", "test.Event", b"x", "p1", uuid.uuid4())
            await enqueue(conn, schema, [event])
        channel = await admin.channel()
        await channel.exchange_delete(UNROUTED)  # nothing left to catch the unroutable
        with pytest.raises(aio_pika.exceptions.DeliveryError):
            await relay.publish_batch()
        assert await _unpublished(engine, schema) == 1

        await declare_events_exchange(channel)  # the broker can route it again
        assert await relay.publish_batch() == 1
        assert await _unpublished(engine, schema) == 0
    finally:
        await relay.close()
        await admin.close()


async def test_a_batch_that_is_not_full_counts_what_is_left(
    scratch: tuple[AsyncEngine, str],
) -> None:
    # The PENDING gauge: after a batch that took everything it could claim, the events still
    # unpublished, here two that another relay's open transaction holds (SKIP LOCKED).
    engine, schema = scratch
    relay = OutboxRelay(engine, schema, amqp_broker(), batch_size=10)
    async with engine.begin() as conn:
        events = [Event("test.pending", "test.Event", b"x", "p1", uuid.uuid4()) for _ in range(5)]
        await enqueue(conn, schema, events)
    other = await engine.connect()
    try:
        await other.execute(text(f"SELECT id FROM {schema}.outbox ORDER BY id LIMIT 2 FOR UPDATE"))
        assert await relay.publish_batch() == 3
        assert REGISTRY.get_sample_value("casino_outbox_pending") == 2
        await other.rollback()
        assert await relay.publish_batch() == 2
        assert REGISTRY.get_sample_value("casino_outbox_pending") == 0
        assert await _unpublished(engine, schema) == 0
    finally:
        await other.close()
        await relay.close()
