"""Per-endpoint-class rate limits at the edge: GCRA in Redis, a stricter local GCRA when Redis
cannot answer.

GCRA (the generic cell rate algorithm) keeps one number per (class, key): the theoretical
arrival time (TAT) of the next request if the client sent at exactly the configured rate. A
request is allowed when it arrives no earlier than TAT minus the burst tolerance; allowing it
moves TAT one emission interval (1/rate) on. So a client may send `burst` requests at once,
then one per interval, and the state is a single key that expires when the client is idle.

Redis holds the state so every edge replica shares one budget per player: one EVALSHA per
request (the script is loaded once per process and reloaded on NOSCRIPT after a Redis
restart), the clock is Redis's own TIME so replicas with skewed clocks agree. The checks go
out on the edge's one Redis connection (edge.redislink): those of one loop turn in one write,
and Redis runs them in the order the edge made them. Redis slow, unreachable or answering
with an error (a short timeout behind a circuit breaker): each replica limits locally with
rate and burst divided by `fallback_divisor`, never unlimited, and says so in the
RateLimit-Policy header; the breaker half-opens after `breaker_reset_seconds` and the limiter
goes back to Redis as soon as Redis answers.

Headers follow draft-ietf-httpapi-ratelimit-headers (-09, structured fields):
  RateLimit-Policy: "player_wallet";q=50;w=1       the quota (burst) per window (seconds)
  RateLimit: "player_wallet";r=12;t=1              remaining now, seconds until full again
  Retry-After: 1                                   on 429 only, whole seconds (RFC 9110)
The fallback policy is named "<class>-local" with its reduced quota.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from casino.common.v1 import options_pb2
from edge.redislink import RedisLink, ReplyError
from services.runtime.breaker import AsyncBreaker, CircuitOpen
from services.runtime.config import ConfigError
from services.runtime.logs import get_logger

log = get_logger()

# Endpoint classes by their short name (the proto enum name without ENDPOINT_CLASS_).
ENDPOINT_CLASSES = (
    "PLAYER_WALLET",
    "GAMEPLAY",
    "CATALOG",
    "PAYMENT",
    "PAYMENT_WEBHOOK",
    "ADMIN",
    "AUTH",
)
# Not an endpoint class: the per-address budget of requests refused before routing (no route
# matches: 404/405; the listener does not serve the source's network: 403), so probing for
# paths or knocking on the admin listener is limited like any other traffic without spending
# an operation's budget.
UNROUTED = "UNROUTED"
BUDGETS = (*ENDPOINT_CLASSES, UNROUTED)


@dataclass(frozen=True)
class ClassLimit:
    # Sustained requests per second per key.
    rate: float
    # Requests allowed at once from an idle key (the GCRA burst tolerance, in requests).
    burst: int


# Keys: player id for authenticated classes; the client address (an IPv6 client's /64) for
# AUTH/CATALOG/ADMIN, for any request without a usable token and for UNROUTED; PSP source name
# for PAYMENT_WEBHOOK. The edge picks the key; the limiter only counts.
DEFAULT_LIMITS: dict[str, ClassLimit] = {
    "PLAYER_WALLET": ClassLimit(rate=50, burst=50),
    "PAYMENT": ClassLimit(rate=10, burst=10),
    "GAMEPLAY": ClassLimit(rate=200, burst=200),
    "CATALOG": ClassLimit(rate=200, burst=200),
    "AUTH": ClassLimit(rate=5, burst=5),
    "PAYMENT_WEBHOOK": ClassLimit(rate=100, burst=100),
    "ADMIN": ClassLimit(rate=20, burst=20),
    UNROUTED: ClassLimit(rate=20, burst=20),
}


@dataclass(frozen=True)
class RateLimitConfig:
    # Overrides per class short name ([ratelimit.classes.PLAYER_WALLET] rate = 50, burst = 50),
    # or UNROUTED; a class not listed keeps its default.
    classes: dict[str, ClassLimit] = field(default_factory=dict)
    # With Redis unreachable each replica limits on its own with rate and burst divided by
    # this (replicas do not share a local budget, so it must be stricter).
    fallback_divisor: float = 4.0
    # One Redis call may take this long before it counts as a failure.
    redis_timeout_ms: int = 50
    # Consecutive Redis failures that open the breaker (then no Redis call is tried) ...
    breaker_fail_max: int = 3
    # ... for this long, after which one call probes Redis again.
    breaker_reset_seconds: float = 1.0
    key_prefix: str = "ratelimit"
    # Bound on the local limiter's memory (keys idle past their TAT are dropped first).
    local_max_keys: int = 100_000

    def __post_init__(self) -> None:
        unknown = sorted(set(self.classes) - set(BUDGETS))
        if unknown:
            raise ConfigError(f"ratelimit.classes: unknown endpoint class(es) {', '.join(unknown)}")
        for name, limit in self.limits().items():
            if not (limit.rate > 0 and limit.burst >= 1):
                raise ConfigError(f"ratelimit.classes.{name}: rate must be > 0 and burst >= 1")
        if not self.fallback_divisor >= 1:
            raise ConfigError("ratelimit.fallback_divisor must be >= 1 (stricter, never looser)")

    def limits(self) -> dict[str, ClassLimit]:
        return {**DEFAULT_LIMITS, **self.classes}


def class_name(endpoint_class: str | int) -> str:
    """The short class name from a proto enum value, its name, or the short name itself
    (or UNROUTED)."""
    if isinstance(endpoint_class, int):
        endpoint_class = options_pb2.EndpointClass.Name(
            options_pb2.EndpointClass.ValueType(endpoint_class)
        )
    name = endpoint_class.removeprefix("ENDPOINT_CLASS_")
    if name not in BUDGETS:
        raise ValueError(f"not a rate-limited endpoint class: {endpoint_class!r}")
    return name


@dataclass(frozen=True)
class Decision:
    allowed: bool
    # The policy's quota: requests allowed at once (the burst), and its window in seconds.
    limit: int
    window_seconds: int
    remaining: int
    # Seconds until the key's budget is full again.
    reset_seconds: float
    # Seconds until the next request would be allowed (0 when this one was).
    retry_after_seconds: float
    policy: str
    # True when Redis could not answer and the stricter local limiter decided.
    local: bool

    @property
    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Policy": f'"{self.policy}";q={self.limit};w={self.window_seconds}',
            "RateLimit": f'"{self.policy}";r={self.remaining};t={math.ceil(self.reset_seconds)}',
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after_seconds)))
        return headers


@dataclass(frozen=True)
class Lookup:
    """A key read alongside a rate-limit check: its value (None if absent), or unavailable
    when Redis could not answer."""

    available: bool
    value: bytes | str | None = None


UNAVAILABLE = Lookup(available=False)


@dataclass(frozen=True)
class _Verdict:
    """One GCRA step, in seconds."""

    allowed: bool
    remaining: int
    reset: float
    retry_after: float


def _gcra(tat: float, now: float, interval: float, burst: int) -> tuple[_Verdict, float]:
    """The decision and the new TAT (unchanged when refused). Mirrors the Lua script."""
    tat = max(tat, now)
    new_tat = tat + interval
    allow_at = new_tat - interval * burst
    if allow_at > now:
        return _Verdict(False, 0, tat - now, allow_at - now), tat
    remaining = int((now + interval * burst - new_tat) / interval + 1e-9)
    return _Verdict(True, remaining, new_tat - now, 0.0), new_tat


# KEYS[1]: the (class, key) state; KEYS[2], if given: a key read in the same call (the
# caller's other per-request lookup, e.g. the player's token revocation instant, so a request
# costs one round trip to Redis, not two); ARGV: emission interval (us), burst (requests).
# Returns {allowed, remaining, reset_us, retry_after_us, KEYS[2]'s value or false}. Time is
# Redis's (TIME is allowed in scripts since Redis 5: effects are replicated, not the script).
_GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local read = false
if KEYS[2] then read = redis.call('GET', KEYS[2]) end
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - interval * burst
if allow_at > now then
  return {0, 0, tat - now, allow_at - now, read}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((now + interval * burst - new_tat) / interval), new_tat - now, 0, read}
"""


