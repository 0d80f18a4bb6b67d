"""Readiness: a service reports SERVING only while every dependency it declared answers.

The same grpc.health.v1 servicer is served on the mTLS port (for callers) and on a
plaintext port (for Kubernetes probes, which cannot present a client certificate).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio

from services.runtime import metrics
from services.runtime.logs import get_logger

Probe = Callable[[], Awaitable[object]]

log = get_logger()

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Readiness:
    def __init__(
        self,
        servicer: health_aio.HealthServicer,
        services: list[str],
        interval: float,
        timeout: float,
        failure_threshold: int = 1,
    ) -> None:
        self.servicer = servicer
        # "" is the overall status that probes ask for by default.
        self._services = ["", *services]
        self._probes: dict[str, Probe] = {}
        self._interval = interval
        self._timeout = timeout
        self._failure_threshold = max(1, failure_threshold)
        self._failures: dict[str, int] = {}
        self._up: dict[str, bool] = {}
        self._serving: bool | None = None
        self._stopping = False

    def watch_services(self, names: list[str]) -> None:
        """Report the status under these service names too (besides the overall "")."""
        self._services.extend(names)

    def add_probe(self, dependency: str, probe: Probe) -> None:
        self._probes[dependency] = probe

    async def check_once(self) -> bool:
        results = await asyncio.gather(
            *(self._probe(name, probe) for name, probe in self._probes.items())
        )
        ready = all(results) and not self._stopping
        await self._set(ready)
        return ready

    async def _probe(self, name: str, probe: Probe) -> bool:
        try:
            await asyncio.wait_for(probe(), self._timeout)
            self._failures[name] = 0
            ok = True
        except Exception as exc:
            failures = self._failures[name] = self._failures.get(name, 0) + 1
            was_up = self._up.get(name, False)
            ok = was_up and failures < self._failure_threshold
            if was_up and not ok:
                log.warning(
                    "dependency down",
                    dependency=name,
                    failed_probes=failures,
                    error=str(exc) or type(exc).__name__,
                )
            elif name not in self._up:
                log.warning(
                    "dependency down", dependency=name, error=str(exc) or type(exc).__name__
                )
        if ok and self._up.get(name) is False:
            log.info("dependency up", dependency=name)
        self._up[name] = ok
        metrics.DEPENDENCY_UP.labels(name).set(1 if ok else 0)
        return ok

    async def _set(self, serving: bool) -> None:
        if serving == self._serving:
            return
        self._serving = serving
        metrics.SERVING.set(1 if serving else 0)
        log.info("health", status="SERVING" if serving else "NOT_SERVING")
        for service in self._services:
            await self.servicer.set(service, SERVING if serving else NOT_SERVING)

    async def run(self) -> None:
        while not self._stopping:
            await self.check_once()
            await asyncio.sleep(self._interval)

    async def shutting_down(self) -> None:
        """From now on NOT_SERVING, whatever the dependencies say."""
        self._stopping = True
        await self._set(False)
