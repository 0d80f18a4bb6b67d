"""Shared parts of the benchmarks: a throw-away PKI, services started as processes with
benchmark settings, a closed-loop load driver, percentiles, and where the CPU went."""

from __future__ import annotations

import asyncio
import gc
import os
import time
import timeit
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
# The bench virtual host, as the services reach it: the platform's user, the password in
# its file (scripts/lib.sh gives the broker the same).
AMQP_URL = f"amqp://{dbsetup.BROKER_USER}@127.0.0.1:5672/casino_bench"
AMQP_PASSWORD_FILE = dbsetup.broker_password_path(SECRETS)
REDIS_URL = "redis://127.0.0.1:6379/0"
# The wallet for benchmarks of its reads: the balance cache in Redis, no outbox relay, and
# no ledger checkpointer (its first run reads the bench database's every head).
WALLET_FOR_READS = f"""
[redis]
url = "{REDIS_URL}"
[wallet]
currencies = ["EUR"]
outbox_relay = false
checkpoint_interval_seconds = 0
"""


def fresh_database() -> None:
    """Start the run on a new bench database. PostgreSQL on the dev machine runs without
    autovacuum (its image turns it off), so what earlier runs left behind, the dead versions
    of the rows every batch updates (the verdict head, the accounts) above all, slowed each
    later run more: a compliance check measured 212/s on a new database and 117-150/s a few
    runs later, PostgreSQL's CPU per check up fourfold in one of them."""
    dbsetup.migrate(DATABASE, [], SECRETS, recreate=True)


async def vacuum(schema: str) -> None:
    """VACUUM (ANALYZE) every table of `schema` in the bench database: what autovacuum would
    have done by now on a production server (this one runs without it). Run between
    measurements, so that none inherits the dead row versions and stale statistics of the
    ones before. (It once hid a real fault: the wallet's PostgreSQL CPU per posting doubled
    from 8 to 32 clients without it, a generic plan cached while the tables were small and
    replanned only by an ANALYZE; the runtime now plans every execution, services/runtime/db.py.)"""
    import psycopg

    async with await psycopg.AsyncConnection.connect(
        host="127.0.0.1", user="postgres", dbname=DATABASE, autocommit=True
    ) as conn:
        cursor = await conn.execute(
            "SELECT format('%%I.%%I', schemaname, tablename) FROM pg_tables WHERE schemaname = %s",
            (schema,),
        )
        tables = [name for (name,) in await cursor.fetchall()]
        await conn.execute(f"VACUUM (ANALYZE) {', '.join(tables)}")


async def purge_unrouted_events() -> int:
    """Empty the bench virtual host's unrouted-events queue, where every event published
    with no consumer bound lands: left to grow over runs (100,000 events after a few), it
    has RabbitMQ paging and using CPU the measured services should have. Returns how many
    were dropped (the queue does not exist before a relay first ran: 0)."""
    import aiormq

    from services.runtime.broker import Broker
    from services.runtime.config import AmqpConfig
    from services.runtime.outbox import UNROUTED

    connection = await Broker(AmqpConfig(AMQP_URL, AMQP_PASSWORD_FILE)).connect()
    try:
        channel = await connection.channel()
        try:
            queue = await channel.get_queue(UNROUTED, ensure=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return 0
        result = await queue.purge()
        return int(result.message_count)
    finally:
        await connection.close()


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


def start_service(
    service: str, tmp: Path, pki: BenchPki, extra: str = "", *, checkout: Path = ROOT
) -> ServiceProcess:
    return start_services(service, tmp, pki, extra, checkout=checkout)[0]


def start_services(
    service: str,
    tmp: Path,
    pki: BenchPki,
    extra: str = "",
    processes: int = 1,
    *,
    checkout: Path = ROOT,
) -> list[ServiceProcess]:
    """`processes` copies of the service from one config; more than one needs
    `reuse_port = true` and a fixed `port` under [listen] in `extra`. `checkout`: the
    platform's tree the service's code is imported from (this one, or another commit's
    worktree to compare with; its migrations must match this one's)."""
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
[amqp]
url = "{AMQP_URL}"
password_file = "{AMQP_PASSWORD_FILE}"
[telemetry]
access_log = false
{extra}
""")
    started = []
    for i in range(processes):
        process = ServiceProcess(service, config, tmp / f"{service}-{i}.log", cwd=checkout)
        process.start()
        started.append(process)
    for process in started:
        process.wait_started()
    return started


def _settle_collector() -> None:
    """Before a measurement, take what the load generator holds (its imports, earlier
    measurements' latencies) out of the collector's full collections, as the services do
    (services.runtime.heap): a full collection here is a pause charged to the calls in
    flight, which the service did not cause."""
    gc.collect()
    gc.freeze()


async def drive(
    call: Callable[[], Awaitable[Any]], concurrency: int, seconds: float
) -> tuple[list[float], float]:
    """Closed loop: `concurrency` workers call back-to-back for `seconds`. Returns every
    call's latency (ms) and the elapsed wall time."""
    _settle_collector()
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


async def drive_at_rate(
    call: Callable[[], Awaitable[Any]], rate: float, seconds: float
) -> tuple[list[float], float]:
    """Open loop: calls start at `rate` per second, evenly spaced, whether or not earlier
    ones have answered (as independent players do). Latency is measured from each call's
    scheduled start, so a stalled service is charged for the calls queued behind it (no
    coordinated omission). Returns every call's latency (ms) and the elapsed wall time."""
    _settle_collector()
    latencies: list[float] = []
    interval = 1.0 / rate
    started = time.perf_counter()

    async def one(scheduled: float) -> None:
        await call()
        latencies.append((time.perf_counter() - scheduled) * 1000)

    tasks = []
    for i in range(int(rate * seconds)):
        scheduled = started + i * interval
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(scheduled)))
    await asyncio.gather(*tasks)
    return latencies, time.perf_counter() - started


