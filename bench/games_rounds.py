"""Full dice rounds through the games service under concurrent load, where a round's time
goes, RNG draws/s, and a check that every penny adds up afterwards.

Starts compliance (bet checks; its register URL points at an unused port, as in
bench/compliance_checks.py: registration is not on the bet path), the wallet (outbox relay
to RabbitMQ on), the RNG and games (sessions in Redis, round events published to RabbitMQ,
its spans written to a file) as processes on the bench database, each calling the others
over mTLS. Enrols `--players` KYC-verified players with a funded GBP account and one dice
session each, then plays PlayRound (stake 100, roll under 5000, a fresh request_id each
time): compliance bet check, debit, draw, credit, archive, answered after the archive.
Each call takes a session no other call is using, so no session ever plays two rounds at
once. Two kinds of load, `--seconds` each:

- closed loop: N clients, each playing again as soon as it has its answer (throughput);
- open loop: rounds start at a fixed rate whether or not earlier ones have answered, as
  independent players do (latency at a given load, without coordinated omission).

Prints rounds/s, P50/P95/P99 and the cores used by games, compliance, wallet, RNG,
PostgreSQL, Redis + RabbitMQ and this load generator. Then where a round's time goes at 1
client and at the highest concurrency, from the games process's spans (one server span per
PlayRound, one client span per upstream call; the gaps between them are games' own work:
journal writes, the archive, Redis, the handler). Then RNG draws/s: OpenRound and a
closing Draw against the RNG service directly at 8 clients, and
uniform_int(10000) in process. Last the money: every round's stake and payout as PlayRound
answered them (a failed call is retried with its request_id, as a client would) against
every player's wallet balance. A benchmark, not a test: it exits 0 either way.

    .venv/bin/python bench/games_rounds.py [--concurrency 1 4 8 16 32] \\
        [--rates 50 100 200] [--seconds 10] [--players 500]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from google.type.date_pb2 import Date  # noqa: E402

from bench.harness import (  # noqa: E402
    REDIS_URL,
    BenchPki,
    CpuSplit,
    bench_pki,
    drive,
    drive_at_rate,
    fresh_database,
    machine_line,
    percentiles,
    pids_named,
    purge_unrouted_events,
    start_service,
)
from casino.common.v1.money_pb2 import Money  # noqa: E402
from casino.compliance.v1 import compliance_pb2, compliance_pb2_grpc  # noqa: E402
from casino.games.v1 import games_pb2 as pb  # noqa: E402
from casino.games.v1 import games_pb2_grpc  # noqa: E402
from casino.rng.v1 import rng_pb2, rng_pb2_grpc  # noqa: E402
from casino.wallet.v1 import wallet_pb2, wallet_pb2_grpc  # noqa: E402
from services.rng.drbg import ChaChaDrbg, RoundStream  # noqa: E402
from services.rng.sampling import uniform_int  # noqa: E402
from services.runtime.call import PLAYER_METADATA  # noqa: E402
from services.runtime.client import secure_channel  # noqa: E402
from services.runtime.process import ServiceProcess  # noqa: E402
from services.runtime.status import error_info  # noqa: E402

CURRENCY = "GBP"
COUNTRY = "GB"
STAKE = 100
TARGET = 5000
DEPOSIT = 10**9  # ten million pounds: a 100 bet every millisecond for more than a day
SETUP_CONCURRENCY = 32
RNG_CLIENTS = 8
DICE_ROLLS = 10_000
SPAN_FLUSH_MS = 200
BET = pb.Bet(dice=pb.DiceBet(stake_minor=STAKE, target=TARGET, direction=pb.DICE_DIRECTION_UNDER))

# A PlayRound's upstream calls, in the order games makes them, and the games work between
# them (services/games/server.py PlayRound, services/games/lifecycle.py).
STEPS = [
    ("/casino.compliance.v1.ComplianceService/CheckAction", "compliance CheckAction (bet check)"),
    ("/casino.rng.v1.RngService/OpenRound", "rng OpenRound"),
    ("/casino.wallet.v1.WalletService/PlaceBet", "wallet PlaceBet (debit)"),
    ("/casino.rng.v1.RngService/Draw", "rng Draw (closing the RNG round)"),
    ("/casino.wallet.v1.WalletService/SettleWin", "wallet SettleWin (credit, 0 on a loss)"),
]
GAPS = [
    "games: session load (Redis) + request_id lookup (PG)",
    "games: journal the OPEN round (PG)",
    "games: between OpenRound and the debit",
    "games: journal DEBITED with the RNG round (PG)",
    "games: resolve + journal DRAWN (PG)",
    "games: archive + chain + outbox (PG), session (Redis)",
]
UPSTREAM_SUM = f"upstream calls (sum of the {len(STEPS)})"
PLAY_ROUND = "/casino.games.v1.GamesService/PlayRound"


def gbp(amount: int) -> Money:
    return Money(amount_minor=amount, currency_code=CURRENCY)


def uid() -> str:
    return uuid.uuid4().hex


def error_key(exc: grpc.aio.AioRpcError) -> str:
    info = error_info(exc)
    reason = info.reason if info is not None else (exc.details() or "")[:80]
    return f"{exc.code().name}: {reason}"


def as_player(player_id: str) -> tuple[tuple[str, str], ...]:
    """The metadata the edge adds after verifying the player's token."""
    return ((PLAYER_METADATA, player_id),)


