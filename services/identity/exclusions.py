"""Self-exclusion ends sessions: a consumer of compliance's PlayerExcluded events (durable
queue bound to `compliance.player.excluded` on casino.events) that revokes every session of
the player. Revoking is idempotent, so redeliveries are harmless; the event id is still
remembered for a day so that a late redelivery does not end sessions opened since.

This module is an entrypoint, like server.py: the generated event type stops here."""

from __future__ import annotations

from aio_pika.abc import AbstractIncomingMessage
from redis.asyncio import Redis

from casino.compliance.v1 import events_pb2
from services.identity.sessions import Sessions
from services.runtime.consumer import Handler, Undeliverable, decode_event, once_per_event
from services.runtime.logs import get_logger

BINDING = "compliance.player.excluded"
_SEEN_PREFIX = "identity:excluded-event:"
_SEEN_SECONDS = 86_400


log = get_logger()


def handler(sessions: Sessions, redis: Redis) -> Handler:
    """What the runtime's EventConsumer does with each PlayerExcluded event."""

    async def handle(message: AbstractIncomingMessage) -> str:
        event = decode_event(message, events_pb2.PlayerExcluded)
        if not event.event_id or not event.player_id:
            raise Undeliverable("PlayerExcluded without event_id or player_id")

        async def revoke() -> None:
            revoked = await sessions.revoke_all(event.player_id)
            log.info("sessions revoked on exclusion", player_id=event.player_id, sessions=revoked)

        first = await once_per_event(
            redis, f"{_SEEN_PREFIX}{event.event_id}", _SEEN_SECONDS, revoke
        )
        return "revoked" if first else "duplicate"

    return handle
