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

from bench.harness import bench_pki, drive, percentiles, start_service  # noqa: E402
from casino.echo.v1 import echo_pb2, echo_pb2_grpc  # noqa: E402
from services.runtime.client import secure_channel  # noqa: E402


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pki = bench_pki(Path(tmp))
        echo = start_service("echo", Path(tmp), pki)
        try:
            async with secure_channel(
                f"127.0.0.1:{echo.ports['port']}", pki.tls("games"), "echo", default_timeout=5
            ) as channel:
                stub = echo_pb2_grpc.EchoServiceStub(channel)
                request = echo_pb2.PingRequest(payload=b"x" * 64)
                for _ in range(500):  # warm-up: connections, caches, JIT-free but lazy paths
                    await stub.Ping(request)
                print(f"{'clients':>8} {'calls/s':>10} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
                for n in args.concurrency:
                    latencies, elapsed = await drive(lambda: stub.Ping(request), n, args.seconds)
                    p50, p95, p99 = percentiles(latencies)
                    print(
                        f"{n:>8} {len(latencies) / elapsed:>10.0f} {p50:>8.2f} {p95:>8.2f} "
                        f"{p99:>8.2f}"
                    )
        finally:
            echo.terminate()


if __name__ == "__main__":
    asyncio.run(main())
