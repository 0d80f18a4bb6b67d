"""Start the platform locally and drive its main job.

Migrates the `casino` database, starts every service configured in config/dev/ as its own
process (logs in .dev/logs/, spans in .dev/traces/), waits for each to report SERVING, runs
the demo, then keeps the platform up until Ctrl-C (or stops at once with --once).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge.process import EdgeProcess  # noqa: E402
from scripts import demo  # noqa: E402
from scripts.operator_token import ensure_dev_key  # noqa: E402
from services.runtime import dbsetup  # noqa: E402
from services.runtime.process import ServiceProcess  # noqa: E402

SERVING = 1


# Not a gRPC service: started after the services, ready when its /readyz says so.
EDGE = "edge"


def configured_services() -> list[tuple[str, Path]]:
    out = []
    for path in sorted((ROOT / "config" / "dev").glob("*.toml")):
        name = tomllib.loads(path.read_text())["service"]["name"]
        if name != EDGE:
            out.append((name, path))
    return out


def register_simulator() -> subprocess.Popen[bytes]:
    """The national self-exclusion register stand-in the compliance service calls."""
    key = ROOT / ".dev" / "secrets" / "register-api-key"
    if not key.exists():
        key.write_text(secrets.token_urlsafe(24))
        key.chmod(0o600)
    log = (ROOT / ".dev" / "logs" / "register-simulator.log").open("ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulators.self_exclusion_register",
            "--port",
            "50130",
            "--api-key-file",
            str(key),
            "--registry",
            str(ROOT / "config" / "dev" / "register-registry.json"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    log.close()
    return proc


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--once", action="store_true", help="stop after the demo")
    args = parser.parse_args()

    dbsetup.migrate("casino", [], ROOT / ".dev" / "secrets")
    (ROOT / ".dev" / "logs").mkdir(parents=True, exist_ok=True)
    simulator = register_simulator()
    processes = [
        ServiceProcess(name, path, ROOT / ".dev" / "logs" / f"{name}.log", cwd=ROOT)
        for name, path in configured_services()
    ]
    edge = EdgeProcess(
        ROOT / "config" / "dev" / f"{EDGE}.toml", ROOT / ".dev" / "logs" / f"{EDGE}.log", cwd=ROOT
    )
    try:
        for p in processes:
            p.start()
        for p in processes:
            ports = p.wait_started()
            await p.wait_health(SERVING)
            print(
                f"{p.service:<12} SERVING  grpc(mTLS) :{ports['port']}  "
                f"health :{ports['health_port']}  metrics :{ports['metrics_port']}"
            )
        # The operator SSO's development signing key: the admin listener trusts its .pub.
        ensure_dev_key()
        edge.start()
        edge_ports = edge.wait_started()
        await asyncio.to_thread(edge.wait_ready)
        print(
            f"{EDGE:<12} READY    http public :{edge_ports['public']}  "
            f"webhooks :{edge_ports['webhooks']}  admin :{edge_ports['admin']}  "
            f"(/openapi.json, /livez, /readyz)"
        )
        await demo.run(ROOT)
        if not args.once:
            print("\nPlatform running; logs in .dev/logs/, spans in .dev/traces/. Ctrl-C stops it.")
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
    finally:
        # The edge first: it stops taking requests before the services behind it go.
        codes = {EDGE: edge.terminate()}
        codes.update({p.service: p.terminate() for p in processes})
        simulator.terminate()
        simulator.wait(10)
        print("stopped:", ", ".join(f"{name} exit {code}" for name, code in codes.items()))
    return 0 if all(code == 0 for code in codes.values()) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
