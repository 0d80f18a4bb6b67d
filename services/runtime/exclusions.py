"""Reacting to self-exclusion: compliance publishes PlayerExcluded (routing key
`compliance.player.excluded` on casino.events) when a player excludes themselves or takes a
time-out, and every service holding something of the player's that must close (identity's
sessions, the games' sessions) consumes it from a durable queue of its own.

The reaction is idempotent, so redeliveries are harmless; the event id is also remembered
for a day, so that a late redelivery does not close what the player opened since (after a
time-out ran out)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aio_pika.abc import AbstractIncomingMessage
from redis.asyncio import Redis

from casino.compliance.v1 import events_pb2
from services.runtime.broker import Broker
from services.runtime.consumer import EventConsumer, Undeliverable, decode_event, once_per_event
from services.runtime.logs import get_logger

BINDING = "compliance.player.excluded"
_SEEN_SECONDS = 86_400

log = get_logger()

# What a service does for the excluded player; returns how many things it closed.
Close = Callable[[str], Awaitable[int]]


def exclusion_consumer(
    close: Close, *, what: str, redis: Redis, seen_prefix: str, broker: Broker, queue: str
) -> EventConsumer:
    """A background worker running `close(player_id)` once per PlayerExcluded event;
    `what` names the outcome ("sessions revoked") in logs and metrics, `seen_prefix` the
    service's Redis keys remembering event ids."""

    async def handle(message: AbstractIncomingMessage) -> str:
        event = decode_event(message, events_pb2.PlayerExcluded)
        if not event.event_id or not event.player_id:
            raise Undeliverable("PlayerExcluded without event_id or player_id")

        async def act() -> None:
            closed = await close(event.player_id)
            log.info(f"{what} on exclusion", player_id=event.player_id, count=closed)

        first = await once_per_event(redis, f"{seen_prefix}{event.event_id}", _SEEN_SECONDS, act)
        return what.replace(" ", "_") if first else "duplicate"

    return EventConsumer(handle, broker, queue, [BINDING], prefetch=16)