def percentiles(latencies: list[float]) -> tuple[float, float, float]:
    ordered = sorted(latencies)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return at(0.50), at(0.95), at(0.99)


# --- CPU accounting (Linux /proc): where the cores went during a measurement -------------

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a live process (all its threads); None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime


def pids_named(comm: str) -> list[int]:
    """Processes whose command name (/proc/<pid>/comm) is exactly `comm`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == comm:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def machine_line() -> str:
    """What this machine is, for comparing figures across machines: the CPU model, the cores,
    and how fast this CPython runs a tiny loop (best of 5, so less noisy than the load runs).
    The same code has measured 2-3x apart on two machines both called "2 cores"; absolute
    targets (milliseconds) read differently on each, ratios less so."""
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    loop = min(timeit.repeat("sum((1, 2, 3))", number=200_000, repeat=5)) / 200_000
    return f"machine: {model}, {os.cpu_count()} cores; CPython sum((1, 2, 3)) {loop * 1e9:.0f} ns"


def machine_cpu_seconds() -> tuple[float, float]:
    """CPU seconds since boot, summed over every core: (user + nice + system, irq + softirq).
    Idle, iowait and steal (another VM's time) are left out."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = values[:7]
    return (user + nice + system) / _CLOCK_TICKS, (irq + softirq) / _CLOCK_TICKS


class CpuSplit:
    """Cores used per group of processes between `start()` and `stop()`, plus `irq` (interrupt
    and softirq time, e.g. loopback networking, charged to no process) and `other` (the rest
    of the machine's busy time). Groups are resolved to pids at both ends: a process started
    in between counts whole, one that exited in between is not counted."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self.groups = groups
        self._before: dict[str, dict[int, float]] = {}
        self._machine = (0.0, 0.0)
        self._started = 0.0

    def _snapshot(self) -> dict[str, dict[int, float]]:
        taken: dict[str, dict[int, float]] = {}
        for name, pids in self.groups.items():
            taken[name] = {}
            for pid in pids():
                seconds = process_cpu_seconds(pid)
                if seconds is not None:
                    taken[name][pid] = seconds
        return taken

    def start(self) -> None:
        self._before = self._snapshot()
        self._machine = machine_cpu_seconds()
        self._started = time.perf_counter()

    def stop(self) -> dict[str, float]:
        """Cores per group, `irq`, `other`, and `machine` (the total busy)."""
        after = self._snapshot()
        tasks, interrupts = machine_cpu_seconds()
        elapsed = time.perf_counter() - self._started
        cores = {
            name: sum(now - self._before[name].get(pid, 0.0) for pid, now in pids.items()) / elapsed
            for name, pids in after.items()
        }
        tasks_cores = (tasks - self._machine[0]) / elapsed
        irq = (interrupts - self._machine[1]) / elapsed
        cores["other"] = max(0.0, tasks_cores - sum(cores.values()))
        cores["irq"] = irq
        cores["machine"] = tasks_cores + irq
        return cores
