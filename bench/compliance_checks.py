"""Latency of the compliance service's bet check under concurrent load, beside a bare RPC.

Starts compliance as its own process (mTLS, contract authorisation, PostgreSQL, verdict log
on) with `--players` enrolled, KYC-verified players, a quarter of them with stake and loss
limits (so their checks also sum usage), and calls CheckAction(BET) on random players for
`--seconds` per load level: every call is a full decision, recorded in the hash-chained
verdict log before it answers. Every player has been checked once before the measurements,
so their states are cached, as for a player's every bet after the first (a player's first
check, or the first after a change to their state, also reads their state row and limits:
two more queries). Two kinds of load:

- closed loop: N clients, each calling again as soon as it has its answer (throughput);
- open loop: calls start at a fixed rate whether or not earlier ones have answered, as
  independent players' bets do (latency at a given load, without coordinated omission).

Before each measurement the compliance tables are vacuumed, as autovacuum would have done on
a production server (this one runs without it). Then the same loads on a bare echo `Ping`
through the same runtime and client: what an RPC that does nothing costs on this machine.
Prints calls/s, P50/P95/P99 and the cores used by the service, PostgreSQL and this load
generator. Target on the 2-core dev machine: P99 under 5 ms. A benchmark, not a test: it
says where the target holds and exits 0 either way.

    .venv/bin/python bench/compliance_checks.py [--concurrency 1 4 8 16 32] \\
        [--rates 200 400 600] [--seconds 5] [--players 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from google.type.date_pb2 import Date  # noqa: E402

from bench.harness import (  # noqa: E402
    CpuSplit,
    bench_pki,
    drive,
    drive_at_rate,
    fresh_database,
    machine_line,
    percentiles,
    pids_named,
    start_service,
    vacuum,
)
from casino.common.v1.money_pb2 import Money  # noqa: E402
from casino.compliance.v1 import compliance_pb2 as pb  # noqa: E402
from casino.compliance.v1 import compliance_pb2_grpc  # noqa: E402
from casino.echo.v1 import echo_pb2, echo_pb2_grpc  # noqa: E402
from services.runtime.call import PLAYER_METADATA  # noqa: E402
from services.runtime.client import secure_channel  # noqa: E402

TARGET_P99_MS = 5.0


def gbp(amount: int) -> Money:
    return Money(amount_minor=amount, currency_code="GBP")


async def enrol(stubs: dict[str, compliance_pb2_grpc.ComplianceServiceStub], n: int) -> list[str]:
    players = [f"bench-{uuid.uuid4().hex[:12]}" for _ in range(n)]

    async def one(i: int, player: str) -> None:
        await stubs["identity"].EnrolPlayer(
            pb.EnrolPlayerRequest(
                player_id=player,
                person=pb.Person(
                    given_name="Bench",
                    family_name=player,
                    birth_date=Date(year=1980, month=1, day=1),
                    email=f"{player}@example.org",
                    postcode="N1 9GU",
                    country_code="GB",
                ),
            )
        )
        await stubs["backoffice"].UpdateVerification(
            pb.UpdateVerificationRequest(
                player_id=player,
                name_verified=True,
                address_verified=True,
                birth_date_verified=True,
                verified_by="bench",
            )
        )
        if i % 4 == 0:
            for kind in (pb.LIMIT_KIND_STAKE, pb.LIMIT_KIND_LOSS):
                await stubs["edge"].SetLimit(
                    pb.SetLimitRequest(
                        player_id=player,
                        kind=kind,
                        period=pb.LIMIT_PERIOD_MONTH,
                        amount=gbp(10**12),
                    ),
                    metadata=((PLAYER_METADATA, player),),  # as the edge sends it
                )

    for start in range(0, n, 50):
        await asyncio.gather(*(one(i, p) for i, p in enumerate(players[start : start + 50], start)))
    return players


Load = tuple[str, float]  # ("clients", N) closed loop, or ("rate", R) open loop


async def measure(
    label: str,
    call: Callable[[], Awaitable[Any]],
    loads: list[Load],
    seconds: float,
    pid: int,
) -> list[bool]:
    met = []
    for kind, level in loads:
        await vacuum("compliance")
        cpu = CpuSplit(
            {
                "service": lambda: [pid],
                "postgres": lambda: pids_named("postgres"),
                "load": lambda: [os.getpid()],
            }
        )
        cpu.start()
        if kind == "clients":
            latencies, elapsed = await drive(call, int(level), seconds)
        else:
            latencies, elapsed = await drive_at_rate(call, level, seconds)
        cores = cpu.stop()
        p50, p95, p99 = percentiles(latencies)
        met.append(p99 < TARGET_P99_MS)
        load = f"{int(level)} clients" if kind == "clients" else f"{level:.0f}/s open"
        print(
            f"{label:<6} {load:>12} {len(latencies) / elapsed:>8.0f} {p50:>7.2f} {p95:>7.2f}"
            f" {p99:>7.2f} {cores['service']:>8.2f} {cores['postgres']:>5.2f}"
            f" {cores['load']:>5.2f}"
        )
    return met


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    parser.add_argument("--rates", type=float, nargs="+", default=[200, 400, 600])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--players", type=int, default=2000)
    args = parser.parse_args()
    print(machine_line())
    fresh_database()
    loads: list[Load] = [("clients", n) for n in args.concurrency]
    loads += [("rate", r) for r in args.rates]

    with tempfile.TemporaryDirectory(prefix="bench-compliance-") as folder:
        tmp = Path(folder)
        pki = bench_pki(tmp)
        key = tmp / "register.key"
        key.write_text("unused-by-checks\n")
        key.chmod(0o600)
        extra = f"""
