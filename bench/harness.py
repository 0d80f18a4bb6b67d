"""Shared parts of the benchmarks: a throw-away PKI, services started as processes with
benchmark settings, a closed-loop load driver, and percentiles."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from services.runtime import dbsetup
from services.runtime.config import TLSConfig
from services.runtime.devpki import ensure_pki
from services.runtime.process import ServiceProcess

ROOT = Path(__file__).resolve().parent.parent
SECRETS = ROOT / ".dev" / "secrets"
DATABASE = "casino_bench"


class BenchPki:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def tls(self, identity: str) -> TLSConfig:
        return TLSConfig(
            self.folder / "ca.crt", self.folder / f"{identity}.crt", self.folder / f"{identity}.key"
        )


def bench_pki(tmp: Path) -> BenchPki:
    ensure_pki(tmp / "pki")
    return BenchPki(tmp / "pki")


def start_service(service: str, tmp: Path, pki: BenchPki, extra: str = "") -> ServiceProcess:
    dbsetup.migrate(DATABASE, [], SECRETS)
    config = tmp / f"{service}.toml"
    config.write_text(f"""
[service]
name = "{service}"
[tls]
ca_file = "{pki.folder / "ca.crt"}"
[database]
url = "postgresql+psycopg://casino_{service}@127.0.0.1:5432/{DATABASE}"
password_file = "{SECRETS / "postgres" / f"casino_{service}"}"
pool_size = 16
[telemetry]
access_log = false
{extra}
""")
    process = ServiceProcess(service, config, tmp / f"{service}.log", cwd=ROOT)
    process.start()
    process.wait_started()
    return process


async def drive(
    call: Callable[[], Awaitable[Any]], concurrency: int, seconds: float
) -> tuple[list[float], float]:
    """Closed loop: `concurrency` workers call back-to-back for `seconds`. Returns every
    call's latency (ms) and the elapsed wall time."""
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            await call()
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started


def percentiles(latencies: list[float]) -> tuple[float, float, float]:
    ordered = sorted(latencies)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return at(0.50), at(0.95), at(0.99)
