"""Balance display cache in Redis: written through after each commit, read only by callers
that ask for it, never used to decide a posting. If Redis is down, postings go on: every
cache call is bounded by a short timeout and a circuit breaker, so a dead or blackholed
Redis costs a posting at most that timeout, and nothing once the breaker is open."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from services.runtime.breaker import AsyncBreaker, CircuitOpen
from services.runtime.logs import get_logger
from services.wallet.ledger import AccountState

log = get_logger()

# Keep the newer snapshot: two commits racing to write the cache must not leave the older
# balance behind, so the write compares the ledger sequence first.
_WRITE_IF_NEWER = """
local current = redis.call('HGET', KEYS[1], 'sequence')
if current and tonumber(current) > tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'sequence', ARGV[1], 'posted', ARGV[2], 'reserved', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""


class BalanceCache:
    def __init__(
        self, redis: Redis | None, ttl_seconds: float, *, call_timeout: float = 0.05
    ) -> None:
        self._redis = redis
        self._ttl_ms = int(ttl_seconds * 1000)
        # Redis names a script by the SHA-1 of its text (not a security use).
        self._sha = hashlib.sha1(_WRITE_IF_NEWER.encode(), usedforsecurity=False).hexdigest()
        self._breaker = AsyncBreaker(
            "wallet-balance-cache", fail_max=3, reset_timeout=2.0, call_timeout=call_timeout
        )

    @staticmethod
    def _key(player_id: str, currency: str) -> str:
        # The hash tag keeps a player's keys on one Redis Cluster slot.
        return f"wallet:balance:{{{player_id}}}:{currency}"

    async def put(self, balances: Mapping[tuple[str, str], AccountState]) -> None:
        """Write each (player, currency) snapshot, all in one round trip: a committed batch
        of postings costs one Redis call, not one per account."""
        redis = self._redis
        if redis is None or not balances:
            return

        async def write() -> None:
            for _ in range(2):
                pipe = redis.pipeline(transaction=False)
                for (player_id, currency), a in balances.items():
                    key = self._key(player_id, currency)
                    args = (a.sequence, a.posted, a.reserved, self._ttl_ms)
                    pipe.evalsha(self._sha, 1, key, *args)
                results = await pipe.execute(raise_on_error=False)
                if not any(isinstance(r, NoScriptError) for r in results):
                    for result in results:
                        if isinstance(result, Exception):
                            raise result
                    return
                # Redis restarted (or flushed its scripts) since the script was loaded.
                await redis.script_load(_WRITE_IF_NEWER)

        try:
            await self._breaker.call(write)
        except CircuitOpen:
            pass
        except (RedisError, TimeoutError) as exc:
            log.warning("balance cache write failed", error=str(exc) or type(exc).__name__)

    async def get(self, player_id: str, currency: str) -> AccountState | None:
        redis = self._redis
        if redis is None:
            return None
        try:
            raw = await self._breaker.call(lambda: redis.hgetall(self._key(player_id, currency)))
        except CircuitOpen:
            return None
        except (RedisError, TimeoutError) as exc:
            log.warning("balance cache read failed", error=str(exc) or type(exc).__name__)
            return None
        if not raw:
            return None
        return AccountState(
            posted=int(raw[b"posted"]),
            reserved=int(raw[b"reserved"]),
            sequence=int(raw[b"sequence"]),
            last_hash=b"",
        )