# --- services -----------------------------------------------------------------------------


def _children(name: str) -> set[int]:
    """Live child processes of this one running services.<name>."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == os.getpid() and f"services.{name}".encode() in cmdline:
            found.add(int(entry.name))
    return found


def start(
    name: str, tmp: Path, pki: BenchPki, extra: str, started: dict[str, ServiceProcess]
) -> ServiceProcess:
    """start_service, recorded in `started`; a process that failed to come up is stopped
    (the harness leaves one that did not start in time running)."""
    before = _children(name)
    try:
        process = start_service(name, tmp, pki, extra)
    except BaseException:
        for pid in _children(name) - before:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        raise
    started[name] = process
    return process


def upstream(name: str, process: ServiceProcess) -> str:
    return f"""
[upstreams.{name}]
target = "127.0.0.1:{process.ports["port"]}"
service = "{name}"
"""


def start_all(tmp: Path, pki: BenchPki, started: dict[str, ServiceProcess]) -> Path:
    """Compliance, wallet, RNG, then games against them. Returns games' span file."""
    key = tmp / "register.key"
    key.write_text("unused-by-bets\n")
    key.chmod(0o600)
    compliance = start(
        "compliance",
        tmp,
        pki,
        f"""
[listen]
max_concurrent_rpcs = 5000
[compliance]
register_url = "http://127.0.0.1:9"
# Every jurisdiction's currency needs its rate (the CDD threshold is EUR 2,000).
fx_to_eur = {{ EUR = "1", GBP = "1.17" }}
register_api_key_file = "{key}"
signing_key_file = "{tmp / "verdict.key"}"
public_key_file = "{tmp / "verdict.pub"}"
checkpoint_dir = "{tmp / "compliance-checkpoints"}"
outbox_relay = false
monitoring = false
""",
        started,
    )
    wallet = start(
        "wallet",
        tmp,
        pki,
        f"""
[listen]
max_concurrent_rpcs = 5000
[redis]
url = "{REDIS_URL}"
[wallet]
# The ledger checkpointer's first run reads every account head of the bench database's
# history: off, so it cannot land inside a measurement.
checkpoint_interval_seconds = 0
currencies = ["{CURRENCY}"]
outbox_relay = true
""",
        started,
    )
    rng = start(
        "rng",
        tmp,
        pki,
        f"""
[listen]
max_concurrent_rpcs = 5000
[rng]
seal_key_file = "{tmp / "rng-seal.key"}"
signing_key_file = "{tmp / "rng-signing.key"}"
public_key_file = "{tmp / "rng-signing.pub"}"
checkpoint_dir = "{tmp / "rng-checkpoints"}"
""",
        started,
    )
    spans = tmp / "games.spans.jsonl"
    # The harness's config ends its [telemetry] table (access_log = false) right before
    # `extra`, so these first lines, before any table header, are more [telemetry] keys.
    start(
        "games",
        tmp,
        pki,
        f"""trace_exporter = "file"
trace_file = "{spans}"
trace_export_delay_ms = {SPAN_FLUSH_MS}
[listen]
max_concurrent_rpcs = 5000
[redis]
url = "{REDIS_URL}"
{upstream("compliance", compliance)}
{upstream("wallet", wallet)}
{upstream("rng", rng)}
[games]
publish_events = true
signing_key_file = "{tmp / "games-signing.key"}"
public_key_file = "{tmp / "games-signing.pub"}"
checkpoint_dir = "{tmp / "games-checkpoints"}"
""",
        started,
    )
    return spans


