"""Balance display cache in Redis: written through after each commit, read only by callers
that ask for it, never used to decide a posting. If Redis is down, postings go on."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import RedisError

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
    def __init__(self, redis: Redis | None, ttl_seconds: float) -> None:
        self._redis = redis
        self._ttl_ms = int(ttl_seconds * 1000)
        self._script = redis.register_script(_WRITE_IF_NEWER) if redis is not None else None

    @staticmethod
    def _key(player_id: str, currency: str) -> str:
        # The hash tag keeps a player's keys on one Redis Cluster slot.
        return f"wallet:balance:{{{player_id}}}:{currency}"

    async def put(self, player_id: str, currency: str, account: AccountState) -> None:
        if self._script is None:
            return
        try:
            await self._script(
                keys=[self._key(player_id, currency)],
                args=[account.sequence, account.posted, account.reserved, self._ttl_ms],
            )
        except RedisError as exc:
            log.warning("balance cache write failed", error=str(exc))

    async def get(self, player_id: str, currency: str) -> AccountState | None:
        if self._redis is None:
            return None
        try:
            raw = await self._redis.hgetall(self._key(player_id, currency))
        except RedisError as exc:
            log.warning("balance cache read failed", error=str(exc))
            return None
        if not raw:
            return None
        return AccountState(
            posted=int(raw[b"posted"]),
            reserved=int(raw[b"reserved"]),
            sequence=int(raw[b"sequence"]),
            last_hash=b"",
        )
