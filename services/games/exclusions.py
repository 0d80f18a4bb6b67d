"""Self-exclusion closes the games: a consumer of compliance's PlayerExcluded events (durable
queue bound to `compliance.player.excluded` on casino.events) that ends every live game
session of the player, so their next round is refused as SESSION_ENDED at once, whatever
the client does. (Their bets are refused by compliance's check in any case; this closes the
door they had open.) Ending is idempotent; the event id is still remembered for a day so
that a late redelivery does not end sessions opened after the exclusion ran out.

This module is an entrypoint, like server.py: the generated event type stops here."""

from __future__ import annotations

from aio_pika.abc import AbstractIncomingMessage
from redis.asyncio import Redis

from casino.compliance.v1 import events_pb2
from services.games.sessions import Sessions
from services.runtime.consumer import Handler, Undeliverable, decode_event, once_per_event
from services.runtime.logs import get_logger

BINDING = "compliance.player.excluded"
_SEEN_PREFIX = "games:excluded-event:"
_SEEN_SECONDS = 86_400

log = get_logger()


def handler(sessions: Sessions, redis: Redis) -> Handler:
    """What the runtime's EventConsumer does with each PlayerExcluded event."""

    async def handle(message: AbstractIncomingMessage) -> str:
        event = decode_event(message, events_pb2.PlayerExcluded)
        if not event.event_id or not event.player_id:
            raise Undeliverable("PlayerExcluded without event_id or player_id")

        async def end_sessions() -> None:
            ended = await sessions.end_all(event.player_id)
            log.info("game sessions ended on exclusion", player_id=event.player_id, sessions=ended)

        seen = f"{_SEEN_PREFIX}{event.event_id}"
        first = await once_per_event(redis, seen, _SEEN_SECONDS, end_sessions)
        return "ended" if first else "duplicate"

    return handle