def report_logs(started: dict[str, ServiceProcess], codes: dict[str, int]) -> None:
    """Each service's exit code and its warning/error log lines, counted by event."""
    print("\nservices: exit code, warnings/errors logged")
    for name, process in started.items():
        counts: collections.Counter[str] = collections.Counter()
        for line in process.log_lines():
            level = line.get("level", "error" if line.get("unstructured") else "info")
            if level not in ("debug", "info"):
                event = re.sub(r"0x[0-9a-f]+|\d+", "N", str(line.get("event")))
                counts[f"{level}: {event[:90]}"] += 1
        print(f"  {name:<10} exit {codes.get(name, '?')}, {counts.total()} warnings/errors")
        for key, count in counts.most_common(4):
            print(f"  {'':>10} {count:>6} x {key}")


# --- clients and players ------------------------------------------------------------------


class Stubs:
    def __init__(self, pki: BenchPki, started: dict[str, ServiceProcess]) -> None:
        self.channels: list[grpc.aio.Channel] = []

        def channel(service: str, identity: str) -> grpc.aio.Channel:
            made = secure_channel(
                f"127.0.0.1:{started[service].ports['port']}",
                pki.tls(identity),
                service,
                default_timeout=30,
            )
            self.channels.append(made)
            return made

        self.games = games_pb2_grpc.GamesServiceStub(channel("games", "edge"))
        self.compliance = {
            who: compliance_pb2_grpc.ComplianceServiceStub(channel("compliance", who))
            for who in ("identity", "backoffice", "games")
        }
        self.wallet = {
            who: wallet_pb2_grpc.WalletServiceStub(channel("wallet", who))
            for who in ("payments", "games")
        }
        self.rng = rng_pb2_grpc.RngServiceStub(channel("rng", "games"))

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()


@dataclass(frozen=True)
class Seat:
    player_id: str
    session_id: str


async def enrol(stubs: Stubs, n: int) -> list[Seat]:
    """`n` players as tests/games/conftest.py Clients.player() makes them (enrolled, KYC
    verified, a funded GBP account), each with a dice session started through the edge."""
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)
    run = uid()[:8]

    async def one(i: int) -> Seat:
        player = f"bench-{run}-{i}"
        async with gate:
            await stubs.compliance["identity"].EnrolPlayer(
                compliance_pb2.EnrolPlayerRequest(
                    player_id=player,
                    person=compliance_pb2.Person(
                        given_name="Bench",
                        family_name=player,
                        birth_date=Date(year=1980, month=4, day=2),
                        email=f"{player}@example.org",
                        postcode="N1 9GU",
                        country_code=COUNTRY,
                    ),
                )
            )
            await stubs.compliance["backoffice"].UpdateVerification(
                compliance_pb2.UpdateVerificationRequest(
                    player_id=player,
                    name_verified=True,
                    address_verified=True,
                    birth_date_verified=True,
                    verified_by="bench",
                )
            )
            await stubs.wallet["payments"].OpenAccount(
                wallet_pb2.OpenAccountRequest(player_id=player, currency_code=CURRENCY)
            )
            await stubs.wallet["payments"].Deposit(
                wallet_pb2.DepositRequest(
                    request_id=f"dep-{uid()}",
                    player_id=player,
                    amount=gbp(DEPOSIT),
                    payment_id=f"pay-{uid()[:8]}",
                )
            )
            reply = await stubs.games.StartSession(
                pb.StartSessionRequest(
                    player_id=player,
                    request_id=uid(),
                    game_id="dice",
                    currency_code=CURRENCY,
                    request_country_code=COUNTRY,
                ),
                metadata=as_player(player),
            )
            return Seat(player, reply.session.session_id)

    return list(await asyncio.gather(*(one(i) for i in range(n))))


