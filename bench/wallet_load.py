"""Wallet throughput and latency under load, against the two ceilings of this stack.

Starts the wallet as its own process (mTLS, contract authorisation, PostgreSQL, Redis
balance cache, outbox relay to RabbitMQ on) and drives it over gRPC with N concurrent
clients for a fixed time, in two variants:

- mixed: each round picks a random account out of `--accounts`, places a bet and, one time
  in three, settles a win against it;
- hot: the same rounds, every client on one account (every posting queues on its row lock).

Every PlaceBet and SettleWin is one posting; each variant prints postings/s and P50/P95/P99
latency per RPC, plus the cores the wallet, PostgreSQL, RabbitMQ, Redis and this load
generator used. Then, at the same concurrency, it measures the two ceilings:

- pgbench's built-in TPC-B script on the same PostgreSQL (one balance update plus one
  history insert per transaction, the same shape of work as a posting), in a database of
  its own (`casino_pgbench`, created and initialised with `pgbench -i -s 10`);
- a bare echo `Ping` through the same runtime and client (what gRPC in Python costs with
  no work at all), measured as bench/rpc_baseline.py does.

The wallet and echo services run one at a time, and pgbench with neither running. Before each
wallet measurement the wallet's tables are vacuumed, as autovacuum would have done on a
production server (this one runs without it). The
summary compares wallet (mixed) postings/s with the lower ceiling. Target on the 2-core dev
machine: at least 0.8 of it, with P99 under 10 ms, at 8 to 32 clients. A benchmark, not a
test: it says PASS or FAIL and exits 0 either way.

    .venv/bin/python bench/wallet_load.py [--concurrency 8 16 32] [--seconds 5] \\
        [--accounts 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import glob
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import (  # noqa: E402
    DATABASE,
    BenchPki,
    CpuSplit,
    bench_pki,
    drive,
    fresh_database,
    machine_line,
    percentiles,
    pids_named,
    purge_unrouted_events,
    start_service,
    start_services,
    vacuum,
)
from casino.common.v1.money_pb2 import Money  # noqa: E402
from casino.echo.v1 import echo_pb2, echo_pb2_grpc  # noqa: E402
from casino.wallet.v1 import wallet_pb2, wallet_pb2_grpc  # noqa: E402
from services.runtime.client import secure_channel  # noqa: E402
from services.runtime.process import ServiceProcess  # noqa: E402

CURRENCY = "EUR"
WALLET_EXTRA = f"""
[listen]
max_concurrent_rpcs = 5000
[redis]
url = "redis://127.0.0.1:6379/0"
[wallet]
# The ledger checkpointer's first run reads every account head of the bench database's
# history: off, so it cannot land inside a measurement.
checkpoint_interval_seconds = 0
currencies = ["{CURRENCY}"]
outbox_relay = true
"""
STAKE = 100
WIN = 150
WIN_PROBABILITY = 1 / 3
ACCOUNT_FUNDS = 10**9  # a bet of 100 every millisecond for ten days
HOT_ACCOUNT_FUNDS = 10**13
SETUP_CONCURRENCY = 32
WARMUP_ROUNDS = 300

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
PGBENCH_DATABASE = "casino_pgbench"
PGBENCH_SCALE = 10

TARGET_RATIO = 0.8
TARGET_P99_MS = 10.0


@dataclass
class Measurement:
    label: str
    clients: int
    rate: float
    p50: float
    p95: float
    p99: float
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    cores: dict[str, float] = field(default_factory=dict)


def money(amount: int) -> Money:
    return Money(amount_minor=amount, currency_code=CURRENCY)


def uid() -> str:
    return uuid.uuid4().hex


def _error_key(exc: grpc.aio.AioRpcError) -> str:
    return f"{exc.code().name}: {(exc.details() or '')[:90]}"


class Recorder:
    """Times every RPC on its own: OK calls' latencies, failed calls counted by status."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors: collections.Counter[str] = collections.Counter()

    async def call(self, rpc: Callable[[Any], Awaitable[Any]], request: Any) -> bool:
        started = time.perf_counter()
        try:
            await rpc(request)
        except grpc.aio.AioRpcError as exc:
            self.errors[_error_key(exc)] += 1
            return False
        self.latencies.append((time.perf_counter() - started) * 1000)
        return True


