"""Exact versus simulated RTP of the in-house games, through the full per-round RNG path.

For each game (dice, European roulette, the 5x3 slot) with the fixed bet of
services.games.math.rtp_simulation: the exact RTP (closed form or full enumeration), then
``--rounds`` rounds where EVERY round gets its own 32-byte seed from a live ChaChaDrbg
(OS-seeded), its own RoundStream (HKDF + ChaCha20) and its draws through uniform_int, exactly
as the service will draw. Prints exact RTP, simulated RTP, sigma = sqrt(variance / N), the
distance in sigmas and rounds/s. A benchmark, not a test: it exits 0 either way.

    .venv/bin/python bench/games_rtp.py [--rounds 1000000] [--rounds-per-stream 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.games.math import rtp_simulation  # noqa: E402
from services.rng.drbg import ChaChaDrbg  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1_000_000)
    parser.add_argument(
        "--rounds-per-stream",
        type=int,
        default=1,
        help="rounds sharing one RoundStream (1 = the real per-round path)",
    )
    args = parser.parse_args()
    print(f"{args.rounds:,} rounds per game, {args.rounds_per_stream} round(s) per RoundStream")
    header = (
        f"{'game':<9} {'exact RTP':>26} {'simulated':>10} {'sigma':>9} {'z':>6} {'rounds/s':>9}"
    )
    print(header)
    for case in rtp_simulation.cases():
        started = time.perf_counter()
        result = rtp_simulation.simulate(
            case, args.rounds, ChaChaDrbg(), rounds_per_stream=args.rounds_per_stream
        )
        exact = f"{case.rtp} ({float(case.rtp):.6f})" if case.rtp.denominator < 10**6 else ""
        print(
            f"{case.name:<9} {exact:>26} {result.simulated_rtp:>10.6f} {result.sigma:>9.6f} "
            f"{result.z:>+6.2f} {result.rounds_per_second:>9,.0f}"
            f"   ({time.perf_counter() - started:.1f} s, variance {float(case.variance):.4f})"
        )


if __name__ == "__main__":
    main()
