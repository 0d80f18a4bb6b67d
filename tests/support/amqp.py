"""RabbitMQ housekeeping for tests, on the tests' own virtual host."""

from __future__ import annotations

import asyncio
import uuid

import aio_pika
from aio_pika.abc import AbstractRobustConnection

from casino.compliance.v1 import events_pb2
from services.runtime.outbox import declare_events_exchange
from tests.conftest import amqp_broker

PLAYER_EXCLUDED = "compliance.player.excluded"


async def connect() -> AbstractRobustConnection:
    """A connection to the tests' virtual host, logged in as the services are."""
    return await amqp_broker().connect()


async def publish_player_excluded(queue: str, player_id: str, event_id: str = "") -> str:
    """Publish a PlayerExcluded event as compliance's relay would (persistent, confirmed,
    mandatory) for the consumer of `queue`; returns its event id. The queue is declared
    and bound here too (idempotent, with the consumer's arguments), so the event cannot go
    unrouted if the consumer has not declared it yet."""
    event = events_pb2.PlayerExcluded(
        event_id=event_id or str(uuid.uuid4()),
        player_id=player_id,
        kind="SELF_EXCLUSION",
        indefinite=True,
    )
    connection = await connect()
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await declare_events_exchange(channel)
        declared = await channel.declare_queue(
            queue, durable=True, arguments={"x-dead-letter-exchange": f"{queue}.dead"}
        )
        await declared.bind(exchange, PLAYER_EXCLUDED)
        await exchange.publish(
            aio_pika.Message(
                event.SerializeToString(),
                type=event.DESCRIPTOR.full_name,
                message_id=event.event_id,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=PLAYER_EXCLUDED,
            mandatory=True,
        )
    return event.event_id


async def delete_queues(*names: str) -> None:
    connection = await connect()
    async with connection:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)


def delete_queues_now(*names: str) -> None:
    """For a synchronous fixture's teardown: on a loop of its own, leaving the thread's
    current event loop alone (asyncio.run would unset it, and every later synchronous fixture
    that makes a grpc.aio channel would then fail)."""
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(delete_queues(*names))
    finally:
        loop.close()