# --- the rounds ---------------------------------------------------------------------------


@dataclass
class Ledger:
    """Each round's money as PlayRound answered it, by round id (a replayed answer is the
    same round, counted once): (player, stake taken, payout)."""

    rounds: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    voided: int = 0
    # Answers with a round neither completed nor voided (PlayRound answers after the
    # archive, so: none).
    unfinished: int = 0

    def book(self, player_id: str, r: pb.Round) -> None:
        if r.state == pb.ROUND_STATE_COMPLETED:
            self.rounds[r.round_id] = (player_id, r.stake.amount_minor, r.payout.amount_minor)
        elif r.state == pb.ROUND_STATE_VOIDED:  # stake given back (or never taken)
            self.rounds[r.round_id] = (player_id, 0, 0)
            self.voided += 1
        else:
            self.unfinished += 1

    def net_by_player(self) -> dict[str, int]:
        net: dict[str, int] = collections.defaultdict(int)
        for player, stake, payout in self.rounds.values():
            net[player] += payout - stake
        return net


class Rounds:
    """PlayRound calls, each on a session no other call holds (sessions wait in a queue)."""

    def __init__(self, stub: games_pb2_grpc.GamesServiceStub, seats: list[Seat]) -> None:
        self.stub = stub
        self.free: asyncio.Queue[Seat] = asyncio.Queue()
        for seat in seats:
            self.free.put_nowait(seat)
        self.ledger = Ledger()
        self.errors: collections.Counter[str] = collections.Counter()
        # Calls that failed: (seat, request_id), retried before the money is checked.
        self.failed: list[tuple[Seat, str]] = []

    async def play_once(self, seat: Seat, request_id: str) -> pb.PlayRoundResponse:
        reply: pb.PlayRoundResponse = await self.stub.PlayRound(
            pb.PlayRoundRequest(
                player_id=seat.player_id,
                session_id=seat.session_id,
                request_id=request_id,
                bet=BET,
            ),
            metadata=as_player(seat.player_id),
        )
        self.ledger.book(seat.player_id, reply.round)
        return reply

    async def play(self) -> None:
        seat = await self.free.get()
        request_id = uid()
        try:
            await self.play_once(seat, request_id)
        except grpc.aio.AioRpcError as exc:
            self.errors[error_key(exc)] += 1
            self.failed.append((seat, request_id))
        finally:
            self.free.put_nowait(seat)


Load = tuple[str, float]  # ("clients", N) closed loop, or ("rate", R) open loop
CPU_COLUMNS = ("games", "compliance", "wallet", "rng", "postgres", "redis+mq", "load", "other")


def cpu_groups(started: dict[str, ServiceProcess]) -> dict[str, Callable[[], list[int]]]:
    def pid(name: str) -> list[int]:
        process = started.get(name)
        return [process.proc.pid] if process is not None and process.proc is not None else []

    return {
        "games": lambda: pid("games"),
        "compliance": lambda: pid("compliance"),
        "wallet": lambda: pid("wallet"),
        "rng": lambda: pid("rng"),
        "postgres": lambda: pids_named("postgres"),
        "redis+mq": lambda: pids_named("redis-server") + pids_named("beam.smp"),
        "load": lambda: [os.getpid()],
    }


