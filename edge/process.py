"""Run the edge as a child process and know its ports: used by the dev stack, the edge tests
and the benchmarks, so all start it the one way production does (`python -m edge`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from services.runtime.process import ServiceProcess


class EdgeProcess(ServiceProcess):
    def __init__(self, config: Path, log_file: Path, cwd: Path | None = None) -> None:
        super().__init__("edge", config, log_file, cwd)

    def start(self) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        out = self.log_file.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge", "--config", str(self.config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=self.cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        out.close()

    def wait_started(self, timeout: float = 30.0) -> dict[str, int]:
        """Block until the 'edge started' log line; returns the listeners' ports by name."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            for line in self.log_lines():
                if line.get("event") == "edge started":
                    self.ports = {
                        k.removesuffix("_port"): int(v)
                        for k, v in line.items()
                        if k.endswith("_port")
                    }
                    return self.ports
            if self.proc.poll() is not None:
                raise RuntimeError(f"edge exited with {self.proc.returncode}; see {self.log_file}")
            time.sleep(0.05)
        raise TimeoutError(f"edge did not start within {timeout}s; see {self.log_file}")

    def url(self, listener: str = "public") -> str:
        return f"http://127.0.0.1:{self.ports[listener]}"

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until /readyz on the public listener answers 200."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                last = httpx.get(f"{self.url()}/readyz", timeout=1.0).status_code
                if last == 200:
                    return
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(0.1)
        raise TimeoutError(f"edge /readyz is {last} after {timeout}s; see {self.log_file}")
