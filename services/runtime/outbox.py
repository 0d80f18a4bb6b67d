"""The transactional outbox: events written in the same transaction as the change they
describe, then published to RabbitMQ by a relay, at least once.

A service's migration creates `<schema>.outbox` with `outbox_ddl`; its store calls
`enqueue` inside the posting transaction (or writes `insert_events` as part of its own
statement); `OutboxRelay` runs beside the server and moves
rows to the `casino.events` topic exchange (persistent messages, publisher confirms,
mandatory routing), marking them published only after the broker confirmed. A relay killed
at any point loses nothing: unconfirmed rows are published again, and consumers
deduplicate by the message id (the event id). Published rows are kept for a retention
window (for tracing a delivery) and then deleted by a `services.runtime.retention.Pruner`
calling `<schema>.prune_outbox`, which a migration creates (`outbox_retention_ddl`): the
service role can delete only published rows, and only through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import aio_pika
from aio_pika.abc import AbstractRobustConnection
from prometheus_client import Counter, Gauge
from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.runtime import db
from services.runtime.broker import Broker
from services.runtime.logs import get_logger
from services.runtime.retention import Pruner, prune_function_ddl

EXCHANGE = "casino.events"
# Messages no queue is bound for land here instead of vanishing; its depth is an alert.
UNROUTED = "casino.events.unrouted"
CONTENT_TYPE = "application/x-protobuf"

PUBLISHED = Counter("casino_outbox_published_total", "Outbox events confirmed by the broker.")
PENDING = Gauge("casino_outbox_pending", "Outbox events not yet confirmed by the broker.")

log = get_logger()


def outbox_ddl(schema: str, role: str) -> list[str]:
    """Statements creating the outbox of a service schema (for its migration)."""
    return [
        f"""
        CREATE TABLE {schema}.outbox (
            id            bigint GENERATED ALWAYS AS IDENTITY,
            -- Sharding key of the service's data (the player for the wallet), so the outbox
            -- co-locates with the rows written in the same transaction.
            shard_key     text        NOT NULL,
            event_id      uuid        NOT NULL,
            routing_key   text        NOT NULL,
            message_type  text        NOT NULL,
            payload       bytea       NOT NULL,
            create_time   timestamptz NOT NULL DEFAULT now(),
            publish_time  timestamptz,
            PRIMARY KEY (shard_key, id)
        )
        """,
        f"CREATE INDEX outbox_unpublished ON {schema}.outbox (id) WHERE publish_time IS NULL",
        f"GRANT SELECT, INSERT ON {schema}.outbox TO {role}",
        f"GRANT UPDATE (publish_time) ON {schema}.outbox TO {role}",
    ]


def outbox_retention_ddl(schema: str, role: str) -> list[str]:
    """Statements letting a Pruner delete published rows (for a migration after
    `outbox_ddl`): an index on insertion time and `<schema>.prune_outbox`, which deletes only
    published rows older than `keep`. The service role gets EXECUTE on it, never DELETE on
    the table: it cannot drop an event that was not delivered."""
    return [
        f"CREATE INDEX outbox_create_time ON {schema}.outbox (create_time)",
        *prune_function_ddl(
            schema,
            "prune_outbox",
            "outbox",
            key="shard_key, id",
            done="create_time < now() - keep AND publish_time IS NOT NULL",
            order_by="create_time",
            role=role,
        ),
    ]


@dataclass(frozen=True)
class Event:
    routing_key: str
    message_type: str
    payload: bytes
    shard_key: str
    event_id: uuid.UUID


_EVENT_COLUMNS = (
    ("shard_key", "text"),
    ("event_id", "uuid"),
    ("routing_key", "text"),
    ("message_type", "text"),
    ("payload", "bytea"),
)


def insert_events(schema: str, param: str) -> str:
    """SQL inserting the events of the JSON document bound to `param` (`events_document`)
    into `schema`.outbox, in the document's order (a player's events are published in the
    order written): a statement of its own (`enqueue`), or the last part of a writer's
    statement, so that a batch's events cost no round trip of their own."""
    return (
        f"INSERT INTO {schema}.outbox ({db.column_names(_EVENT_COLUMNS)})"
        f" SELECT {db.json_row_values(_EVENT_COLUMNS)} FROM {db.json_rows(param, _EVENT_COLUMNS)}"
    )


def events_document(events: Sequence[Event]) -> str:
    """The events as the JSON document `insert_events` reads."""
    return json.dumps(
        [
            {
                "shard_key": e.shard_key,
                "event_id": str(e.event_id),
                "routing_key": e.routing_key,
                "message_type": e.message_type,
                "payload": e.payload.hex(),
            }
            for e in events
        ]
    )


async def enqueue(conn: AsyncConnection, schema: str, events: Sequence[Event]) -> None:
    """Write the events in the caller's transaction: each exists if and only if the change
    it describes does."""
    if not events:
        return
    await conn.execute(_enqueue_statement(schema), {"events": events_document(events)})


@functools.cache
def _enqueue_statement(schema: str) -> TextClause:
    return text(insert_events(schema, "events"))