class LocalGcra:
    """The same algorithm in this process's memory, with its own clock (injectable)."""

    def __init__(self, max_keys: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._tats: dict[str, float] = {}
        self._max_keys = max_keys
        self._clock = clock

    def check(self, key: str, interval: float, burst: int) -> _Verdict:
        now = self._clock()
        verdict, tat = _gcra(self._tats.get(key, now), now, interval, burst)
        if verdict.allowed:
            self._tats.pop(key, None)  # re-insert: dict order is then oldest-touched first
            self._tats[key] = tat
            if len(self._tats) > self._max_keys:
                self._evict(now)
        return verdict

    def _evict(self, now: float) -> None:
        # A key whose TAT has passed is at full budget: forgetting it changes nothing.
        for key in [k for k, tat in self._tats.items() if tat <= now]:
            del self._tats[key]
        while len(self._tats) > self._max_keys:
            del self._tats[next(iter(self._tats))]


class RateLimiter:
    def __init__(
        self,
        redis_link: RedisLink,
        config: RateLimitConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._redis = redis_link
        self.config = config or RateLimitConfig()
        self._limits = self.config.limits()
        self._local = LocalGcra(self.config.local_max_keys, clock)
        self._here = LocalGcra(self.config.local_max_keys, clock)
        self._breaker = AsyncBreaker(
            "ratelimit-redis",
            fail_max=self.config.breaker_fail_max,
            reset_timeout=self.config.breaker_reset_seconds,
            call_timeout=self.config.redis_timeout_ms / 1000,
        )
        self._sha: str | None = None

    @property
    def breaker_state(self) -> str:
        return self._breaker.state

    async def load_script(self, timeout: float = 1.0) -> None:
        """Connect to Redis and load the script before the first request: otherwise the first
        checks spend their time budget (`redis_timeout_ms`) on both and, on a busy machine,
        fall back to the local limiter. Redis away: logged, and the first check loads it."""
        try:
            async with asyncio.timeout(timeout):
                await self._load()
        except (ReplyError, OSError) as exc:
            log.warning("rate limit script not loaded at start", error=repr(exc))

    def admits_here(self, endpoint_class: str, key: str) -> bool:
        """Whether `key` is within `endpoint_class`'s full limit counting only the requests
        this replica has asked about (a local GCRA beside Redis's, spent by each yes). Not a
        decision: the edge starts a read's upstream call while Redis decides only on a yes, so
        a key flooding past its limit costs the services at most its limit per replica."""
        limit = self._limits[endpoint_class]
        return self._here.check(f"{endpoint_class}:{key}", 1.0 / limit.rate, limit.burst).allowed

    async def check(self, endpoint_class: str | int, key: str) -> Decision:
        """Count one request of `key` against `endpoint_class`'s limit."""
        decision, _ = await self.check_and_read(endpoint_class, key, None)
        return decision

    async def check_and_read(
        self, endpoint_class: str | int, key: str, read_key: str | None
    ) -> tuple[Decision, Lookup]:
        """check(), and the value of `read_key` read in the same Redis call. When Redis
        cannot answer, the decision is the local limiter's and the lookup is unavailable."""
        name = class_name(endpoint_class)
        limit = self._limits[name]
        policy = name.lower()
        redis_key = f"{self.config.key_prefix}:{policy}:{key}"
        try:
            verdict, value = await self._breaker.call(
                lambda: self._redis_check(redis_key, limit.rate, limit.burst, read_key)
            )
        except (
            CircuitOpen,
            ReplyError,  # Redis answering with an error (out of memory, loading, busy)
            OSError,  # ConnectionError and TimeoutError (asyncio's since 3.11) included
        ) as exc:
            if not isinstance(exc, CircuitOpen):
                log.warning("rate limit redis unavailable, limiting locally", error=repr(exc))
            rate = limit.rate / self.config.fallback_divisor
            burst = max(1, int(limit.burst / self.config.fallback_divisor))
            verdict = self._local.check(redis_key, 1.0 / rate, burst)
            return _decision(verdict, burst, rate, f"{policy}-local", local=True), UNAVAILABLE
        decision = _decision(verdict, limit.burst, limit.rate, policy, local=False)
        return decision, Lookup(available=True, value=value)

    async def _redis_check(
        self, redis_key: str, rate: float, burst: int, read_key: str | None
    ) -> tuple[_Verdict, bytes | str | None]:
        interval_us = max(1, round(1_000_000 / rate))
        keys = [redis_key] if read_key is None else [redis_key, read_key]
        reply = await self._evalsha(keys, interval_us, burst)
        allowed, remaining, reset_us, retry_us = (int(v) for v in reply[:4])
        value = reply[4]  # Lua false (no read key, or the key absent) comes back as None
        return _Verdict(bool(allowed), remaining, reset_us / 1e6, retry_us / 1e6), value

    async def _evalsha(self, keys: Sequence[str], interval_us: int, burst: int) -> Any:
        args: tuple[str | int, ...] = (len(keys), *keys, interval_us, burst)
        try:
            return await self._redis.call("EVALSHA", self._sha or await self._load(), *args)
        except ReplyError as exc:
            if exc.code != "NOSCRIPT":
                raise
        # Redis restarted (or flushed its script cache) since the script was loaded.
        return await self._redis.call("EVALSHA", await self._load(), *args)

    async def _load(self) -> str:
        sha = await self._redis.call("SCRIPT", "LOAD", _GCRA_LUA)
        self._sha = sha.decode()
        return self._sha


def _decision(verdict: _Verdict, burst: int, rate: float, policy: str, *, local: bool) -> Decision:
    return Decision(
        allowed=verdict.allowed,
        limit=burst,
        window_seconds=max(1, math.ceil(burst / rate)),
        remaining=verdict.remaining,
        reset_seconds=verdict.reset,
        retry_after_seconds=verdict.retry_after,
        policy=policy,
        local=local,
    )
