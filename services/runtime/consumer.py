"""Consuming the platform's events: one durable queue bound to the `casino.events` topic
exchange, a dead-letter queue beside it (`<queue>.dead`), a bounded prefetch, and one rule
for every message:

- the handler returns an outcome (counted) -> ack, after the handler's own commit;
- it raises Undeliverable (a message that can never be processed: wrong type, undecodable,
  impossible to judge) -> rejected to the dead-letter queue, logged;
- it raises anything else -> wait, then nack with requeue: the broker delivers it again.
  Handlers are idempotent by event id, so at-least-once is safe. A dependency away (the
  database, Redis, the network) is retried for as long as it takes; any other failure (a
  defect, data the handler chokes on) only `max_attempts` times in this process, then the
  message goes to the dead-letter queue, so one poison message cannot stall a queue forever.

The broker going away stalls nothing but this worker: it reconnects with backoff while the
service keeps answering from the state it has.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import aio_pika
import sqlalchemy.exc
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from google.protobuf.message import DecodeError, Message
from prometheus_client import Counter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.runtime.broker import Broker
from services.runtime.errors import DependencyUnavailable
from services.runtime.logs import get_logger
from services.runtime.outbox import declare_events_exchange

log = get_logger()

EVENTS_CONSUMED = Counter(
    "casino_events_consumed_total",
    "Events taken from a queue, by queue and outcome (dead_lettered, retried, or the"
    " handler's own outcome such as processed or duplicate).",
    ["queue", "outcome"],
)

Handler = Callable[[AbstractIncomingMessage], Awaitable[str]]


class Undeliverable(ValueError):
    """A message that can never be processed: it goes to the dead-letter queue."""


E = TypeVar("E", bound=Message)


def decode_event(message: AbstractIncomingMessage, event_type: type[E]) -> E:
    """The contract event a message carries (its AMQP type names the message), or
    Undeliverable: another type, or bytes that do not parse."""
    expected = event_type.DESCRIPTOR.full_name
    if message.type != expected:
        raise Undeliverable(f"unexpected message type {message.type!r}, not {expected}")
    try:
        return event_type.FromString(message.body)
    except DecodeError as exc:
        raise Undeliverable(f"undecodable {event_type.DESCRIPTOR.name}: {exc}") from None


async def once_per_event(
    redis: Redis, key: str, seconds: int, action: Callable[[], Awaitable[object]]
) -> bool:
    """Run `action` unless it already ran for `key` (naming an event id) in the last
    `seconds`; True if it ran. For effects that must not be repeated by a late redelivery
    (ending the sessions a player opened since). The event is marked done only after the
    action completed: an action cancelled, killed or failing leaves no mark, so the broker's
    redelivery runs it (the action must be idempotent: two deliveries at once may both)."""
    if await redis.exists(key):
        return False
    await action()
    await redis.set(key, "1", ex=seconds)
    return True


class EventConsumer:
    """A background worker (ServiceRuntime.add_background) feeding `handler` the events
    routed to `queue` by `bindings` (topic patterns such as `wallet.transaction.#`)."""

    def __init__(
        self,
        handler: Handler,
        broker: Broker,
        queue: str,
        bindings: Sequence[str],
        *,
        prefetch: int = 32,
        retry_seconds: float = 1.0,
        max_attempts: int = 5,
    ) -> None:
        self._handler = handler
        self._broker = broker
        self.queue = queue
        self._bindings = list(bindings)
        self._prefetch = prefetch
        self._retry = retry_seconds
        self._max_attempts = max_attempts
        # Failed attempts per message id (not dependency outages), most recent last.
        self._failures: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._connection: AbstractRobustConnection | None = None

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.queue}.dead"

    async def run(self) -> None:
        backoff = self._retry
        while True:
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "event consumer stalled", queue=self.queue, error=self._broker.describe(exc)
                )
                await self._reset()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def close(self) -> None:
        await self._reset()

    async def _reset(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
        self._connection = None

    async def _consume(self) -> None:
        self._connection = await self._broker.connect()
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=self._prefetch)
        events = await declare_events_exchange(channel)
        dead = await channel.declare_exchange(
            self.dead_letter_queue, aio_pika.ExchangeType.FANOUT, durable=True
        )
        dead_queue = await channel.declare_queue(self.dead_letter_queue, durable=True)
        await dead_queue.bind(dead)
        queue = await channel.declare_queue(
            self.queue, durable=True, arguments={"x-dead-letter-exchange": self.dead_letter_queue}
        )
        for binding in self._bindings:
            await queue.bind(events, binding)
        log.info("events consuming", queue=self.queue, bindings=self._bindings)
        async with queue.iterator() as messages:
            async for message in messages:
                await self.deliver(message)

    async def deliver(self, message: AbstractIncomingMessage) -> None:
        try:
            outcome = await self._handler(message)
        except Undeliverable as exc:
            log.error(
                "event dead-lettered",
                queue=self.queue,
                message_id=message.message_id,
                routing_key=message.routing_key,
                error=str(exc),
            )
            await message.reject(requeue=False)
            EVENTS_CONSUMED.labels(self.queue, "dead_lettered").inc()
            return
        except Exception as exc:
            # Nothing was committed: back off, then let the broker deliver it again, unless
            # the handler itself keeps failing on this message.
            if not isinstance(exc, _DEPENDENCY_AWAY) and self._failed_again(message):
                log.error(
                    "event dead-lettered after repeated failures",
                    queue=self.queue,
                    message_id=message.message_id,
                    routing_key=message.routing_key,
                    attempts=self._max_attempts,
                    error=str(exc) or type(exc).__name__,
                )
                await message.reject(requeue=False)
                EVENTS_CONSUMED.labels(self.queue, "dead_lettered").inc()
                return
            log.warning(
                "event not processed, will retry",
                queue=self.queue,
                message_id=message.message_id,
                error=str(exc) or type(exc).__name__,
            )
            await asyncio.sleep(self._retry)
            await message.nack(requeue=True)
            EVENTS_CONSUMED.labels(self.queue, "retried").inc()
            return
        self._failures.pop(message.message_id or "", None)
        await message.ack()
        EVENTS_CONSUMED.labels(self.queue, outcome).inc()

    def _failed_again(self, message: AbstractIncomingMessage) -> bool:
        """Count a failure of the handler on this message; True once it reached
        max_attempts (the count is forgotten then)."""
        key = message.message_id or message.body.hex()[:64]
        count = self._failures.pop(key, 0) + 1
        if count >= self._max_attempts:
            return True
        self._failures[key] = count
        while len(self._failures) > _FAILURES_KEPT:
            self._failures.popitem(last=False)
        return False


# Failures that say a dependency is away, not that the message is bad: retried without limit.
_DEPENDENCY_AWAY = (
    OSError,
    TimeoutError,
    RedisError,
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    DependencyUnavailable,
)
# Messages whose failures are counted at once (older ones are forgotten first).
_FAILURES_KEPT = 10_000