class BetsAndWins:
    """One round: a bet on a player's account and, one time in three, a win against it."""

    def __init__(self, games: list[wallet_pb2_grpc.WalletServiceStub], players: list[str]) -> None:
        self.stubs = games
        self.players = players
        self.recorder = Recorder()

    async def round(self) -> None:
        player = random.choice(self.players)
        games = random.choice(self.stubs)
        bet_id, round_id = uid(), uid()
        placed = await self.recorder.call(
            games.PlaceBet,
            wallet_pb2.PlaceBetRequest(
                request_id=bet_id,
                player_id=player,
                amount=money(STAKE),
                round_id=round_id,
                game_id="dice",
                provider="inhouse",
            ),
        )
        if placed and random.random() < WIN_PROBABILITY:
            await self.recorder.call(
                games.SettleWin,
                wallet_pb2.SettleWinRequest(
                    request_id=uid(),
                    player_id=player,
                    amount=money(WIN),
                    round_id=round_id,
                    bet_request_id=bet_id,
                ),
            )


async def open_funded_accounts(
    identity: wallet_pb2_grpc.WalletServiceStub,
    payments: wallet_pb2_grpc.WalletServiceStub,
    players: list[str],
    funds: int,
) -> None:
    """Open and fund every account, SETUP_CONCURRENCY at a time. Any failure aborts."""
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def one(player: str) -> None:
        async with gate:
            await identity.OpenAccount(
                wallet_pb2.OpenAccountRequest(player_id=player, currency_code=CURRENCY)
            )
            await payments.Deposit(
                wallet_pb2.DepositRequest(request_id=uid(), player_id=player, amount=money(funds))
            )

    await asyncio.gather(*(one(p) for p in players))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_groups(service_pids: list[int]) -> dict[str, Callable[[], list[int]]]:
    return {
        "service": lambda: service_pids,
        "postgres": lambda: pids_named("postgres"),
        "rabbitmq": lambda: pids_named("beam.smp"),
        "redis": lambda: pids_named("redis-server"),
        "loadgen": lambda: [os.getpid()],
    }


async def measure_wallet(
    tmp: Path,
    pki: BenchPki,
    concurrency: list[int],
    seconds: float,
    accounts: int,
    processes: int,
) -> dict[str, list[Measurement]]:
    extra = WALLET_EXTRA
    if processes > 1:
        extra = extra.replace("[listen]\n", f"[listen]\nport = {free_port()}\nreuse_port = true\n")
    wallets = start_services("wallet", tmp, pki, extra, processes)
    pids = [w.proc.pid for w in wallets if w.proc is not None]
    results: dict[str, list[Measurement]] = {"mixed": [], "hot": []}
    target = f"127.0.0.1:{wallets[0].ports['port']}"
    try:
        async with contextlib.AsyncExitStack() as stack:

            async def stub(identity: str, n: int = 0) -> wallet_pb2_grpc.WalletServiceStub:
                # A distinct channel argument forces a connection of its own, which the
                # kernel hands to one of the processes sharing the port.
                channel = secure_channel(
                    target,
                    pki.tls(identity),
                    "wallet",
                    default_timeout=5,
                    options=[("casino.bench.connection", n)],
                )
                await stack.enter_async_context(channel)
                return wallet_pb2_grpc.WalletServiceStub(channel)

            identity = await stub("identity")
            payments = await stub("payments")
            games = [await stub("games", n) for n in range(4 * processes)]
            run = uid()[:8]
            players = [f"bench-{run}-{i}" for i in range(accounts)]
            hot = [f"bench-{run}-hot"]
            started = time.perf_counter()
            await open_funded_accounts(identity, payments, players, ACCOUNT_FUNDS)
            await open_funded_accounts(identity, payments, hot, HOT_ACCOUNT_FUNDS)
            print(
                f"\nsetup: {accounts} accounts + 1 hot account opened and funded in "
                f"{time.perf_counter() - started:.1f} s"
            )
            warmup = BetsAndWins(games, players)
            await asyncio.gather(*(warmup.round() for _ in range(WARMUP_ROUNDS)))
            if warmup.recorder.errors:
                print(f"warm-up errors: {dict(warmup.recorder.errors)}")
            await wait_for_relay()
            print_header(
                f"wallet: PlaceBet + SettleWin (1 in 3 bets), mixed = {accounts} accounts, "
                "hot = 1 account",
                "postings/s",
            )
            for n in concurrency:
                for label, pool in (("mixed", players), ("hot", hot)):
                    await vacuum("wallet")
                    load = BetsAndWins(games, pool)
                    cpu = CpuSplit(_cpu_groups(pids))
                    cpu.start()
                    _, elapsed = await drive(load.round, n, seconds)
                    cores = cpu.stop()
                    rec = load.recorder
                    p50, p95, p99 = percentiles(rec.latencies) if rec.latencies else (0, 0, 0)
                    m = Measurement(
                        label, n, len(rec.latencies) / elapsed, p50, p95, p99, rec.errors, cores
                    )
                    results[label].append(m)
                    print_wallet_row(m)
    finally:
        for wallet in wallets:
            report_log(wallet, wallet.terminate())
    return results


