"""A service process freezes its startup heap: full collections while it serves walk only
what it allocated since, not the ~100,000 objects its imports and build left behind."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from grpc_health.v1 import health_pb2


async def test_a_started_service_has_frozen_its_startup_heap(launch) -> None:
    echo = launch()
    await echo.wait_health(health_pb2.HealthCheckResponse.SERVING)
    events = echo.log_lines()
    (frozen,) = [line for line in events if line.get("event") == "startup heap frozen"]
    names = [line.get("event") for line in events]
    # Frozen once built, before serving: gRPC, protobuf and the runtime are all in there.
    assert names.index("startup heap frozen") < names.index("service started")
    assert frozen["objects"] > 50_000


def test_frozen_objects_are_out_of_every_collection_and_later_ones_are_not() -> None:
    # In a child process: freezing is for a process's entry point, never for pytest's.
    script = textwrap.dedent("""
        import gc
        from services.runtime.heap import freeze_startup_heap

        startup = [[] for _ in range(1000)]
        frozen = freeze_startup_heap()
        tracked = {id(o) for o in gc.get_objects()}
        assert not any(id(o) in tracked for o in startup), "startup objects still walked"
        assert frozen >= len(startup)
        later = [[] for _ in range(1000)]
        tracked = {id(o) for o in gc.get_objects()}
        assert all(id(o) in tracked for o in later), "objects made while serving not walked"
        print("ok")
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
