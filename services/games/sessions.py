"""Active game sessions in Redis: the game, the currency, the balance shown and the running
net position, with an idle TTL; and per player, the reality-check clock and the slot spin
spacing, which no number of sessions may get around.

One hash per session (`games:session:{<session_id>}`; the braces keep a session's keys in
one cluster slot), and per player the set of their session ids
(`games:player-sessions:{<player_id>}`, kept a week after the player's last session start,
far longer than any session lives), so that a self-exclusion can end all of them. The
session is display and pacing state: losing it loses no money (the wallet and the round
journal are the truth), so a player whose session expired simply starts a new one.

Rules the player lives by across sessions are keyed by the player, in the player's slot:
* the reality-check clock (`games:reality-check:{<player_id>}`): it starts with the player's
  first session and runs while they play in any session (it ends after the idle time
  without a session start or a round). A new session joins the running clock: a check
  that is due stays due until the player acknowledges it, in whichever session.
* slot spin spacing (`games:last-spin:{<player_id>}:<product>`): the minimum time between
  two spins of the product, whatever sessions they come from; one atomic script, so
  concurrent spins cannot both pass."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from dataclasses import dataclass

from redis.asyncio import Redis

from services.games.catalog import canonical_json
from services.games.rounds import RoundRecord, State
from services.runtime.errors import Code, DomainError, IdempotencyMismatch, NotFound

SESSION_KEY = "games:session:{{{session_id}}}"
PLAYER_SESSIONS_KEY = "games:player-sessions:{{{player_id}}}"
# The player's set of session ids lives this long after their last session start: set at
# start only, so the round path pays nothing for it. (A session ends after its idle time
# without play; one played without a break for a week would leave the index first, and its
# bets would still be refused by compliance's check.)
_INDEX_LIFETIME_MS = 7 * 86_400_000
# What a StartSession request_id stands for: `<request fingerprint>/<session id>`.
REQUEST_KEY = "games:session-request:{{{player_id}}}:{request_id}"
REALITY_CHECK_KEY = "games:reality-check:{{{player_id}}}"
LAST_SPIN_KEY = "games:last-spin:{{{player_id}}}:{product}"


class SessionNotFound(NotFound):
    def __init__(self, session_id: str) -> None:
        super().__init__(
            "SESSION_NOT_FOUND",
            "no such game session (sessions end after a period without play)",
            {"session_id": session_id},
        )


class SessionEnded(DomainError):
    def __init__(self, session_id: str) -> None:
        super().__init__("SESSION_ENDED", "the game session was ended", {"session_id": session_id})


class SpinTooSoon(DomainError):
    code = Code.FAILED_PRECONDITION

    def __init__(self, retry_after_ms: int, min_interval_ms: int) -> None:
        super().__init__(
            "SPIN_TOO_SOON",
            f"a player's slot spins are at least {min_interval_ms} ms apart, in any sessions;"
            f" retry in {retry_after_ms} ms",
            {"retry_after_ms": retry_after_ms, "min_interval_ms": min_interval_ms},
        )


class RealityCheckDue(DomainError):
    def __init__(self, session_id: str, due: dt.datetime) -> None:
        super().__init__(
            "REALITY_CHECK_DUE",
            "a reality check is due: acknowledge it to go on playing",
            {"session_id": session_id, "next_check_time": due.isoformat()},
        )


@dataclass(frozen=True)
class Session:
    session_id: str
    player_id: str
    game_id: str
    currency: str
    country: str
    start_time: dt.datetime
    expire_time: dt.datetime
    balance_minor: int
    rounds_played: int
    staked_minor: int
    won_minor: int
    # The player's reality-check clock (shared by all their sessions): when their play
    # began, the interval, and when play stops until a check is acknowledged.
    play_start_time: dt.datetime
    reality_interval_minutes: int
    next_check_time: dt.datetime
    client_seed: str
    fair_commitment: str
    ended: bool

    @property
    def net_position_minor(self) -> int:
        return self.won_minor - self.staked_minor


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _ms(moment: dt.datetime) -> int:
    return int(moment.timestamp() * 1000)


def _moment(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def launch_fingerprint(game_id: str, currency: str, country: str, client_seed: str) -> str:
    """What a StartSession request_id stands for: the same key for another launch is a
    mismatch."""
    launch = {"game_id": game_id, "currency": currency, "country": country, "seed": client_seed}
    return hashlib.sha256(canonical_json(launch)).hexdigest()


# The player's spins of one product: returns 0 and records the spin, or the milliseconds
# left before one is allowed. The record lives one interval: after that any spin may go.
_CLAIM_SPIN = """
local last = tonumber(redis.call('HGET', KEYS[1], 'last_spin_ms') or '0')
local now, interval = tonumber(ARGV[1]), tonumber(ARGV[2])
if last > 0 and now - last < interval then return interval - (now - last) end
redis.call('HSET', KEYS[1], 'last_spin_ms', now, 'previous_spin_ms', last)
redis.call('PEXPIRE', KEYS[1], interval)
return 0
"""

# A new session joins the player's running reality-check clock, or starts it. Joining keeps
# the next check (one already due stays due) unless the player's interval is now shorter.
_JOIN_CLOCK = """
local next_ms = tonumber(ARGV[2])
if redis.call('EXISTS', KEYS[1]) == 1 then
  local running = tonumber(redis.call('HGET', KEYS[1], 'next_check_ms'))
  if running and running < next_ms then next_ms = running end
  redis.call('HSET', KEYS[1], 'next_check_ms', next_ms, 'interval_minutes', ARGV[3])