async def wait_for_relay(limit_seconds: float = 120.0) -> None:
    """Measure only once the relay has published what earlier runs (or the set-up) left in
    the outbox: a backlog drained during a measurement takes CPU from it."""
    started = time.perf_counter()
    async with await psycopg.AsyncConnection.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=DATABASE, autocommit=True
    ) as conn:
        while True:
            cur = await conn.execute(
                "SELECT count(*) FROM wallet.outbox WHERE publish_time IS NULL"
            )
            (backlog,) = await cur.fetchone() or (0,)
            if backlog < 100 or time.perf_counter() - started > limit_seconds:
                break
            await asyncio.sleep(0.5)
    waited = time.perf_counter() - started
    print(f"outbox backlog before measuring: {backlog} events (waited {waited:.1f} s)")


def report_log(service: ServiceProcess, exit_code: int) -> None:
    """The service's exit code and its warning/error log lines, counted by event."""
    counts: collections.Counter[str] = collections.Counter()
    for line in service.log_lines():
        level = line.get("level", "error" if line.get("unstructured") else "info")
        if level not in ("debug", "info"):
            event = re.sub(r"0x[0-9a-f]+|\d+", "N", str(line.get("event")))  # group alike
            counts[f"{level}: {event[:90]}"] += 1
    print(f"{service.service} exited with {exit_code}; warnings/errors logged: {counts.total()}")
    for key, count in counts.most_common(8):
        print(f"{'':>16}{count:>7} x {key}")


async def measure_echo(
    tmp: Path, pki: BenchPki, concurrency: list[int], seconds: float
) -> list[Measurement]:
    echo = start_service("echo", tmp, pki)
    assert echo.proc is not None
    out = []
    try:
        async with secure_channel(
            f"127.0.0.1:{echo.ports['port']}", pki.tls("games"), "echo", default_timeout=5
        ) as channel:
            stub = echo_pb2_grpc.EchoServiceStub(channel)
            request = echo_pb2.PingRequest(payload=b"x" * 64)
            for _ in range(500):  # warm-up: connections and lazy paths
                await stub.Ping(request)
            for n in concurrency:
                cpu = CpuSplit(_cpu_groups([echo.proc.pid]))
                cpu.start()
                latencies, elapsed = await drive(lambda: stub.Ping(request), n, seconds)
                cores = cpu.stop()
                p50, p95, p99 = percentiles(latencies)
                out.append(
                    Measurement("echo", n, len(latencies) / elapsed, p50, p95, p99, cores=cores)
                )
                print_row(out[-1])
    finally:
        echo.terminate()
    return out


# --- pgbench ------------------------------------------------------------------------------


def find_pgbench() -> str | None:
    found = shutil.which("pgbench")
    if found:
        return found
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"))
    return candidates[-1] if candidates else None


