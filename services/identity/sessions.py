"""Login sessions in Redis: opaque refresh tokens grouped in families, rotated on every use,
with reuse detection, and the per-player "revoked before" second the edge checks.

Keys (all expire on their own; nothing here is the source of truth for money):
  identity:refresh:<sha256 of token>  hash player, sid, state (active|used), issued_at
  identity:session:<sid>              hash player, created: the family; gone = revoked
  identity:player-sessions:<player>   set of the player's live sids (for logout-all)
  identity:revoked-before:<player>    unix second; access tokens with an older iat are
                                      refused by the edge (agreed key, read per request)

Refresh tokens are stored only as their SHA-256: a Redis dump yields nothing usable. A spent
token stays (state used) for the rest of its lifetime so that presenting it again is
recognised as reuse, and revokes its family.

Revocation is to the second (JWT iat is whole seconds): revoking sets revoked-before to the
*next* second, so every token issued up to now is older. A token issued in that same second
after the revocation would be refused too, so issuing waits for the second to turn (at most
one second, only right after that player's revocation) instead of minting a dead token.

Both seconds are Redis's clock (TIME), never a replica's: the cutoff is taken inside the
revoking script, a token's iat in the round trip that reads the cutoff. Replicas whose clocks
disagree would otherwise mint tokens dated after a logout made on another replica (accepted
by the edge after it), or set a cutoff older than tokens already answered.

Waiting makes room for a race: a revocation landing between a rotation (or a login's open)
and the signing would be waited out, and a token signed for the session it just ended. So a
signed token is answered only if `standing` finds its session still there afterwards."""

from __future__ import annotations

import asyncio
import enum
import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis

from services.runtime.errors import Code, DomainError

REFRESH_PREFIX = "identity:refresh:"
SESSION_PREFIX = "identity:session:"
PLAYER_SESSIONS_PREFIX = "identity:player-sessions:"
REVOKED_BEFORE_PREFIX = "identity:revoked-before:"


class RefreshTokenInvalid(DomainError):
    code = Code.UNAUTHENTICATED

    def __init__(self) -> None:
        super().__init__(
            "REFRESH_TOKEN_INVALID",
            "the refresh token is unknown, expired or revoked; log in again",
        )


class RefreshTokenReused(DomainError):
    code = Code.UNAUTHENTICATED

    def __init__(self) -> None:
        super().__init__(
            "REFRESH_TOKEN_REUSED",
            "this refresh token was already used; the session is revoked, log in again",
        )


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def revoked_before_key(player_id: str) -> str:
    return f"{REVOKED_BEFORE_PREFIX}{player_id}"


# KEYS: old token, new token, session, player's sessions. ARGV: sid, player, ttl, now.
# Atomic, so two concurrent refreshes with one token cannot both succeed.
_ROTATE = """
local sid = redis.call('HGET', KEYS[1], 'sid')
if (not sid) or sid ~= ARGV[1] or redis.call('EXISTS', KEYS[3]) == 0 then
  return 'invalid'
end
if redis.call('HGET', KEYS[1], 'state') ~= 'active' then
  redis.call('DEL', KEYS[3])
  redis.call('SREM', KEYS[4], ARGV[1])
  return 'reused'
end
redis.call('HSET', KEYS[1], 'state', 'used', 'used_at', ARGV[4])
redis.call('HSET', KEYS[2], 'player', ARGV[2], 'sid', ARGV[1], 'state', 'active',
           'issued_at', ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[3])
redis.call('EXPIRE', KEYS[4], ARGV[3])
return 'rotated'
"""

# The cutoff: the next whole second of Redis's clock, so every access token issued until now
# (dated by the same clock) has an older iat. TIME in a script that then writes is allowed
# since Redis 5 (effects are replicated, not the script).
_CUTOFF = """
local cutoff = tonumber(redis.call('TIME')[1]) + 1
"""

# KEYS: player's sessions, revoked-before. ARGV: session key prefix, the cutoff's ttl.
# Ends every family of the player and moves revoked-before forward (never back).
_REVOKE_ALL = (
    _CUTOFF
    + """
local sids = redis.call('SMEMBERS', KEYS[1])
for _, sid in ipairs(sids) do redis.call('DEL', ARGV[1] .. sid) end
redis.call('DEL', KEYS[1])
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if cutoff > current then
  redis.call('SET', KEYS[2], string.format('%d', cutoff), 'EX', ARGV[2])
else
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
return #sids
"""
)

# KEYS: revoked-before. ARGV: the cutoff's ttl.
_RAISE_REVOKED_BEFORE = (
    _CUTOFF
    + """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if cutoff > current then
  redis.call('SET', KEYS[1], string.format('%d', cutoff), 'EX', ARGV[1])
end
return 1
"""
)


class Standing(enum.Enum):
    """Where a just-signed access token stands."""

    LIVE = "live"  # its session is there and the edge will accept it
    ENDED = "ended"  # its session was revoked: it must not be answered
    STALE = "stale"  # its session is there, but the player's cutoff is past its iat


@dataclass(frozen=True)
class RefreshToken:
    player_id: str
    session_id: str
    token: str
    expires_at: int


