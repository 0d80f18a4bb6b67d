"""`python -m simulators.self_exclusion_register --port 0 --api-key-file F --registry F`:
serve the register on 127.0.0.1 until SIGTERM or SIGINT; print
`{"event": "listening", "port": N}` on stdout once listening."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

from simulators.self_exclusion_register.server import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulators.self_exclusion_register")
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free)")
    parser.add_argument("--api-key-file", type=Path, required=True, help="file holding the key")
    parser.add_argument("--registry", type=Path, required=True, help="JSON list of persons")
    args = parser.parse_args(argv)

    async def run() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await serve(args.port, args.api_key_file, args.registry)

    try:
        asyncio.run(run())
    except (OSError, ValueError) as exc:
        print(f"self-exclusion register simulator: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