def _pg_env() -> dict[str, str]:
    return {**os.environ, "PGCONNECT_TIMEOUT": "5"}


def prepare_pgbench(binary: str) -> None:
    """Create casino_pgbench if missing and (re)initialise it, so every run starts alike."""
    with psycopg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=5
    ) as conn:
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (PGBENCH_DATABASE,)
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{PGBENCH_DATABASE}"')
    subprocess.run(
        [binary, *_pg_args(), "-i", "-q", "-s", str(PGBENCH_SCALE), PGBENCH_DATABASE],
        check=True,
        capture_output=True,
        timeout=300,
        env=_pg_env(),
    )


def _pg_args() -> list[str]:
    return ["-h", PG_HOST, "-p", str(PG_PORT), "-U", PG_USER]


def run_pgbench(binary: str, clients: int, seconds: float, tmp: Path) -> Measurement:
    """The default TPC-B script, `clients` connections, 2 threads; per-transaction latency
    from pgbench's transaction log. CPU is sampled inside the run (its backends exit with
    it), from 0.5 s after the start to 0.3 s before the end."""
    prefix = tmp / f"pgbench_{clients}"
    duration = max(1, round(seconds))
    started = time.perf_counter()
    proc = subprocess.Popen(
        [
            binary,
            *_pg_args(),
            "-c", str(clients),
            "-j", str(min(2, clients)),
            "-T", str(duration),
            "--no-vacuum",
            "-l", f"--log-prefix={prefix}",
            PGBENCH_DATABASE,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_pg_env(),
    )  # fmt: skip
    cores: dict[str, float] = {}
    try:
        if duration >= 2:
            cpu = CpuSplit(
                {"postgres": lambda: pids_named("postgres"), "loadgen": lambda: [proc.pid]}
            )
            time.sleep(0.5)
            cpu.start()
            time.sleep(max(0.0, started + duration - 0.3 - time.perf_counter()))
            cores = cpu.stop()
        stdout, stderr = proc.communicate(timeout=duration + 120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"pgbench failed ({proc.returncode}): {stderr.strip()}")
    tps = re.search(r"^tps = ([\d.]+)", stdout, re.MULTILINE)
    if tps is None:
        raise RuntimeError(f"no tps line in pgbench output:\n{stdout}")
    latencies = []
    for log in glob.glob(f"{prefix}.*"):
        for line in Path(log).read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[2].isdigit():  # client, tx no, latency (us), ...
                latencies.append(int(parts[2]) / 1000)
    p50, p95, p99 = percentiles(latencies) if latencies else (0.0, 0.0, 0.0)
    failed = re.search(r"number of failed transactions: (\d+)", stdout)
    errors: collections.Counter[str] = collections.Counter()
    if failed and int(failed.group(1)):
        errors["failed transactions"] = int(failed.group(1))
    return Measurement("pgbench", clients, float(tps.group(1)), p50, p95, p99, errors, cores)


def measure_pgbench(concurrency: list[int], seconds: float, tmp: Path) -> list[Measurement]:
    binary = find_pgbench()
    if binary is None:
        print("pgbench not found: no database ceiling")
        return []
    started = time.perf_counter()
    try:
        prepare_pgbench(binary)
    except (psycopg.Error, subprocess.SubprocessError, OSError) as exc:
        detail = getattr(exc, "stderr", None) or exc
        print(f"pgbench setup failed: {detail!s}: no database ceiling")
        return []
    print(
        f"{PGBENCH_DATABASE} initialised (scale {PGBENCH_SCALE}) in "
        f"{time.perf_counter() - started:.1f} s; TPC-B, -j 2, --no-vacuum"
    )
    out = []
    for n in concurrency:
        try:
            out.append(run_pgbench(binary, n, seconds, tmp))
        except (RuntimeError, subprocess.SubprocessError) as exc:
            print(f"pgbench at {n} clients failed: {exc}")
            continue
        print_row(out[-1])
    return out


# --- output -------------------------------------------------------------------------------

CPU_COLUMNS = ("service", "postgres", "rabbitmq", "redis", "loadgen", "irq", "other")


def print_header(title: str, unit: str) -> None:
    print(f"\n{title}")
    cpu = " ".join(f"{c[:8]:>8}" for c in CPU_COLUMNS)
    print(
        f"{'clients':>7} {'variant':>7} {unit:>10} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} "
        f"{'errors':>6} | cores: {cpu}"
    )


def print_row(m: Measurement) -> None:
    cpu = " ".join(f"{m.cores[c]:>8.2f}" if c in m.cores else f"{'-':>8}" for c in CPU_COLUMNS)
    print(
        f"{m.clients:>7} {m.label:>7} {m.rate:>10.0f} {m.p50:>7.2f} {m.p95:>7.2f} "
        f"{m.p99:>7.2f} {sum(m.errors.values()):>6} | {'':>6} {cpu}"
    )


def print_wallet_row(m: Measurement) -> None:
    print_row(m)
    for key, count in m.errors.most_common(5):
        print(f"{'':>16}{count:>7} x {key}")


def print_summary(
    wallet: list[Measurement], pgbench: list[Measurement], echo: list[Measurement]
) -> bool:
    pg = {m.clients: m for m in pgbench}
    ec = {m.clients: m for m in echo}
    print(
        f"\nsummary: wallet (mixed) against the lower ceiling; target ratio >= {TARGET_RATIO} "
        f"and p99 < {TARGET_P99_MS:g} ms, with no errors"
    )
    print(
        f"{'clients':>7} {'wallet/s':>9} {'p99 ms':>7} {'pgbench':>8} {'echo/s':>8} "
        f"{'ceiling':>8} {'ratio':>6} {'p99<10':>6} {'result':>6}"
    )
    all_pass = True
    for m in wallet:
        ceilings = [c.rate for c in (pg.get(m.clients), ec.get(m.clients)) if c is not None]
        ceiling = min(ceilings) if ceilings else None
        ratio = m.rate / ceiling if ceiling else None
        p99_ok = m.p99 < TARGET_P99_MS
        ok = ratio is not None and ratio >= TARGET_RATIO and p99_ok and not m.errors
        all_pass = all_pass and ok
        pg_rate = f"{pg[m.clients].rate:>8.0f}" if m.clients in pg else f"{'-':>8}"
        echo_rate = f"{ec[m.clients].rate:>8.0f}" if m.clients in ec else f"{'-':>8}"
        print(
            f"{m.clients:>7} {m.rate:>9.0f} {m.p99:>7.2f} {pg_rate} {echo_rate} "
            f"{ceiling or 0:>8.0f} {ratio or 0:>6.2f} {'yes' if p99_ok else 'no':>6} "
            f"{'PASS' if ok else 'FAIL':>6}"
        )
    return all_pass


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="wallet processes sharing the port (SO_REUSEPORT)",
    )
    args = parser.parse_args()
    print(machine_line())
    fresh_database()
    print(
        f"{os.cpu_count()} cores; {args.seconds:g} s per measurement; cores columns are CPU "
        "seconds per second (service = the wallet, the echo service, or nothing for pgbench; "
        "loadgen = this process, or pgbench; irq = softirq time, e.g. loopback networking)"
    )
    print(f"unrouted events left by earlier runs, dropped: {await purge_unrouted_events()}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        pki = bench_pki(tmp)
        wallet = await measure_wallet(
            tmp, pki, args.concurrency, args.seconds, args.accounts, args.processes
        )
        print_header("ceiling 1: pgbench TPC-B on the same PostgreSQL", "tps")
        pgbench = measure_pgbench(args.concurrency, args.seconds, tmp)
        print_header("ceiling 2: bare echo Ping through the same runtime and client", "calls/s")
        echo = await measure_echo(tmp, pki, args.concurrency, args.seconds)
    passed = print_summary(wallet["mixed"], pgbench, echo)
    print(f"\n{'PASS' if passed else 'FAIL'} (a benchmark: exit status 0 either way)")


if __name__ == "__main__":
    asyncio.run(main())
