"""Self-exclusion ends sessions: a consumer of compliance's PlayerExcluded events (durable
queue bound to `compliance.player.excluded` on casino.events) that revokes every session of
the player. Revoking is idempotent, so redeliveries are harmless; the event id is still
remembered for a day so that a late redelivery does not end sessions opened since.

This module is an entrypoint, like server.py: the generated event type stops here."""

from __future__ import annotations

import asyncio
import contextlib

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from google.protobuf.message import DecodeError
from prometheus_client import Counter
from redis.asyncio import Redis

from casino.compliance.v1 import events_pb2
from services.identity.sessions import Sessions
from services.runtime.logs import get_logger
from services.runtime.outbox import declare_events_exchange

EVENT_TYPE = "casino.compliance.v1.PlayerExcluded"
BINDING = "compliance.player.excluded"
_SEEN_PREFIX = "identity:excluded-event:"
_SEEN_SECONDS = 86_400

EVENTS = Counter(
    "casino_identity_exclusion_events_total",
    "PlayerExcluded events taken by identity, by outcome (revoked, duplicate, dead_lettered).",
    ["outcome"],
)

log = get_logger()


class Undeliverable(ValueError):
    pass


def decode(body: bytes, message_type: str | None) -> tuple[str, str]:
    """(event_id, player_id) of a PlayerExcluded message."""
    if message_type != EVENT_TYPE:
        raise Undeliverable(f"unexpected message type {message_type!r}")
    try:
        event = events_pb2.PlayerExcluded.FromString(body)
    except DecodeError as exc:
        raise Undeliverable(f"undecodable PlayerExcluded: {exc}") from None
    if not event.event_id or not event.player_id:
        raise Undeliverable("PlayerExcluded without event_id or player_id")
    return event.event_id, event.player_id


class ExclusionConsumer:
    """Background worker: the `identity.sessions` queue (dead letters in `<queue>.dead`)."""

    def __init__(
        self,
        sessions: Sessions,
        redis: Redis,
        amqp_url: str,
        queue: str,
        *,
        retry_seconds: float = 1.0,
    ) -> None:
        self._sessions = sessions
        self._redis = redis
        self._amqp_url = amqp_url
        self._queue_name = queue
        self._retry = retry_seconds
        self._connection: AbstractRobustConnection | None = None

    async def _consume(self) -> None:
        self._connection = await aio_pika.connect_robust(self._amqp_url, timeout=5)
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=16)
        events = await declare_events_exchange(channel)
        dead_name = f"{self._queue_name}.dead"
        dead = await channel.declare_exchange(dead_name, aio_pika.ExchangeType.FANOUT, durable=True)
        dead_queue = await channel.declare_queue(dead_name, durable=True)
        await dead_queue.bind(dead)
        queue = await channel.declare_queue(
            self._queue_name, durable=True, arguments={"x-dead-letter-exchange": dead_name}
        )
        await queue.bind(events, BINDING)
        log.info("exclusion events consuming", queue=self._queue_name)
        async with queue.iterator() as messages:
            async for message in messages:
                await self.handle(message)

    async def handle(self, message: AbstractIncomingMessage) -> None:
        try:
            event_id, player_id = decode(message.body, message.type)
        except Undeliverable as exc:
            log.error(
                "exclusion event dead-lettered", message_id=message.message_id, error=str(exc)
            )
            await message.reject(requeue=False)
            EVENTS.labels("dead_lettered").inc()
            return
        try:
            first = await self._redis.set(
                f"{_SEEN_PREFIX}{event_id}", "1", nx=True, ex=_SEEN_SECONDS
            )
            if first:
                revoked = await self._sessions.revoke_all(player_id)
                log.info("sessions revoked on exclusion", player_id=player_id, sessions=revoked)
        except Exception as exc:
            # Redis failed: forget the claim (best effort) and let the broker redeliver.
            with contextlib.suppress(Exception):
                await self._redis.delete(f"{_SEEN_PREFIX}{event_id}")
            log.warning("exclusion event not processed, will retry", error=str(exc))
            await asyncio.sleep(self._retry)
            await message.nack(requeue=True)
            return
        await message.ack()
        EVENTS.labels("revoked" if first else "duplicate").inc()

    async def run(self) -> None:
        backoff = self._retry
        while True:
            try:
                await self._consume()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("exclusion consumer stalled", error=str(exc) or type(exc).__name__)
                await self._reset()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def _reset(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
        self._connection = None

    async def close(self) -> None:
        await self._reset()