@dataclass
class Window:
    """A measured level: its wall-clock bounds (for the spans), span-file offset and the
    latencies the bench saw."""

    label: str
    start_ns: int
    end_ns: int
    offset: int
    latencies: list[float]


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


async def measure(
    rounds: Rounds,
    loads: list[Load],
    seconds: float,
    started: dict[str, ServiceProcess],
    spans: Path,
    keep: set[float],
) -> list[Window]:
    """Each load level in turn, printed as it finishes, after a row of the cores the
    services use idle (their background workers); the windows of closed-loop levels in
    `keep` are returned for the breakdown. cpu ms/rd: CPU of games, compliance, wallet and
    RNG per round (PostgreSQL's is shared with the rest of the machine: not included)."""
    cpu_head = " ".join(f"{c[:8]:>8}" for c in CPU_COLUMNS)
    print(
        f"\n{'load':>12} {'rounds/s':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}"
        f" {'errors':>6} {'cpu ms/rd':>9} | cores: {cpu_head}"
    )
    cpu = CpuSplit(cpu_groups(started))
    cpu.start()
    await asyncio.sleep(min(seconds, 3.0))
    cores = cpu.stop()
    cells = " ".join(f"{cores[c]:>8.2f}" for c in CPU_COLUMNS)
    print(f"{'idle':>12} {'-':>8} {'-':>7} {'-':>7} {'-':>7} {'-':>6} {'-':>9} | {'':>6} {cells}")
    windows = []
    for kind, level in loads:
        rounds.errors = collections.Counter()
        offset = file_size(spans)
        cpu = CpuSplit(cpu_groups(started))
        start_ns = time.time_ns()
        cpu.start()
        if kind == "clients":
            latencies, elapsed = await drive(rounds.play, int(level), seconds)
        else:
            latencies, elapsed = await drive_at_rate(rounds.play, level, seconds)
        cores = cpu.stop()
        end_ns = time.time_ns()
        errors = rounds.errors.total()
        p50, p95, p99 = percentiles(latencies) if latencies else (0.0, 0.0, 0.0)
        plural = "s" if level != 1 else ""
        label = f"{int(level)} client{plural}" if kind == "clients" else f"{level:g}/s open"
        cells = " ".join(f"{cores[c]:>8.2f}" for c in CPU_COLUMNS)
        rate = (len(latencies) - errors) / elapsed
        services = sum(cores[c] for c in ("games", "compliance", "wallet", "rng"))
        print(
            f"{label:>12} {rate:>8.1f} {p50:>7.1f} {p95:>7.1f} {p99:>7.1f} {errors:>6}"
            f" {1000 * services / rate if rate else 0:>9.1f} | {'':>6} {cells}"
        )
        if kind == "rate" and rate < 0.9 * level:
            print(f"{'':>14}above capacity: rounds queue, latency grows with the run's length")
        for key, count in rounds.errors.most_common(4):
            print(f"{'':>14}{count:>6} x {key}")
        if kind == "clients" and level in keep:
            windows.append(Window(label, start_ns, end_ns, offset, latencies))
    return windows


# --- where the time goes ------------------------------------------------------------------


def read_spans(path: Path, window: Window) -> list[dict[str, Any]]:
    """Spans the games process wrote from the window's offset on (one JSON object per line;
    a line still being written is skipped), up to the first that ended well after the window
    (spans are exported within SPAN_FLUSH_MS of ending)."""
    spans = []
    try:
        with path.open("rb") as f:
            f.seek(window.offset)
            for line in f:
                try:
                    span = json.loads(line)
                except ValueError:
                    continue
                if span.get("end_unix_nano", 0) > window.end_ns + 5 * 10**9:
                    break
                spans.append(span)
    except OSError:
        pass
    return spans


@dataclass
class Breakdown:
    traced: int  # PlayRound server spans in the window
    complete: int  # of which OK, with exactly the upstream calls of STEPS in order
    rows: dict[str, list[float]]  # label -> per-round ms, over the complete rounds


