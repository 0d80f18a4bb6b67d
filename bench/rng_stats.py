"""RNG throughput and the larger statistical run. Prints figures; exits 0 either way (a
benchmark, not a test), except that a failed statistical check is reported as FAIL.

- draws/s: live DRBG bytes, round-stream bytes, uniform_int for 6/37/52/10001, 52-card
  shuffles, and a full round derivation (HKDF + ChaCha20 setup + one roulette draw);
- statistics on fresh DRBG output: chi-square on bytes, runs, serial correlation over
  `--mib` MiB; chi-square of uniform_int per range over `--samples` draws;
- NIST SP 800-22 (`nistrng`, a dev dependency) on `--nist-sequences` sequences of 10^6
  bits, beside the same battery on os.urandom: nistrng's Linear Complexity and Random
  Excursion fail on the OS generator too (its int8 arithmetic overflows at 10^6 bits), so a
  test both columns fail is the tool's. About 70 s per sequence pair here: the default 100
  takes about two hours;
- `dieharder -a` (Debian package `dieharder`, installed by scripts/lib.sh) over a raw-output
  file of `--dieharder-mib` MiB, with its summary (tens of minutes).

    .venv/bin/python bench/rng_stats.py [--mib 16] [--samples 2000000] \\
        [--nist-sequences 100] [--dieharder-mib 256]
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.rng import stats  # noqa: E402
from services.rng.drbg import ChaChaDrbg, RoundStream  # noqa: E402
from services.rng.sampling import shuffle, uniform_int  # noqa: E402


def rate(label: str, n: int, unit: str, fn: Callable[[], object]) -> None:
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    print(f"  {label:<42} {n / elapsed:>14,.0f} {unit}/s")


def throughput() -> None:
    print("throughput (one core, in process):")
    drbg = ChaChaDrbg()
    rate(
        "DRBG generate(64) calls",
        200_000,
        "calls",
        lambda: [drbg.generate(64) for _ in range(200_000)],
    )
    rate(
        "DRBG bytes in 1 MiB calls",
        64 << 20,
        "bytes",
        lambda: [drbg.generate(1 << 20) for _ in range(64)],
    )
    stream = RoundStream(bytes(32), b"bench")
    for n in (6, 37, 52, 10001):
        rate(
            f"uniform_int(n={n})",
            500_000,
            "draws",
            lambda n=n: [uniform_int(stream, n) for _ in range(500_000)],
        )
    rate(
        "52-card shuffles",
        20_000,
        "shuffles",
        lambda: [shuffle(stream, range(52)) for _ in range(20_000)],
    )
    seeds = [drbg.generate(32) for _ in range(50_000)]
    rate(
        "round derivations + 1 roulette draw",
        50_000,
        "rounds",
        lambda: [uniform_int(RoundStream(s, b"roulette|bets"), 37) for s in seeds],
    )  # fmt: skip


def check(label: str, ok: bool, detail: str) -> bool:
    print(f"  {label:<42} {'PASS' if ok else 'FAIL'}  {detail}")
    return ok


def statistics(mib: int, samples: int) -> bool:
    print(f"statistics on {mib} MiB of fresh DRBG output (alpha 0.001 each):")
    drbg = ChaChaDrbg()
    data = b"".join(drbg.generate(1 << 20) for _ in range(mib))
    ok = True
    chi2 = stats.chi_square_uniform(stats.byte_counts(data))
    ok &= check(
        "chi-square on bytes (df 255)", chi2 < stats.chi_square_critical(255), f"{chi2:.1f}"
    )
    bits_sample = data[: 4 << 20]
    z = stats.runs_z(bits_sample)
    ok &= check(f"runs on {len(bits_sample) * 8 >> 20} Mibit", abs(z) < stats.Z_001, f"z={z:.2f}")
    sample = data[: 8 << 20]
    r = stats.serial_correlation(sample)
    bound = stats.Z_001 / math.sqrt(len(sample))
    ok &= check(
        f"lag-1 serial correlation ({len(sample) >> 20} MiB)",
        abs(r) < bound,
        f"r={r:.2e} bound {bound:.1e}",
    )
    stream = RoundStream(drbg.generate(32), b"bench-stats")
    for n in (6, 37, 52, 10001):
        counts = [0] * n
        for _ in range(samples):
            counts[uniform_int(stream, n)] += 1
        chi2 = stats.chi_square_uniform(counts)
        ok &= check(
            f"uniform_int chi-square n={n}", chi2 < stats.chi_square_critical(n - 1), f"{chi2:.1f}"
        )
    return bool(ok)


def nist(sequences: int) -> None:
    try:
        nistrng = importlib.import_module("nistrng")
        import numpy as np
    except ImportError:
        print("NIST SP 800-22: skipped, `nistrng` is not installed (pip install nistrng)")
        return
    print(
        f"NIST SP 800-22 (nistrng) on {sequences} sequences of 10^6 bits, beside the same"
        " battery on the OS's own generator (a test both fail is the tool's, not ours):"
    )
    drbg = ChaChaDrbg()
    passed: dict[str, list[int]] = {}
    for _ in range(sequences):
        for column, data in enumerate((drbg.generate(125_000), os.urandom(125_000))):
            # nistrng wants 0/1 as int8: wider integers give wrong statistics.
            bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8)).astype(np.int8)
            battery = nistrng.check_eligibility_all_battery(bits, nistrng.SP800_22R1A_BATTERY)
            for test in battery.values():
                # Each test on its own copy: some of nistrng's tests change the array they
                # are given, which would corrupt the input of every test after them.
                result, _elapsed = test.run(bits.copy())
                passed.setdefault(result.name, [0, 0])[column] += int(result.passed)
    print(f"  {'test':<42} {'drbg':>8} {'os.urandom':>11}")
    for name, (ours, reference) in sorted(passed.items()):
        print(f"  {name:<42} {ours:>4}/{sequences:<3} {reference:>6}/{sequences}")


def dieharder(mib: int) -> None:
    binary = shutil.which("dieharder")
    if binary is None:
        print("dieharder: skipped, not installed (Debian: apt-get install dieharder)")
        return
    drbg = ChaChaDrbg()
    with tempfile.TemporaryDirectory() as folder:
        raw = Path(folder) / "drbg.bin"
        with raw.open("wb") as f:
            for _ in range(mib):
                f.write(drbg.generate(1 << 20))
        print(f"dieharder -a over {mib} MiB of raw DRBG output (file input rewinds if short):")
        result = subprocess.run(
            [binary, "-a", "-g", "201", "-f", str(raw)], capture_output=True, text=True
        )
        lines = [ln for ln in result.stdout.splitlines() if "|" in ln]
        summary = {
            k: sum(1 for ln in lines if ln.rstrip().endswith(k))
            for k in ("PASSED", "WEAK", "FAILED")
        }
        print("\n".join("  " + ln for ln in lines[-12:]))
        print(f"  summary: {summary}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--mib", type=int, default=16)
    parser.add_argument("--samples", type=int, default=2_000_000)
    parser.add_argument("--nist-sequences", type=int, default=100)
    parser.add_argument("--dieharder-mib", type=int, default=256)
    args = parser.parse_args()
    throughput()
    ok = statistics(args.mib, args.samples)
    nist(args.nist_sequences)
    dieharder(args.dieharder_mib)
    print("statistics: " + ("all PASS" if ok else "some FAIL"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
