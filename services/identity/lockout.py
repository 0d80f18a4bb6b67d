"""Login throttling: after repeated failures an account (by email, known or not) or a client
address is locked for a time that doubles with each further failure, up to a cap.

Failures are counted per email whether or not an account has it, so the lockout itself does
not reveal which emails are registered. A success clears the account's count; the address's
count only expires (one valid account must not let an address reset its own counter)."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from redis.asyncio import Redis

from services.runtime.errors import Code, DomainError


@dataclass(frozen=True)
class LockoutPolicy:
    max_failures_per_account: int = 5
    max_failures_per_address: int = 20
    # Failures are counted over this window from the first one.
    failure_window_seconds: int = 900
    # First lock; each further failure doubles it, up to the cap.
    lock_seconds: int = 30
    max_lock_seconds: int = 3600


def lock_seconds(failures: int, threshold: int, base: int, cap: int) -> int:
    """How long to lock after the `failures`-th failure in the window (0: not locked)."""
    if failures < threshold:
        return 0
    doublings = min(failures - threshold, 32)  # 2**32 * base is past any sane cap
    return int(min(cap, base * 2**doublings))


class AccountLocked(DomainError):
    code = Code.RESOURCE_EXHAUSTED

    def __init__(self, retry_after: int, scope: str) -> None:
        super().__init__(
            "ACCOUNT_LOCKED",
            f"too many failed logins; try again in {retry_after} s",
            {"retry_after": retry_after, "scope": scope},
        )
        self.retry_after = retry_after


def _account_id(email_key: str) -> str:
    # Emails never appear in Redis key names (key listings end up in support tickets).
    return hashlib.sha256(email_key.encode()).hexdigest()[:32]


class LoginThrottle:
    PREFIX = "identity:login-"

    def __init__(self, redis: Redis, policy: LockoutPolicy) -> None:
        self._redis = redis
        self._policy = policy

    def _scopes(self, email_key: str, address: str | None) -> list[tuple[str, str, int]]:
        scopes = [("account", _account_id(email_key), self._policy.max_failures_per_account)]
        if address:
            scopes.append(("address", address, self._policy.max_failures_per_address))
        return scopes

    async def check(self, email_key: str, address: str | None) -> None:
        """Raises AccountLocked while the account or the address is locked."""
        scopes = self._scopes(email_key, address)
        async with self._redis.pipeline(transaction=False) as pipe:
            for scope, ident, _ in scopes:
                pipe.pttl(f"{self.PREFIX}lock:{scope}:{ident}")
            ttls = await pipe.execute()
        locked = [(int(ttl), scope) for ttl, (scope, _, _) in zip(ttls, scopes, strict=True)]
        ttl, scope = max(locked)
        if ttl > 0:
            raise AccountLocked(max(1, math.ceil(ttl / 1000)), scope)

    async def failed(self, email_key: str, address: str | None) -> None:
        policy = self._policy
        for scope, ident, threshold in self._scopes(email_key, address):
            counter = f"{self.PREFIX}failures:{scope}:{ident}"
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incr(counter)
                pipe.expire(counter, policy.failure_window_seconds, nx=True)
                failures, _ = await pipe.execute()
            seconds = lock_seconds(
                int(failures), threshold, policy.lock_seconds, policy.max_lock_seconds
            )
            if seconds:
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.set(f"{self.PREFIX}lock:{scope}:{ident}", "1", ex=seconds)
                    # The count outlives the lock, so the next failure after it doubles it.
                    pipe.expire(counter, seconds + policy.failure_window_seconds)
                    await pipe.execute()

    async def succeeded(self, email_key: str) -> None:
        ident = _account_id(email_key)
        await self._redis.delete(
            f"{self.PREFIX}failures:account:{ident}", f"{self.PREFIX}lock:account:{ident}"
        )
