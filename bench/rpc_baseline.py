"""What one RPC through the service runtime costs with no work at all.

Starts the echo service as its own process (mTLS, contract authorisation, metrics, tracing
with no exporter, access log off) and drives `Ping` from N concurrent clients for a fixed
time, printing calls/s and latency percentiles. This is the ceiling every service's figures
are compared with.

    .venv/bin/python bench/rpc_baseline.py [--concurrency 8 16 32] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import bench_pki, fresh_database, machine_line  # noqa: E402
from bench.wallet_load import measure_echo, print_header  # noqa: E402


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    print(machine_line())
    fresh_database()
    with tempfile.TemporaryDirectory() as tmp:
        print_header("bare echo Ping through the runtime and its client", "calls/s")
        await measure_echo(Path(tmp), bench_pki(Path(tmp)), args.concurrency, args.seconds)


if __name__ == "__main__":
    asyncio.run(main())