[compliance]
register_url = "http://127.0.0.1:9"
# Every jurisdiction's currency needs its rate (the CDD threshold is EUR 2,000).
fx_to_eur = {{ EUR = "1", GBP = "1.17" }}
register_api_key_file = "{key}"
signing_key_file = "{tmp / "verdict.key"}"
public_key_file = "{tmp / "verdict.pub"}"
checkpoint_dir = "{tmp / "checkpoints"}"
outbox_relay = false
monitoring = false
"""
        print(
            f"compliance bet check vs a bare echo Ping, {args.players} players"
            f" ({args.players // 4} with stake and loss limits), {args.seconds:.0f} s per"
            f" level, {os.cpu_count()} cores"
        )
        print(
            f"{'rpc':<6} {'load':>12} {'calls/s':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}"
            f" {'service':>8} {'pg':>5} {'load':>5}  (cores)"
        )
        compliance = start_service("compliance", tmp, pki, extra)
        assert compliance.proc is not None
        channels = {
            who: secure_channel(
                f"127.0.0.1:{compliance.ports['port']}",
                pki.tls(who),
                "compliance",
                default_timeout=30,
            )
            for who in ("identity", "backoffice", "edge", "games")
        }
        stubs = {who: compliance_pb2_grpc.ComplianceServiceStub(c) for who, c in channels.items()}
        denied = 0
        try:
            players = await enrol(stubs, args.players)
            games = stubs["games"]

            async def bet(player: str | None = None) -> None:
                nonlocal denied
                reply = await games.CheckAction(
                    pb.CheckActionRequest(
                        player_id=player or random.choice(players),
                        action=pb.ACTION_BET,
                        amount=gbp(100),
                        product=pb.PRODUCT_TABLE,
                        request_country_code="GB",
                        request_id=uuid.uuid4().hex,
                    )
                )
                denied += reply.verdict.decision != pb.DECISION_ALLOW

            await drive(bet, 8, 2.0)  # warm up: connections, the interpreter's paths
            for start in range(0, len(players), 50):  # every player's state cached
                await asyncio.gather(*(bet(player) for player in players[start : start + 50]))
            met = await measure("check", bet, loads, args.seconds, compliance.proc.pid)
        finally:
            for channel in channels.values():
                await channel.close()
            compliance.terminate()

        # The same loads on an RPC that does nothing: what the runtime alone costs here.
        echo = start_service("echo", tmp, pki)
        assert echo.proc is not None
        try:
            async with secure_channel(
                f"127.0.0.1:{echo.ports['port']}", pki.tls("games"), "echo", default_timeout=30
            ) as channel:
                stub = echo_pb2_grpc.EchoServiceStub(channel)
                ping = echo_pb2.PingRequest(payload=b"x" * 64)

                async def call_echo() -> None:
                    await stub.Ping(ping)

                await drive(call_echo, 8, 2.0)
                echo_met = await measure("echo", call_echo, loads, args.seconds, echo.proc.pid)
        finally:
            echo.terminate()
        if denied:
            print(f"note: {denied} checks were denied (expected none)")
        passing = [f"{k} {v:g}" for (k, v), ok in zip(loads, met, strict=True) if ok]
        echo_passing = [f"{k} {v:g}" for (k, v), ok in zip(loads, echo_met, strict=True) if ok]
        print(
            f"target P99 < {TARGET_P99_MS:.0f} ms: check meets it at"
            f" [{', '.join(passing) or 'none'}]; a bare echo at"
            f" [{', '.join(echo_passing) or 'none'}]."
            f" {'PASS' if all(met) else 'FAIL'} (at every level)"
        )


if __name__ == "__main__":
    asyncio.run(main())
