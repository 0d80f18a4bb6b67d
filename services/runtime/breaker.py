"""Circuit breakers for awaited calls.

pybreaker's decorator never sees an `async def` fail (it only wraps coroutine creation), so
this runs pybreaker's own state machine around the await through its `calling()` context
manager. Its storage is pluggable: in-memory per process by default, or pybreaker's Redis
storage to share one breaker's state across replicas.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pybreaker

from services.runtime.logs import get_logger

T = TypeVar("T")

log = get_logger()

CircuitOpen = pybreaker.CircuitBreakerError


class _LogTransitions(pybreaker.CircuitBreakerListener):
    def state_change(self, cb: pybreaker.CircuitBreaker, old: object, new: object) -> None:
        log.warning(
            "circuit breaker state change",
            breaker=cb.name,
            old=getattr(old, "name", str(old)),
            new=getattr(new, "name", str(new)),
        )


class AsyncBreaker:
    def __init__(
        self,
        name: str,
        *,
        fail_max: int = 5,
        reset_timeout: float = 5.0,
        call_timeout: float | None = None,
        state_storage: pybreaker.CircuitBreakerStorage | None = None,
    ) -> None:
        self._breaker = pybreaker.CircuitBreaker(
            fail_max=fail_max,
            reset_timeout=reset_timeout,
            name=name,
            listeners=[_LogTransitions()],
            state_storage=state_storage,
            # A caller giving up (a client cancelling, a deadline passing) says nothing of
            # the dependency: not a failure, and never turned into CircuitOpen.
            exclude=[asyncio.CancelledError],
        )
        self._call_timeout = call_timeout

    @property
    def state(self) -> str:
        return str(self._breaker.current_state)

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Await `fn()` under the breaker: raises CircuitOpen at once while open; a failure
        or a call exceeding `call_timeout` counts against it."""
        with self._breaker.calling():
            if self._call_timeout is None:
                return await fn()
            # asyncio.timeout, not wait_for: no task per call (these guard every Redis call
            # on the hot paths), and the same TimeoutError when the time is up.
            async with asyncio.timeout(self._call_timeout):
                return await fn()
