"""A service process: configuration, telemetry, dependencies, the mTLS gRPC server with its
plaintext health twin, readiness, and graceful shutdown. A service's `__main__` only builds
its domain on a `ServiceRuntime` and calls `run_service`."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import grpc
import uvloop
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.runtime import db, failpoints, metrics
from services.runtime.access import MethodAccess, access_policies
from services.runtime.broker import Broker
from services.runtime.client import secure_channel
from services.runtime.config import ServiceConfig, load_config
from services.runtime.health import Readiness
from services.runtime.heap import freeze_startup_heap
from services.runtime.interceptors import RuntimeServerInterceptor
from services.runtime.logs import configure_logging, get_logger
from services.runtime.secrets import read_secret
from services.runtime.tls import ServerCertificates
from services.runtime.tracing import configure_tracing

AddToServer = Callable[[Any, grpc.aio.Server], None]


class BackgroundWorker(Protocol):
    """A loop that runs beside the server (an outbox relay, a recovery sweeper)."""

    async def run(self) -> None: ...

    async def close(self) -> None: ...


_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class ServiceRuntime:
    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        configure_logging(config.name, config.telemetry.log_level)
        self.tracer_provider = configure_tracing(config.name, config.telemetry)
        failpoints.arm(config.failpoints)
        self.log = get_logger()
        self._services: list[tuple[ServiceDescriptor, Any, AddToServer]] = []
        self._health = health_aio.HealthServicer()
        self.readiness = Readiness(
            self._health,
            [],
            config.health.probe_interval_seconds,
            config.health.probe_timeout_seconds,
            config.health.probe_failure_threshold,
        )
        self._engine: AsyncEngine | None = None
        self._redis: Redis | None = None
        self._broker: Broker | None = None
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._server: grpc.aio.Server | None = None
        self._health_server: grpc.aio.Server | None = None
        self._readiness_task: asyncio.Task[None] | None = None
        self._workers: list[BackgroundWorker] = []
        self._worker_tasks: list[asyncio.Task[None]] = []
        self.port = self.health_port = self.metrics_port = 0

    # Dependencies. Each one declared here is also a readiness probe.

    def database(self, *, custom_plans: bool = False) -> AsyncEngine:
        """The service's engine, built at the first call (which decides `custom_plans`: see
        services.runtime.db)."""
        if self._engine is None:
            if not self.config.database.url:
                raise RuntimeError(f"{self.config.name}: [database] url is not configured")
            self._engine = db.create_engine(
                self.config.database, self.config.name, custom_plans=custom_plans
            )
            engine = self._engine
            self.readiness.add_probe("database", lambda: db.ping(engine))
        return self._engine

    def redis(self, *, required: bool = True) -> Redis:
        """The service's Redis. `required=False` for a cache the service works without:
        then Redis being down does not take the service out of rotation."""
        if self._redis is None:
            cfg = self.config.redis
            if not cfg.url:
                raise RuntimeError(f"{self.config.name}: [redis] url is not configured")
            password = read_secret(cfg.password_file) if cfg.password_file else None
            self._redis = Redis.from_url(
                cfg.url, password=password, socket_timeout=1.0, socket_connect_timeout=1.0
            )
            client = self._redis
            if required:
                self.readiness.add_probe("redis", lambda: client.ping())  # type: ignore[no-any-return]
        return self._redis

    def broker(self) -> Broker:
        """RabbitMQ, for the service's outbox relay and event consumers. Not a readiness
        probe: the broker away stalls events, never the RPCs (they queue in the outbox)."""
        if self._broker is None:
            if not self.config.amqp.url:
                raise RuntimeError(f"{self.config.name}: [amqp] url is not configured")
            self._broker = Broker(self.config.amqp)
        return self._broker

    def channel(self, upstream: str) -> grpc.aio.Channel:
        """The channel to a configured upstream service (created once, closed at shutdown)."""
        if upstream not in self._channels:
            try:
                cfg = self.config.upstreams[upstream]
            except KeyError:
                raise RuntimeError(f"{self.config.name}: no [upstreams.{upstream}]") from None
            self._channels[upstream] = secure_channel(
                cfg.target,
                self.config.tls,
                cfg.service,
                default_timeout=cfg.timeout_seconds,
                tracer_provider=self.tracer_provider,
            )
        return self._channels[upstream]

    def add_service(self, descriptor: ServiceDescriptor, servicer: Any, add: AddToServer) -> None:
        self._services.append((descriptor, servicer, add))

    def add_background(self, worker: BackgroundWorker) -> None:
        """Run `worker.run()` while the service serves; cancelled and closed at shutdown,
        after in-flight RPCs have finished."""
        self._workers.append(worker)

    # Lifecycle.

    async def start(self) -> None:
        policies: dict[str, MethodAccess] = {}
        for descriptor, _, _ in self._services:
            policies.update(access_policies(descriptor))
        options = [
            ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 1 if self.config.listen.reuse_port else 0),
        ]
        server = grpc.aio.server(
            interceptors=[
                RuntimeServerInterceptor(
                    self.config.name,
                    policies,
                    self.tracer_provider.get_tracer("services.runtime"),
                    access_log=self.config.telemetry.access_log,
                ),
            ],
            options=options,
            maximum_concurrent_rpcs=self.config.listen.max_concurrent_rpcs or None,
        )
        names = [d.full_name for d, _, _ in self._services]
        for _, servicer, add in self._services:
            add(servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            [
                *names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            server,
        )
        listen = self.config.listen
        self.port = server.add_secure_port(
            f"{listen.host}:{listen.port}", ServerCertificates(self.config.tls).credentials()
        )
        health_server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        health_pb2_grpc.add_HealthServicer_to_server(self._health, health_server)
        self.health_port = health_server.add_insecure_port(f"{listen.host}:{listen.health_port}")
        self.metrics_port = metrics.serve_metrics(listen.host, listen.metrics_port)

        self.readiness.watch_services(names)
        await self.readiness.check_once()
        if self._engine is not None:
            await self._warn_without_autovacuum(self._engine)
        await health_server.start()
        await server.start()
        self._server, self._health_server = server, health_server
        self._readiness_task = asyncio.create_task(self.readiness.run(), name="readiness")
        self._worker_tasks = [
            asyncio.create_task(w.run(), name=type(w).__name__) for w in self._workers
        ]
        self.log.info(
            "service started",
            port=self.port,
            health_port=self.health_port,
            metrics_port=self.metrics_port,
            services=names,
        )

    async def _warn_without_autovacuum(self, engine: AsyncEngine) -> None:
        """Say so at start when the database server runs without autovacuum: the rows every
        batch updates (account balances, the verdict log's head) pile up dead versions and
        the append-only tables are never vacuumed, so the money path slows as it runs (the
        wallet's PostgreSQL CPU per posting doubled within minutes in bench/wallet_load.py).
        Best effort: an unreachable database is readiness's to report."""
        try:
            async with asyncio.timeout(2.0), engine.connect() as conn:
                setting = (await conn.execute(text("SHOW autovacuum"))).scalar_one()
        except Exception:  # the check of a warning must never stop a start
            return
        if setting != "on":
            self.log.warning(
                "database server runs without autovacuum",
                autovacuum=setting,
                consequence="hot rows and append-only tables are never vacuumed; the money"
                " path slows as it runs",
            )

    async def stop(self) -> None:
        """Graceful: report NOT_SERVING, refuse new calls, let in-flight calls finish within
        the grace period, then release dependencies."""
        shutdown = self.config.shutdown
        self.log.info("shutting down", grace_seconds=shutdown.grace_seconds)
        await self.readiness.shutting_down()
        if shutdown.drain_seconds:
            await asyncio.sleep(shutdown.drain_seconds)
        if self._server is not None:
            await self._server.stop(shutdown.grace_seconds)
        await self._stop_workers(shutdown.workers_seconds)
        if self._health_server is not None:
            await self._health_server.stop(0)
        for channel in self._channels.values():
            await channel.close()
        if self._engine is not None:
            await self._engine.dispose()
        if self._redis is not None:
            await self._redis.aclose()
        self.tracer_provider.shutdown()
        self.log.info("stopped")

    async def _stop_workers(self, seconds: float) -> None:
        """Cancel the background workers and close them, within `seconds` in all: a worker
        that ignores its cancellation, or whose close hangs, is logged and left behind. (One
        budget, not one per step: bounded separately, the two steps could take twice it,
        and a wallet whose broker refused its login once outlasted a 10-second stop in CI.)"""
        deadline = asyncio.get_running_loop().time() + seconds
        tasks = [t for t in [*self._worker_tasks, self._readiness_task] if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=seconds)
            for task in pending:
                self.log.warning("background worker did not stop", worker=task.get_name())
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    self.log.warning(
                        "background worker had failed",
                        worker=task.get_name(),
                        error=repr(task.exception()),
                    )
        for worker in self._workers:
            try:
                async with asyncio.timeout_at(deadline):
                    await worker.close()
            except TimeoutError:
                self.log.warning("background worker did not close", worker=type(worker).__name__)
            except Exception as exc:  # closing is best effort; the process is ending
                self.log.warning(
                    "background worker close failed", worker=type(worker).__name__, error=repr(exc)
                )

    async def run_until_signalled(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        await stop.wait()
        await self.stop()


def run_service(build: Callable[[ServiceRuntime], Awaitable[None]]) -> None:
    """Entry point of a service process: `python -m services.<name> --config FILE`."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args()
    config = load_config(args.config)

    async def main() -> None:
        runtime = ServiceRuntime(config)
        await build(runtime)
        runtime.log.info("startup heap frozen", objects=freeze_startup_heap())
        await runtime.run_until_signalled()

    # libuv's loop: the same handlers, less of the core per call than asyncio's own loop
    # (about a tenth on a bare RPC here: bench/rpc_baseline.py), and grpc.aio runs on it.
    uvloop.run(main())
    sys.exit(0)