else
  redis.call('HSET', KEYS[1], 'start_ms', ARGV[1], 'next_check_ms', next_ms,
             'interval_minutes', ARGV[3])
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""

# A spin that never reached the wallet gives its slot back (only if no later spin took it).
_RELEASE_SPIN = """
if redis.call('HGET', KEYS[1], 'last_spin_ms') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'last_spin_ms', redis.call('HGET', KEYS[1], 'previous_spin_ms'))
end
return 0
"""

# Ends a session that still exists (an expired one must not come back as a stub hash).
_END_IF_ALIVE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'ended', 1)
return 1
"""

# Counts a finished round and keeps the session alive; nothing if the session is gone.
_RECORD_ROUND = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'rounds', 1)
redis.call('HINCRBY', KEYS[1], 'staked', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'won', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'balance', ARGV[3]) end
redis.call('HSET', KEYS[1], 'expire_ms', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""


class Sessions:
    def __init__(self, redis: Redis, idle_seconds: int) -> None:
        self._redis = redis
        self._idle_ms = idle_seconds * 1000
        self._claim = redis.register_script(_CLAIM_SPIN)
        self._release = redis.register_script(_RELEASE_SPIN)
        self._record = redis.register_script(_RECORD_ROUND)
        self._end_if_alive = redis.register_script(_END_IF_ALIVE)
        self._join_clock = redis.register_script(_JOIN_CLOCK)

    async def started(self, player_id: str, request_id: str, fingerprint: str) -> Session | None:
        """The session this request_id already started, if any (IdempotencyMismatch if it
        started one for another launch)."""
        request_key = REQUEST_KEY.format(player_id=player_id, request_id=request_id)
        existing = await self._redis.get(request_key)
        if existing is None:
            return None
        return await self._started_by(player_id, request_id, fingerprint, _str(existing))

    async def _started_by(
        self, player_id: str, request_id: str, fingerprint: str, stored: str
    ) -> Session:
        recorded, _, session_id = stored.rpartition("/")
        # (A bare session id was written before requests were fingerprinted.)
        if recorded and recorded != fingerprint:
            raise IdempotencyMismatch(request_id)
        return await self.load(player_id, session_id, allow_ended=True)

    async def start(
        self,
        *,
        player_id: str,
        request_id: str,
        fingerprint: str,
        game_id: str,
        currency: str,
        country: str,
        balance_minor: int,
        reality_interval_minutes: int,
        next_check_time: dt.datetime,
        client_seed: str,
        fair_commitment: str,
        now: dt.datetime,
    ) -> Session:
        """A new session, or the one this request_id already started (if still alive). The
        session joins the player's reality-check clock if it is running (a check due stays
        due), else starts it with compliance's interval and next check."""
        request_key = REQUEST_KEY.format(player_id=player_id, request_id=request_id)
        session_id = str(uuid.uuid4())
        won = await self._redis.set(
            request_key, f"{fingerprint}/{session_id}", nx=True, px=self._idle_ms
        )
        if not won:
            existing = await self._redis.get(request_key)
            if existing is not None:
                return await self._started_by(player_id, request_id, fingerprint, _str(existing))
        await self._join_clock(
            keys=[REALITY_CHECK_KEY.format(player_id=player_id)],
            args=[_ms(now), _ms(next_check_time), reality_interval_minutes, self._idle_ms],
        )
        fields = {
            "player_id": player_id,
            "game_id": game_id,
            "currency": currency,
            "country": country,
            "start_ms": _ms(now),
            "expire_ms": _ms(now) + self._idle_ms,
            "balance": balance_minor,
            "rounds": 0,
            "staked": 0,
            "won": 0,
            # The clock as compliance gave it at the start: shown only if the player's clock
            # is gone while the session lives (it outlives every session of the player).
            "interval_minutes": reality_interval_minutes,
            "next_check_ms": _ms(next_check_time),
            "client_seed": client_seed,
            "fair_commitment": fair_commitment,
            "ended": 0,
        }
        key = SESSION_KEY.format(session_id=session_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
            pipe.pexpire(key, self._idle_ms)
            await pipe.execute()
        index = PLAYER_SESSIONS_KEY.format(player_id=player_id)
        async with self._redis.pipeline(transaction=True) as pipe:  # another slot: its own
            pipe.sadd(index, session_id)
            pipe.pexpire(index, max(_INDEX_LIFETIME_MS, self._idle_ms))
            await pipe.execute()
        return await self.load(player_id, session_id)

    async def load(self, player_id: str, session_id: str, *, allow_ended: bool = False) -> Session:
        # Two slots (the session's, the player's), read in one round trip.
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(SESSION_KEY.format(session_id=session_id))
            pipe.hgetall(REALITY_CHECK_KEY.format(player_id=player_id))
            raw, raw_clock = await pipe.execute()
        data = {_str(k): _str(v) for k, v in raw.items()}
        # Another player's session is as unknown to this player as a missing one.
        if not data or data.get("player_id") != player_id:
            raise SessionNotFound(session_id)
        clock = {_str(k): _str(v) for k, v in raw_clock.items()}
        if not {"start_ms", "next_check_ms", "interval_minutes"} <= clock.keys():
            clock = data
        session = Session(
            session_id=session_id,
            player_id=player_id,
            game_id=data["game_id"],
            currency=data["currency"],
            country=data["country"],
            start_time=_moment(int(data["start_ms"])),
            expire_time=_moment(int(data["expire_ms"])),
            balance_minor=int(data["balance"]),
            rounds_played=int(data["rounds"]),
            staked_minor=int(data["staked"]),
            won_minor=int(data["won"]),
            play_start_time=_moment(int(clock["start_ms"])),
            reality_interval_minutes=int(clock["interval_minutes"]),
            next_check_time=_moment(int(clock["next_check_ms"])),
            client_seed=data["client_seed"],
            fair_commitment=data["fair_commitment"],
            ended=data["ended"] == "1",
        )
        if session.ended and not allow_ended:
            raise SessionEnded(session_id)
        return session

    def require_no_reality_check(self, session: Session, now: dt.datetime) -> None:
        if now >= session.next_check_time:
            raise RealityCheckDue(session.session_id, session.next_check_time)

    async def claim_spin(
        self, session: Session, product: str, min_interval_ms: int, now: dt.datetime
    ) -> int:
        """Record the player's spin of `product` starting now; SpinTooSoon if their previous
        one (in any session) was too recent. Returns the claim, for `release_spin`."""
        now_ms = _ms(now)
        key = LAST_SPIN_KEY.format(player_id=session.player_id, product=product)
        wait = int(await self._claim(keys=[key], args=[now_ms, min_interval_ms]))
        if wait > 0:
            raise SpinTooSoon(wait, min_interval_ms)
        return now_ms

    async def release_spin(self, session: Session, product: str, claim: int) -> None:
        key = LAST_SPIN_KEY.format(player_id=session.player_id, product=product)
        await self._release(keys=[key], args=[claim])

    async def record_round(self, r: RoundRecord) -> None:
        """Count a finished round in its session (if still alive): a voided round staked
        nothing; the balance shown becomes the wallet's after the round. Play keeps the
        player's reality-check clock running."""
        staked = r.stake_minor if r.state is State.COMPLETED else 0
        won = (r.payout_minor or 0) if staked else 0
        balance = "" if r.balance_after_minor is None else r.balance_after_minor
        expire_ms = _ms(dt.datetime.now(dt.UTC)) + self._idle_ms
        async with self._redis.pipeline(transaction=False) as pipe:
            await self._record(
                keys=[SESSION_KEY.format(session_id=r.session_id)],
                args=[staked, won, balance, self._idle_ms, expire_ms],
                client=pipe,
            )
            pipe.pexpire(REALITY_CHECK_KEY.format(player_id=r.player_id), self._idle_ms)
            await pipe.execute()

    async def acknowledge(self, session: Session, now: dt.datetime) -> Session:
        """The player's next check falls one interval after the last one due, and after now,
        counted from the start of their play (for every session of theirs)."""
        interval_ms = max(session.reality_interval_minutes, 1) * 60_000
        start_ms, now_ms = _ms(session.play_start_time), _ms(now)
        elapsed = (now_ms - start_ms) // interval_ms + 1
        key = REALITY_CHECK_KEY.format(player_id=session.player_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                key,
                mapping={
                    "start_ms": start_ms,
                    "next_check_ms": start_ms + elapsed * interval_ms,
                    "interval_minutes": session.reality_interval_minutes,
                },
            )
            pipe.pexpire(key, self._idle_ms)
            await pipe.execute()
        return await self.load(session.player_id, session.session_id)

    async def end_all(self, player_id: str) -> int:
        """End every live session of the player (self-exclusion); returns how many. Ids of
        sessions that expired meanwhile leave the index."""
        index = PLAYER_SESSIONS_KEY.format(player_id=player_id)
        ended, gone = 0, []
        for member in await self._redis.smembers(index):  # type: ignore[misc]
            session_id = _str(member)
            if await self._end_if_alive(keys=[SESSION_KEY.format(session_id=session_id)]):
                ended += 1
            else:
                gone.append(session_id)
        if gone:
            await self._redis.srem(index, *gone)  # type: ignore[misc]
        return ended

    async def end(self, session: Session) -> Session:
        key = SESSION_KEY.format(session_id=session.session_id)
        await self._redis.hset(key, "ended", 1)  # type: ignore[misc]
        return await self.load(session.player_id, session.session_id, allow_ended=True)