class Sessions:
    def __init__(
        self,
        redis: Redis,
        *,
        refresh_lifetime_seconds: int,
        access_lifetime_seconds: int,
    ) -> None:
        self._redis = redis
        self._refresh_ttl = refresh_lifetime_seconds
        # revoked-before must outlive every access token issued before it.
        self._revoked_ttl = access_lifetime_seconds + 60
        self._rotate = redis.register_script(_ROTATE)
        self._revoke_all = redis.register_script(_REVOKE_ALL)
        self._raise = redis.register_script(_RAISE_REVOKED_BEFORE)

    async def issue_second(self, player_id: str) -> int:
        """The unix second (Redis's clock) to stamp a new access token with: now, or once the
        player's revocation second has begun (so the new token is not already revoked)."""
        revoked_before, now = await self._cutoff_and_time(player_id)
        wait = revoked_before - now
        if wait > 0:
            await asyncio.sleep(wait)
            # Redis's second after the wait, even if it ended early (the token is then found
            # stale and signed again): never ahead of that clock, so a revocation after the
            # signing always has a later cutoff than the token's iat.
            _, now = await self._cutoff_and_time(player_id)
        return int(now)

    async def _cutoff_and_time(self, player_id: str) -> tuple[int, float]:
        """The player's revoked-before second (0: none) and Redis's clock, one round trip."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(revoked_before_key(player_id))
            pipe.time()
            raw, (seconds, microseconds) = await pipe.execute()
        return (int(raw) if raw else 0), seconds + microseconds / 1_000_000

    async def standing(self, player_id: str, session_id: str, issued_at: int) -> Standing:
        """Whether an access token of `session_id` with iat `issued_at`, just signed, may be
        answered: its session and the player's cutoff, read together (one round trip)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.exists(f"{SESSION_PREFIX}{session_id}")
            pipe.get(revoked_before_key(player_id))
            exists, raw = await pipe.execute()
        if not exists:
            return Standing.ENDED
        if raw is not None and issued_at < int(raw):
            return Standing.STALE
        return Standing.LIVE

    async def open(self, player_id: str) -> RefreshToken:
        """A new family (session) with its first refresh token."""
        session_id = uuid.uuid4().hex
        token = secrets.token_urlsafe(32)
        now = int(time.time())
        ttl = self._refresh_ttl
        player_sessions = f"{PLAYER_SESSIONS_PREFIX}{player_id}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                f"{SESSION_PREFIX}{session_id}",
                mapping={"player": player_id, "created": str(now)},
            )
            pipe.expire(f"{SESSION_PREFIX}{session_id}", ttl)
            pipe.hset(
                f"{REFRESH_PREFIX}{token_digest(token)}",
                mapping={
                    "player": player_id,
                    "sid": session_id,
                    "state": "active",
                    "issued_at": str(now),
                },
            )
            pipe.expire(f"{REFRESH_PREFIX}{token_digest(token)}", ttl)
            pipe.sadd(player_sessions, session_id)
            pipe.expire(player_sessions, ttl)
            await pipe.execute()
        return RefreshToken(player_id, session_id, token, now + ttl)

    async def owner(self, token: str) -> tuple[str, str] | None:
        """(player_id, session_id) of a refresh token ever issued and not yet expired."""
        record = cast(
            "dict[bytes, bytes]",
            await self._redis.hgetall(f"{REFRESH_PREFIX}{token_digest(token)}"),  # type: ignore[misc]
        )
        if not record or b"player" not in record or b"sid" not in record:
            return None
        return record[b"player"].decode(), record[b"sid"].decode()

    async def rotate(self, token: str) -> RefreshToken:
        """Spends `token` and returns its successor in the same family. Raises
        RefreshTokenReused (family revoked) or RefreshTokenInvalid."""
        owner = await self.owner(token)
        if owner is None:
            raise RefreshTokenInvalid()
        player_id, session_id = owner
        successor = secrets.token_urlsafe(32)
        now = int(time.time())
        outcome: Any = await self._rotate(
            keys=[
                f"{REFRESH_PREFIX}{token_digest(token)}",
                f"{REFRESH_PREFIX}{token_digest(successor)}",
                f"{SESSION_PREFIX}{session_id}",
                f"{PLAYER_SESSIONS_PREFIX}{player_id}",
            ],
            args=[session_id, player_id, self._refresh_ttl, now],
        )
        outcome = outcome.decode() if isinstance(outcome, bytes) else str(outcome)
        if outcome == "reused":
            # The family is gone; its access tokens must stop too, not live on until exp.
            await self._raise(keys=[revoked_before_key(player_id)], args=[self._revoked_ttl])
            raise RefreshTokenReused()
        if outcome != "rotated":
            raise RefreshTokenInvalid()
        return RefreshToken(player_id, session_id, successor, now + self._refresh_ttl)

    async def revoke_all(self, player_id: str) -> int:
        """Ends every session of the player; returns how many families there were."""
        count: Any = await self._revoke_all(
            keys=[f"{PLAYER_SESSIONS_PREFIX}{player_id}", revoked_before_key(player_id)],
            args=[SESSION_PREFIX, self._revoked_ttl],
        )
        return int(count)
