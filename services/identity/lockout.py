"""Login throttling: after repeated failures an account (by email, known or not) or a client
address (an IPv6 client's /64) is locked for a time that doubles with each further failure, up
to a cap.

Failures are counted per email whether or not an account has it, so the lockout itself does
not reveal which emails are registered. A success clears the account's count; the address's
count only expires (one valid account must not let an address reset its own counter).

Each attempt is reserved before its password is checked: one script refuses it if a scope is
locked, else counts it as a failure at once, and locks the scope when the count reaches the
threshold. So N guesses sent at the same moment cannot all pass the check before any is
counted; at most the threshold's worth are ever checked. A success then clears the account's
count and gives the address its attempt back; an attempt that ended in a server fault, not a
wrong password, is given back to both."""

from __future__ import annotations

import hashlib
import math
import uuid
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from services.runtime.call import address_scope
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


# KEYS: each scope's lock and failure count, in pairs. ARGV: attempt id, window seconds, lock
# base seconds, lock cap seconds, then each scope's threshold. Refuses ({0, scope, ms left})
# while a scope is locked; else counts the attempt in every scope and locks those it brings
# to their threshold (for lock_seconds(count), which this mirrors), and returns {1, 0, 0}.
_RESERVE = """
local window, base, cap = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local scopes = #KEYS / 2
local longest, locked = 0, 0
for i = 1, scopes do
  local ttl = redis.call('PTTL', KEYS[2 * i - 1])
  if ttl > longest then longest, locked = ttl, i end
end
if locked > 0 then return {0, locked, longest} end
for i = 1, scopes do
  local lock, counter = KEYS[2 * i - 1], KEYS[2 * i]
  local count = redis.call('INCR', counter)
  if count == 1 then redis.call('EXPIRE', counter, window) end
  local threshold = tonumber(ARGV[4 + i])
  if count >= threshold then
    local seconds = math.floor(math.min(cap, base * 2 ^ math.min(count - threshold, 32)))
    redis.call('SET', lock, ARGV[1], 'EX', seconds)
    -- The count outlives the lock, so the next failure after it doubles it.
    redis.call('EXPIRE', counter, seconds + window)
  end
end
return {1, 0, 0}
"""

# KEYS: as for _RESERVE, the account's pair first. ARGV: attempt id, "1" when the attempt
# succeeded (the account's failures are cleared) or "0" (it is only given back). A scope's
# lock goes only if this attempt set it.
_RELEASE = """
for i = 1, #KEYS / 2 do
  local lock, counter = KEYS[2 * i - 1], KEYS[2 * i]
  if i == 1 and ARGV[2] == '1' then
    redis.call('DEL', lock, counter)
  else
    if redis.call('GET', lock) == ARGV[1] then redis.call('DEL', lock) end
    if tonumber(redis.call('GET', counter) or '0') > 0 then redis.call('DECR', counter) end
  end
end
return 1
"""


@dataclass(frozen=True)
class LoginAttempt:
    """A reserved attempt: counted as a failure until released."""

    attempt_id: str
    keys: tuple[str, ...]


class LoginThrottle:
    PREFIX = "identity:login-"

    def __init__(self, redis: Redis, policy: LockoutPolicy) -> None:
        self._redis = redis
        self._policy = policy
        self._reserve = redis.register_script(_RESERVE)
        self._release = redis.register_script(_RELEASE)

    def _scopes(self, email_key: str, address: str | None) -> list[tuple[str, str, int]]:
        scopes = [("account", _account_id(email_key), self._policy.max_failures_per_account)]
        if address:
            scopes.append(
                ("address", address_scope(address), self._policy.max_failures_per_address)
            )
        return scopes

    async def reserve(self, email_key: str, address: str | None) -> LoginAttempt:
        """Counts one attempt against the account and the address, or raises AccountLocked
        (nothing counted) while either is locked."""
        policy = self._policy
        scopes = self._scopes(email_key, address)
        keys = tuple(
            key
            for scope, ident, _ in scopes
            for key in (
                f"{self.PREFIX}lock:{scope}:{ident}",
                f"{self.PREFIX}failures:{scope}:{ident}",
            )
        )
        attempt_id = uuid.uuid4().hex
        reply: Any = await self._reserve(
            keys=list(keys),
            args=[
                attempt_id,
                policy.failure_window_seconds,
                policy.lock_seconds,
                policy.max_lock_seconds,
                *(threshold for _, _, threshold in scopes),
            ],
        )
        allowed, locked_scope, ttl_ms = (int(v) for v in reply)
        if not allowed:
            raise AccountLocked(max(1, math.ceil(ttl_ms / 1000)), scopes[locked_scope - 1][0])
        return LoginAttempt(attempt_id, keys)

    async def succeeded(self, attempt: LoginAttempt) -> None:
        """The password was right: the account's failures are cleared, the address gets its
        attempt back."""
        await self._release(keys=list(attempt.keys), args=[attempt.attempt_id, "1"])

    async def abandoned(self, attempt: LoginAttempt) -> None:
        """The attempt ended without an answer on the password (a server fault): not a
        failure of the player's."""
        await self._release(keys=list(attempt.keys), args=[attempt.attempt_id, "0"])
