"""RabbitMQ housekeeping for tests, on the tests' own virtual host."""

from __future__ import annotations

import asyncio

import aio_pika

from tests.conftest import TEST_AMQP_URL


async def delete_queues(*names: str) -> None:
    connection = await aio_pika.connect_robust(TEST_AMQP_URL)
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