async def declare_events_exchange(
    channel: aio_pika.abc.AbstractChannel,
) -> aio_pika.abc.AbstractExchange:
    """The platform's event exchange, with an alternate exchange catching the unroutable."""
    unrouted = await channel.declare_exchange(UNROUTED, aio_pika.ExchangeType.FANOUT, durable=True)
    queue = await channel.declare_queue(UNROUTED, durable=True)
    await queue.bind(unrouted)
    return await channel.declare_exchange(
        EXCHANGE,
        aio_pika.ExchangeType.TOPIC,
        durable=True,
        arguments={"alternate-exchange": UNROUTED},
    )


class OutboxRelay:
    def __init__(
        self,
        engine: AsyncEngine,
        schema: str,
        broker: Broker,
        *,
        batch_size: int = 200,
        idle_seconds: float = 0.05,
        publish_timeout_seconds: float = 30.0,
    ) -> None:
        self._pipelined = db.autocommit(engine)
        self._schema = schema
        self._broker = broker
        self._batch_size = batch_size
        self._idle = idle_seconds
        # A broker that stops confirming (blocked on memory or disk) must not hold the
        # batch's row locks and transaction open for ever: the batch fails and is retried.
        self._publish_timeout = publish_timeout_seconds
        self._connection: AbstractRobustConnection | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None

    async def _exchange_ready(self) -> aio_pika.abc.AbstractExchange:
        if self._exchange is None:
            self._connection = await self._broker.connect()
            # A message the broker returns (unroutable: the catch-all exchange gone) fails
            # its publish, so its row is not marked published; aio-pika's default is to
            # resolve a return as if it had been delivered.
            channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
            self._exchange = await declare_events_exchange(channel)
        return self._exchange

    async def publish_batch(self) -> int:
        """Publish up to one batch; returns how many rows were confirmed and marked. A batch
        that was not full also counts what is left to publish (the PENDING gauge). One
        pipelined transaction: the claim goes out with BEGIN, the marking and the count with
        COMMIT, so a cycle costs two round trips to the database (seven as three statements
        and a separate count)."""
        exchange = await self._exchange_ready()
        statements = _relay_statements(self._schema)
        async with db.pipelined_transaction(self._pipelined) as pipeline:
            rows = await (
                await pipeline.queue(statements.claim, {"n": self._batch_size}, list)
            ).result()
            if rows:
                # Confirms are awaited together: the broker acknowledges the batch, not one
                # message per round trip. Any failure aborts the transaction: nothing is
                # marked.
                async with asyncio.timeout(self._publish_timeout):
                    await asyncio.gather(
                        *(
                            exchange.publish(
                                aio_pika.Message(
                                    body=row.payload,
                                    message_id=str(row.event_id),
                                    type=row.message_type,
                                    content_type=CONTENT_TYPE,
                                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                                ),
                                routing_key=row.routing_key,
                                mandatory=True,
                            )
                            for row in rows
                        )
                    )
                await pipeline.queue(
                    statements.mark,
                    {"keys": [r.shard_key for r in rows], "ids": [r.id for r in rows]},
                    lambda _: None,
                )
            left = None
            if len(rows) < self._batch_size:
                left = await pipeline.queue(statements.left, {}, lambda found: int(found[0][0]))
        if left is not None:
            PENDING.set(await left.result())
        PUBLISHED.inc(len(rows))
        return len(rows)

    async def run(self) -> None:
        backoff = self._idle
        while True:
            try:
                published = await self.publish_batch()
                backoff = self._idle
                if published < self._batch_size:
                    await asyncio.sleep(self._idle)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Broker or database away: the rows stay in the outbox; postings go on.
                log.warning("outbox relay stalled", error=self._broker.describe(exc))
                await self._reset()
                backoff = min(backoff * 2, 5.0)
                await asyncio.sleep(backoff)

    async def _reset(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
        self._connection = None
        self._exchange = None

    async def close(self) -> None:
        await self._reset()


class _RelayStatements(NamedTuple):
    claim: TextClause
    mark: TextClause
    left: TextClause


@functools.cache
def _relay_statements(schema: str) -> _RelayStatements:
    return _RelayStatements(
        claim=text(
            "SELECT shard_key, id, event_id, routing_key, message_type, payload"
            f" FROM {schema}.outbox WHERE publish_time IS NULL"
            " ORDER BY id LIMIT :n FOR UPDATE SKIP LOCKED"
        ),
        mark=text(
            f"UPDATE {schema}.outbox SET publish_time = now()"
            " WHERE (shard_key, id) IN (SELECT unnest(CAST(:keys AS text[])),"
            " unnest(CAST(:ids AS bigint[])))"
        ),
        left=text(f"SELECT count(*) FROM {schema}.outbox WHERE publish_time IS NULL"),
    )


def outbox_workers(
    engine: AsyncEngine,
    schema: str,
    broker: Broker,
    retention_hours: float,
    *,
    batch_size: int = 200,
) -> tuple[OutboxRelay, Pruner]:
    """The background workers of a service's outbox: the relay (publishing up to
    `batch_size` events per confirmed batch), and the pruner of what it published (for
    ServiceRuntime.add_background)."""
    return (
        OutboxRelay(engine, schema, broker, batch_size=batch_size),
        Pruner(engine, f"{schema}.prune_outbox", dt.timedelta(hours=retention_hours)),
    )