def breakdown(spans: list[dict[str, Any]], window: Window) -> Breakdown:
    servers = {
        s["trace_id"]: s
        for s in spans
        if s.get("kind") == "SERVER"
        and s.get("name") == PLAY_ROUND
        and s["start_unix_nano"] >= window.start_ns
        and s["end_unix_nano"] <= window.end_ns
    }
    calls: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for s in spans:
        if s.get("kind") == "CLIENT" and s.get("trace_id") in servers:
            calls[s["trace_id"]].append(s)
    names = [name for name, _ in STEPS]
    rows: dict[str, list[float]] = collections.defaultdict(list)
    complete = 0
    for trace_id, server in servers.items():
        if server.get("attributes", {}).get("rpc.grpc.status_code", "0") != "0":
            continue
        steps = sorted(calls[trace_id], key=lambda s: s["start_unix_nano"])
        if [s["name"] for s in steps] != names:
            continue
        complete += 1
        ms = 1e-6
        edges = [server["start_unix_nano"]]
        upstream_total = 0.0
        for (_, label), s in zip(STEPS, steps, strict=True):
            duration = (s["end_unix_nano"] - s["start_unix_nano"]) * ms
            rows[label].append(duration)
            upstream_total += duration
            edges += [s["start_unix_nano"], s["end_unix_nano"]]
        edges.append(server["end_unix_nano"])
        for i, label in enumerate(GAPS):
            rows[label].append((edges[2 * i + 1] - edges[2 * i]) * ms)
        total = (server["end_unix_nano"] - server["start_unix_nano"]) * ms
        rows[UPSTREAM_SUM].append(upstream_total)
        rows["games own (db journal/archive + overhead)"].append(total - upstream_total)
        rows["PlayRound server span"].append(total)
    return Breakdown(len(servers), complete, rows)


def print_row(label: str, values: list[float], whole: float | None) -> None:
    p50, _, p99 = percentiles(values)
    mean = statistics.fmean(values)
    share = f" {100 * mean / whole:>5.0f}%" if whole else ""
    print(f"  {label:<56} {mean:>7.2f} {p50:>7.2f} {p99:>7.2f}{share}")


def print_breakdown(window: Window, b: Breakdown) -> None:
    print(
        f"\nwhere the time goes at {window.label}: {b.complete} of {b.traced} PlayRound"
        f" spans (games' trace file) in the window complete (OK, the {len(STEPS)} upstream calls"
        " in order)"
    )
    print(f"  {'step, in order':<56} {'mean ms':>7} {'p50 ms':>7} {'p99 ms':>7} {'share':>6}")
    whole = statistics.fmean(b.rows["PlayRound server span"])
    order = [GAPS[0]]
    for i, (_, label) in enumerate(STEPS):
        order += [label, GAPS[i + 1]]
    for label in order:
        print_row(label, b.rows[label], whole)
    print(f"  {'-' * 56}")
    for label in (
        UPSTREAM_SUM,
        "games own (db journal/archive + overhead)",
        "PlayRound server span",
    ):
        print_row(label, b.rows[label], whole)
    print_row("PlayRound as the bench saw it (every call in the window)", window.latencies, None)
    seen = statistics.fmean(window.latencies)
    print(
        f"  {'outside the server span (TLS, HTTP/2, loop queueing)':<56}"
        f" {seen - whole:>7.2f}   (mean difference)"
    )


# --- RNG ------------------------------------------------------------------------------------


def dice_draw(round_id: str) -> rng_pb2.DrawRequest:
    return rng_pb2.DrawRequest(
        round_id=round_id,
        specs=[rng_pb2.DrawSpec(integers=rng_pb2.IntegerDraw(low=0, high=DICE_ROLLS - 1, count=1))],
        draw_index=0,
        close_round=True,
    )


