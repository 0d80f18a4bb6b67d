"""What a change does to one RPC's server CPU: two checkouts of the platform side by side.

On a shared 2-core machine whose speed drifts by half within minutes, two runs of a
benchmark minutes apart differ by more than most changes (one change to the runtime measured
+55-70% echo calls/s in back-to-back runs, and 12-13% less server CPU per call here). Here
the service runs twice at
once, from the older checkout (a `git worktree` of the commit to compare with) and from this
one, on the same database, Redis and PKI; one client drives them in turn, in short windows
(A B, B A, ...), so both see the same moments of the machine. Printed: the server process's
CPU per call and the calls per second of each, and the change in CPU per call.

Calls: `echo` (Ping, the runtime alone) or `balance` (the wallet's GetBalance, one
PostgreSQL read); or the edge: `edge-balance` (an authenticated balance read through it) or
`edge-catalog` (the unauthenticated catalog read, echo Ping), where the two edges (bench
settings of bench/edge_load.py) front one wallet and one echo service of this checkout and the
figures are the edge process's. Printed beside each: the P50 latency over all its windows.
Generated code (`gen/`) comes from this checkout's install: compare commits with the same
contracts. A benchmark, not a test: exits 0 either way.

    git worktree add /tmp/before <commit>
    .venv/bin/python bench/side_by_side.py /tmp/before [--call echo] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.edge_load import HttpClient, key_pair, start_edge, token  # noqa: E402
from bench.harness import (  # noqa: E402
    WALLET_FOR_READS,
    BenchPki,
    bench_pki,
    drive,
    fresh_database,
    machine_line,
    percentiles,
    process_cpu_seconds,
    start_service,
)
from casino.echo.v1 import echo_pb2, echo_pb2_grpc  # noqa: E402
from casino.wallet.v1 import wallet_pb2, wallet_pb2_grpc  # noqa: E402
from services.runtime.call import PLAYER_METADATA  # noqa: E402
from services.runtime.client import secure_channel  # noqa: E402
from services.runtime.process import ServiceProcess  # noqa: E402

CALLS = ("echo", "balance", "edge-balance", "edge-catalog")


async def main(before: Path, call: str, concurrency: int, rounds: int, seconds: float) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="side-by-side-"))
    pki = bench_pki(tmp)
    checkouts = {"before": before, "this": ROOT}
    if call.startswith("edge-"):
        await _edges(tmp, pki, checkouts, call, concurrency, rounds, seconds)
        return
    service, method, extra = (
        ("echo", "Ping", "") if call == "echo" else ("wallet", "GetBalance", WALLET_FOR_READS)
    )
    processes: dict[str, ServiceProcess] = {}
    for name, checkout in checkouts.items():
        (tmp / name).mkdir()
        processes[name] = start_service(service, tmp / name, pki, extra, checkout=checkout)
    channels = [
        secure_channel(f"127.0.0.1:{p.ports['port']}", pki.tls("edge"), service, default_timeout=5)
        for p in processes.values()
    ]
    try:
        calls = await _calls(call, processes, channels, pki)
        pids = {name: p.proc.pid for name, p in processes.items()}  # type: ignore[union-attr]
        print(
            f"{service} {method}, {concurrency} clients, {rounds} alternating windows of"
            f" {seconds:g} s each"
        )
        await _alternate(calls, pids, checkouts, concurrency, rounds, seconds)
    finally:
        for channel in channels:
            await channel.close()
        for process in processes.values():
            process.terminate()


async def _alternate(
    calls: dict[str, Callable[[], Awaitable[Any]]],
    pids: dict[str, int],
    checkouts: dict[str, Path],
    concurrency: int,
    rounds: int,
    seconds: float,
) -> None:
    """Drives the two sides in alternating windows (A B, B A, ...) and prints each one's
    server CPU per call, calls per second and P50 latency."""
    for one in calls.values():
        for _ in range(300):  # connections, caches, prepared statements
            await one()
    cpu = dict.fromkeys(calls, 0.0)
    latencies: dict[str, list[float]] = {name: [] for name in calls}
    elapsed = dict.fromkeys(calls, 0.0)
    for turn in range(rounds):
        for name in ("before", "this") if turn % 2 == 0 else ("this", "before"):
            cpu_before = process_cpu_seconds(pids[name]) or 0.0
            window, took = await drive(calls[name], concurrency, seconds)
            cpu[name] += (process_cpu_seconds(pids[name]) or 0.0) - cpu_before
            latencies[name] += window
            elapsed[name] += took
    per_call = {name: cpu[name] / len(latencies[name]) * 1e6 for name in calls}
    p50 = {name: percentiles(latencies[name])[0] for name in calls}
    for name, checkout in checkouts.items():
        print(
            f"  {name:<7} {per_call[name]:7.1f} us server CPU per call"
            f"  {len(latencies[name]) / elapsed[name]:7.0f} calls/s"
            f"  P50 {p50[name]:6.3f} ms   ({checkout})"
        )
    change = per_call["this"] / per_call["before"] - 1
    print(f"  server CPU per call: {change:+.1%} this checkout against the other")
    print(f"  P50: {p50['this'] - p50['before']:+.3f} ms this checkout against the other")


async def _edges(
    tmp: Path,
    pki: BenchPki,
    checkouts: dict[str, Path],
    call: str,
    concurrency: int,
    rounds: int,
    seconds: float,
) -> None:
    wallet = start_service("wallet", tmp, pki, WALLET_FOR_READS)
    echo = start_service("echo", tmp, pki)
    kid, key = key_pair(tmp / "jwt")
    ports = wallet.ports["port"], echo.ports["port"]
    edges = {
        name: start_edge(tmp / name, pki, *ports, tmp / "jwt", checkout=checkout)
        for name, checkout in checkouts.items()
    }
    clients = {name: HttpClient(started["public_port"]) for name, (_, started) in edges.items()}
    try:
        player = f"side-{uuid.uuid4().hex[:12]}"
        port = wallet.ports["port"]
        async with secure_channel(f"127.0.0.1:{port}", pki.tls("identity"), "wallet") as setup:
            await wallet_pb2_grpc.WalletServiceStub(setup).OpenAccount(
                wallet_pb2.OpenAccountRequest(player_id=player, currency_code="EUR")
            )
        if call == "edge-balance":
            path = f"/v1/players/{player}/accounts/EUR/balance"
            headers = {"Authorization": f"Bearer {token(kid, key, player)}"}
        else:
            path, headers = "/v1/ping", {}

        async def get(client: HttpClient) -> None:
            status, body = await client.get(path, headers)
            if status != 200:
                raise RuntimeError(f"{call}: {status} {body!r}")

        calls = {name: (lambda c=c: get(c)) for name, c in clients.items()}
        pids = {name: process.pid for name, (process, _) in edges.items()}
        print(f"edge {path}, {concurrency} clients, {rounds} alternating windows of {seconds:g} s")
        await _alternate(calls, pids, checkouts, concurrency, rounds, seconds)
    finally:
        for client in clients.values():
            await client.close()
        for process, _ in edges.values():
            process.terminate()
            process.wait(10)
        echo.terminate()
        wallet.terminate()


async def _calls(
    call: str, processes: dict[str, ServiceProcess], channels: list[Any], pki: BenchPki
) -> dict[str, Callable[[], Awaitable[Any]]]:
    names = list(processes)
    if call == "echo":
        ping = echo_pb2.PingRequest(payload=b"x" * 64)
        stubs = [echo_pb2_grpc.EchoServiceStub(c) for c in channels]
        return {n: (lambda s=s: s.Ping(ping)) for n, s in zip(names, stubs, strict=True)}
    # Both wallets share the bench database: one account, read by each.
    player = f"side-{uuid.uuid4().hex[:12]}"
    port = processes["this"].ports["port"]
    async with secure_channel(f"127.0.0.1:{port}", pki.tls("identity"), "wallet") as setup:
        await wallet_pb2_grpc.WalletServiceStub(setup).OpenAccount(
            wallet_pb2.OpenAccountRequest(player_id=player, currency_code="EUR")
        )
    request = wallet_pb2.GetBalanceRequest(player_id=player, currency_code="EUR")
    as_player = ((PLAYER_METADATA, player),)
    stubs = [wallet_pb2_grpc.WalletServiceStub(c) for c in channels]
    return {
        n: (lambda s=s: s.GetBalance(request, metadata=as_player))
        for n, s in zip(names, stubs, strict=True)
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path, help="the other checkout (a git worktree)")
    parser.add_argument("--call", choices=CALLS, default="echo")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=1.5)
    args = parser.parse_args()
    print(machine_line())
    fresh_database()
    before = args.before.resolve()
    asyncio.run(main(before, args.call, args.concurrency, args.rounds, args.seconds))
