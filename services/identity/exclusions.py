"""Self-exclusion ends sessions: a consumer of compliance's PlayerExcluded events (durable
queue bound to `compliance.player.excluded` on casino.events) that revokes every session of
the player. Revoking is idempotent, so redeliveries are harmless; the event id is still
remembered for a day so that a late redelivery does not end sessions opened since.

This module is an entrypoint, like server.py: the generated event type stops here."""

from __future__ import annotations

import contextlib

from aio_pika.abc import AbstractIncomingMessage
from google.protobuf.message import DecodeError
from redis.asyncio import Redis

from casino.compliance.v1 import events_pb2
from services.identity.sessions import Sessions
from services.runtime.consumer import Handler, Undeliverable
from services.runtime.logs import get_logger

EVENT_TYPE = "casino.compliance.v1.PlayerExcluded"
BINDING = "compliance.player.excluded"
_SEEN_PREFIX = "identity:excluded-event:"
_SEEN_SECONDS = 86_400


log = get_logger()


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


def handler(sessions: Sessions, redis: Redis) -> Handler:
    """What the runtime's EventConsumer does with each PlayerExcluded event."""

    async def handle(message: AbstractIncomingMessage) -> str:
        event_id, player_id = decode(message.body, message.type)
        seen = f"{_SEEN_PREFIX}{event_id}"
        try:
            first = await redis.set(seen, "1", nx=True, ex=_SEEN_SECONDS)
            if first:
                revoked = await sessions.revoke_all(player_id)
                log.info("sessions revoked on exclusion", player_id=player_id, sessions=revoked)
        except Exception:
            # Not done: forget the claim (best effort) so the redelivery does it.
            with contextlib.suppress(Exception):
                await redis.delete(seen)
            raise
        return "revoked" if first else "duplicate"

    return handle