async def rng_service(
    stub: rng_pb2_grpc.RngServiceStub, seconds: float, started: dict[str, ServiceProcess]
) -> None:
    errors: collections.Counter[str] = collections.Counter()

    async def one() -> None:
        try:
            opened = await stub.OpenRound(
                rng_pb2.OpenRoundRequest(
                    request_id=uid(), game_id="dice", game_inputs=b'{"bench":true}'
                )
            )
            await stub.Draw(dice_draw(opened.round.round_id))
        except grpc.aio.AioRpcError as exc:
            errors[error_key(exc)] += 1

    await drive(one, RNG_CLIENTS, 1.0)  # warm up
    errors.clear()
    groups = cpu_groups(started)
    cpu = CpuSplit({k: groups[k] for k in ("rng", "postgres", "load")})
    cpu.start()
    latencies, elapsed = await drive(one, RNG_CLIENTS, seconds)
    cores = cpu.stop()
    p50, p95, p99 = percentiles(latencies)
    print(
        f"  rng service, {RNG_CLIENTS} clients, OpenRound + closing Draw(1 of {DICE_ROLLS}):"
        f" {(len(latencies) - errors.total()) / elapsed:,.0f} rounds (= draws)/s,"
        f" per round P50 {p50:.1f} / P95 {p95:.1f} / P99 {p99:.1f} ms, {errors.total()} errors;"
        f" cores rng {cores['rng']:.2f}, pg {cores['postgres']:.2f}, load {cores['load']:.2f}"
    )
    for key, count in errors.most_common(4):
        print(f"{'':>14}{count:>6} x {key}")


def rng_in_process() -> None:
    stream = RoundStream(bytes(32), b"bench")
    n = 200_000
    started = time.perf_counter()
    for _ in range(n):
        uniform_int(stream, DICE_ROLLS)
    rate = n / (time.perf_counter() - started)
    print(f"  in process, one core: uniform_int(n={DICE_ROLLS}) {rate:>12,.0f} draws/s")
    drbg = ChaChaDrbg()
    seeds = [drbg.generate(32) for _ in range(20_000)]
    started = time.perf_counter()
    for seed in seeds:
        uniform_int(RoundStream(seed, b"dice|bet"), DICE_ROLLS)
    rate = len(seeds) / (time.perf_counter() - started)
    print(f"  in process, one core: round stream (HKDF + ChaCha20) + 1 roll {rate:>8,.0f} /s")


# --- the money ------------------------------------------------------------------------------


async def settle_failed(rounds: Rounds) -> int:
    """Retry every failed call with its request_id (the round, finished first if it was left
    part way, or played now if it never started). Returns how many remain unknown."""
    unknown = 0
    refused: collections.Counter[str] = collections.Counter()
    for seat, request_id in rounds.failed:
        for attempt in range(3):
            try:
                await rounds.play_once(seat, request_id)
                break
            except grpc.aio.AioRpcError as exc:
                if exc.code() in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                ):
                    if attempt == 2:
                        unknown += 1
                    await asyncio.sleep(1)
                    continue
                refused[error_key(exc)] += 1  # a final refusal: nothing staked
                break
    if rounds.failed:
        print(
            f"  {len(rounds.failed)} failed calls retried with their request_id:"
            f" {unknown} still unknown, refusals {dict(refused)}"
        )
    return unknown


