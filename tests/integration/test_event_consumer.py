"""The event consumer's rule for failures, against the real RabbitMQ: a dependency away is
retried for as long as it takes; a message the handler keeps failing on goes to the
dead-letter queue after max_attempts, and the messages behind it are processed."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage

from services.runtime.consumer import EventConsumer
from services.runtime.outbox import declare_events_exchange
from tests.conftest import amqp_broker
from tests.support.amqp import connect, delete_queues


@pytest.fixture
async def names() -> AsyncIterator[tuple[str, str]]:
    suffix = uuid.uuid4().hex[:8]
    queue, routing_key = f"test.consumer.{suffix}", f"test.consumer.{suffix}"
    yield queue, routing_key
    await delete_queues(queue, f"{queue}.dead")


async def _publish(queue: str, routing_key: str, *bodies: bytes) -> None:
    connection = await connect()
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await declare_events_exchange(channel)
        # Declared and bound here too, with the consumer's arguments: nothing goes unrouted
        # if the consumer has not declared its queue yet.
        declared = await channel.declare_queue(
            queue, durable=True, arguments={"x-dead-letter-exchange": f"{queue}.dead"}
        )
        await declared.bind(exchange, routing_key)
        for body in bodies:
            await exchange.publish(
                aio_pika.Message(body, message_id=body.decode()), routing_key=routing_key
            )


async def _dead_lettered(queue: str) -> list[bytes]:
    connection = await connect()
    async with connection:
        channel = await connection.channel()
        dead = await channel.declare_queue(f"{queue}.dead", durable=True)
        found = []
        while (message := await dead.get(fail=False)) is not None:
            found.append(message.body)
            await message.ack()
        return found


async def _until(condition, seconds: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


async def test_a_poison_message_is_dead_lettered_and_the_queue_goes_on(
    names: tuple[str, str],
) -> None:
    queue, routing_key = names
    attempts: dict[bytes, int] = {}
    processed: list[bytes] = []

    async def handler(message: AbstractIncomingMessage) -> str:
        attempts[message.body] = attempts.get(message.body, 0) + 1
        if message.body == b"poison":
            raise KeyError("a defect this message trips")
        if message.body == b"outage" and attempts[message.body] <= 8:
            raise ConnectionError("the database is away")  # more often than max_attempts
        processed.append(message.body)
        return "processed"

    consumer = EventConsumer(
        handler, amqp_broker(), queue, [routing_key], retry_seconds=0.01, max_attempts=3
    )
    worker = asyncio.create_task(consumer.run())
    try:
        await _publish(queue, routing_key, b"poison", b"outage", b"fine")
        await _until(lambda: {b"outage", b"fine"} <= set(processed))
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
        await consumer.close()
    assert attempts[b"poison"] == 3
    assert attempts[b"outage"] == 9  # an outage is waited out, never dead-lettered
    assert await _dead_lettered(queue) == [b"poison"]
