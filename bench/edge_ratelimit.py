"""What one rate-limit check costs the edge's CPU, alone in its loop turn and among others.

The edge makes one rate-limit check per request: one GCRA script call in Redis. This drives
the edge's own limiter (edge.ratelimit.RateLimiter, on the edge's Redis connection,
edge.redislink) against the real Redis, `width` checks of distinct keys per loop turn, as a busy
edge makes them, and prints the CPU this process spends per check (the minimum over
`--rounds` rounds: the machine's other guests only ever add to it) and the wall time per
turn. A benchmark, not a test; no target of its own (it explains the edge's figures in
bench/edge_load.py).

    .venv/bin/python bench/edge_ratelimit.py [--widths 1 8] [--rounds 12] [--checks 400]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import REDIS_URL, machine_line  # noqa: E402
from edge.ratelimit import ClassLimit, RateLimitConfig, RateLimiter  # noqa: E402
from edge.redislink import RedisLink  # noqa: E402


async def main(widths: list[int], rounds: int, checks: int) -> None:
    print(machine_line())
    client = RedisLink(REDIS_URL)
    config = RateLimitConfig(
        key_prefix=f"bench-ratelimit-{uuid.uuid4().hex[:8]}",
        classes={"CATALOG": ClassLimit(rate=1e9, burst=10**9)},  # counted, never refused
    )
    limiter = RateLimiter(client, config)
    best: dict[int, tuple[float, float]] = {}
    try:
        for _ in range(rounds):
            for width in widths:
                turns = max(1, checks // width)

                async def turn(width: int = width) -> None:
                    await asyncio.gather(
                        *(limiter.check("CATALOG", f"key-{i}") for i in range(width))
                    )

                for _ in range(20):
                    await turn()
                cpu, wall = time.process_time(), time.perf_counter()
                for _ in range(turns):
                    await turn()
                cpu_us = (time.process_time() - cpu) / (turns * width) * 1e6
                turn_us = (time.perf_counter() - wall) / turns * 1e6
                if width not in best or cpu_us < best[width][0]:
                    best[width] = (cpu_us, turn_us)
    finally:
        await client.close()
    print(f"rate-limit checks, minimum over {rounds} rounds of ~{checks} checks")
    for width in widths:
        cpu_us, turn_us = best[width]
        print(
            f"  {width:>3} per loop turn: {cpu_us:6.0f} us CPU per check,"
            f" {turn_us:7.0f} us per turn"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--checks", type=int, default=400)
    args = parser.parse_args()
    asyncio.run(main(args.widths, args.rounds, args.checks))