async def check_money(stubs: Stubs, rounds: Rounds, seats: list[Seat]) -> None:
    unknown = await settle_failed(rounds)
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def balance(seat: Seat) -> int:
        async with gate:
            reply = await stubs.wallet["games"].GetBalance(
                wallet_pb2.GetBalanceRequest(player_id=seat.player_id, currency_code=CURRENCY)
            )
        return int(reply.balance.posted_minor)

    balances = await asyncio.gather(*(balance(s) for s in seats))
    net = rounds.ledger.net_by_player()
    staked = sum(stake for _, stake, _ in rounds.ledger.rounds.values())
    paid = sum(payout for _, _, payout in rounds.ledger.rounds.values())
    deposits = DEPOSIT * len(seats)
    expected = deposits - staked + paid
    actual = sum(balances)
    off = {
        s.player_id: b - DEPOSIT - net.get(s.player_id, 0)
        for s, b in zip(seats, balances, strict=True)
        if b != DEPOSIT + net.get(s.player_id, 0)
    }
    ok = actual == expected and not off and not rounds.ledger.unfinished
    print(
        f"  {len(rounds.ledger.rounds)} rounds booked ({rounds.ledger.voided} voided):"
        f" staked {staked:,}, paid {paid:,} (RTP {100 * paid / max(staked, 1):.2f}%) minor units"
    )
    print(
        f"  wallets: deposits {deposits:,} - stakes + payouts = {expected:,} expected,"
        f" {actual:,} held over {len(seats)} players; {len(off)} players off"
        f" -> {'OK' if ok else 'MISMATCH'}" + (f" ({unknown} rounds unresolved)" if unknown else "")
    )
    for player, by in list(off.items())[:5]:
        print(f"    {player}: off by {by:+,}")
    if rounds.ledger.unfinished:
        print(f"  {rounds.ledger.unfinished} PlayRound answers carried an unfinished round")


# --- main ---------------------------------------------------------------------------------


async def run(args: argparse.Namespace, tmp: Path, started: dict[str, ServiceProcess]) -> None:
    pki = bench_pki(tmp)
    t = time.perf_counter()
    spans = start_all(tmp, pki, started)
    ports = ", ".join(f"{n} :{p.ports['port']}" for n, p in started.items())
    print(f"services up in {time.perf_counter() - t:.1f} s ({ports})")
    stubs = Stubs(pki, started)
    try:
        t = time.perf_counter()
        seats = await enrol(stubs, args.players)
        print(
            f"{args.players} players enrolled, verified, funded ({DEPOSIT:,} minor {CURRENCY})"
            f" and given a dice session in {time.perf_counter() - t:.1f} s"
        )
        if args.players < max(args.concurrency):
            print(f"note: {args.players} sessions for {max(args.concurrency)} clients: calls wait")
        rounds = Rounds(stubs.games, seats)
        await drive(rounds.play, 4, 2.0)  # warm up: connections, pools, caches
        if rounds.errors:
            print(f"warm-up errors: {dict(rounds.errors)}")
        loads: list[Load] = [("clients", n) for n in args.concurrency]
        loads += [("rate", r) for r in args.rates]
        print(
            f"\nPlayRound dice (stake {STAKE}, under {TARGET}), {args.seconds:g} s per level;"
            " p50-p99 over every call; cores = CPU seconds per second (postgres = every"
            " postgres process on the machine; other = the rest of the machine)"
        )
        keep = {float(min(args.concurrency)), float(max(args.concurrency))}
        windows = await measure(rounds, loads, args.seconds, started, spans, keep)

        await asyncio.sleep(3 * SPAN_FLUSH_MS / 1000)  # the last spans reach the file
        for window in windows:
            b = breakdown(read_spans(spans, window), window)
            if b.complete:
                print_breakdown(window, b)
            else:
                print(f"\nwhere the time goes at {window.label}: no complete PlayRound spans")

        print(f"\nRNG draws/s ({args.seconds:g} s)")
        await rng_service(stubs.rng, args.seconds, started)
        rng_in_process()

        print("\nmoney: PlayRound answers against the wallet balances")
        await check_money(stubs, rounds, seats)
    finally:
        await stubs.close()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    parser.add_argument("--rates", type=float, nargs="+", default=[50, 100, 200])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--players", type=int, default=500)
    args = parser.parse_args()
    print(machine_line())
    fresh_database()
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"{os.cpu_count()} cores, load average {load} before the start")
    print(f"unrouted events left by earlier runs, dropped: {await purge_unrouted_events()}")
    started: dict[str, ServiceProcess] = {}
    codes: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="bench-games-") as folder:
        try:
            await run(args, Path(folder), started)
        finally:
            for name in reversed(list(started)):  # games first: it calls the others
                codes[name] = started[name].terminate()
            if started:
                report_logs(started, codes)


if __name__ == "__main__":
    asyncio.run(main())
