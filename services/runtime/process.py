"""Run a service as a child process and know when it is ready: used by the dev launcher
(scripts/run), the end-to-end tests and the benchmarks, so all three start services the one
way production does (`python -m services.<name> --config FILE`)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


class ServiceProcess:
    def __init__(self, service: str, config: Path, log_file: Path, cwd: Path | None = None):
        self.service = service
        self.config = config
        self.log_file = log_file
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}

    def start(self) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        out = self.log_file.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.service}", "--config", str(self.config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=self.cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        out.close()

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.log_file.read_text(errors="replace").splitlines():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                lines.append({"event": raw, "unstructured": True})
        return lines

    def wait_started(self, timeout: float = 30.0) -> dict[str, int]:
        """Block until the 'service started' log line; returns its ports."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            for line in self.log_lines():
                if line.get("event") == "service started":
                    self.ports = {k: int(line[k]) for k in ("port", "health_port", "metrics_port")}
                    return self.ports
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.service} exited with {self.proc.returncode}; see {self.log_file}"
                )
            time.sleep(0.05)
        raise TimeoutError(f"{self.service} did not start within {timeout}s; see {self.log_file}")

    async def health(self, service: str = "") -> int:
        return await health_status(self.ports["health_port"], service)

    async def wait_health(self, status: int, timeout: float = 30.0) -> None:
        await wait_for_health(self.ports["health_port"], status, timeout)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait; SIGKILL if it does not exit in time. Returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


async def health_status(health_port: int, service: str = "") -> int:
    """The status on a plaintext health port (what a Kubernetes probe sees)."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{health_port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=2
        )
        return int(reply.status)


async def wait_for_health(health_port: int, status: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = await health_status(health_port)
            if last == status:
                return
        except grpc.aio.AioRpcError as exc:
            last = exc.code()
        await asyncio.sleep(0.1)
    raise TimeoutError(f"health on :{health_port} is {last}, wanted {status}")
