"""The compliance service as a process, with the self-exclusion register simulator as
another, on loopback."""

from __future__ import annotations

import contextlib
import http.client
import json
import select
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from casino.compliance.v1 import compliance_pb2_grpc
from services.runtime.client import secure_channel
from services.runtime.process import ServiceProcess
from tests.conftest import Launcher, Pki
from tests.support.edge_player import AsEdgePlayer

ROOT = Path(__file__).resolve().parents[2]
IDENTITIES = ("identity", "games", "payments", "edge", "backoffice", "wallet")
# The rates of test instances (the default jurisdiction's currency is GBP: without a GBP
# rate the service refuses to start). GBP 1,709.40 is then the EUR 2,000 CDD threshold.
FX_TO_EUR = '{ EUR = "1", GBP = "1.17" }'
CDD_THRESHOLD_GBP_MINOR = 170_940

EXCLUDED_ON_REGISTER = {
    "firstName": "Ada",
    "lastName": "Excluded",
    "dateOfBirth": "1980-02-29",
    "email": "ada.excluded@example.org",
    "postcode": "SW1A 1AA",
    "exclusion": "Y",
}


@dataclass
class Simulator:
    proc: subprocess.Popen[bytes]
    port: int
    key_file: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(
        self, method: str, path: str, payload: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            body = None if payload is None else json.dumps(payload).encode()
            all_headers = {"Content-Type": "application/json", **(headers or {})}
            connection.request(method, path, body=body, headers=all_headers)
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def admin(self, path: str, payload: Any = None) -> Any:
        status, _, body = self.call("GET" if payload is None else "POST", path, payload)
        assert status in (200, 201), body
        return json.loads(body)

    def faults(self, mode: str, **extra: Any) -> None:
        self.admin("/_sim/faults", {"mode": mode, **extra})

    def last_request_id(self) -> str:
        requests = self.admin("/_sim/requests")
        return str(requests[-1]["requestId"])


def secret_file(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


@contextlib.contextmanager
def run_simulator(folder: Path, persons: list[dict[str, str]], api_key: str) -> Iterator[Simulator]:
    """The register simulator as a child process on a free loopback port."""
    key_file = secret_file(folder / "api.key", api_key)
    registry = folder / "registry.json"
    registry.write_text(json.dumps(persons))
    stderr = (folder / "stderr.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulators.self_exclusion_register",
            "--port",
            "0",
            "--api-key-file",
            str(key_file),
            "--registry",
            str(registry),
        ],
        stdout=subprocess.PIPE,
        stderr=stderr,
        cwd=ROOT,
    )
    stderr.close()
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else b""
        if not line:
            raise RuntimeError(
                f"simulator did not start: {(folder / 'stderr.log').read_text()[-2000:]}"
            )
        event = json.loads(line)
        assert event["event"] == "listening"
        yield Simulator(proc, int(event["port"]), key_file)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture(scope="module")
def register(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    folder = tmp_path_factory.mktemp("register")
    with run_simulator(folder, [EXCLUDED_ON_REGISTER], "key-" + uuid.uuid4().hex) as sim:
        yield sim


def compliance_extra(
    register: Simulator,
    folder: Path,
    *,
    monitoring: bool = False,
    settings: str = "",
    rules: str = "",
    tables: str = "",
    fx_to_eur: str = FX_TO_EUR,
) -> str:
    """The [compliance] config of a test instance: `settings` are more lines for
    [compliance], `rules` for [compliance.rules], `tables` further tables. Monitoring is off
    unless asked for: monitoring tests consume queues of their own, and any other instance
    consuming the shared queue would apply their events to this database."""
    return f"""
[compliance]
register_url = "{register.url}"
register_api_key_file = "{register.key_file}"
register_timeout_seconds = 1.0
signing_key_file = "{folder / "verdict-signing.key"}"
public_key_file = "{folder / "verdict-signing.pub"}"
checkpoint_dir = "{folder / "checkpoints"}"
outbox_relay = false
monitoring = {"true" if monitoring else "false"}
fx_to_eur = {fx_to_eur}
{settings}
[compliance.rules]
limit_cooling_off_hours = 24
{rules}
{tables}
"""


def open_stubs(
    process: ServiceProcess, pki: Pki, identities: tuple[str, ...] = IDENTITIES
) -> tuple[list[grpc.aio.Channel], dict[str, compliance_pb2_grpc.ComplianceServiceStub]]:
    """A compliance stub per caller identity, each on its own mTLS channel."""
    channels = {
        identity: secure_channel(
            f"127.0.0.1:{process.ports['port']}",
            pki.tls(identity),
            "compliance",
            default_timeout=10,
        )
        for identity in identities
    }
    stubs = {k: compliance_pb2_grpc.ComplianceServiceStub(c) for k, c in channels.items()}
    if "edge" in stubs:
        # The edge calls for the player whose token it verified: the request's own player.
        stubs["edge"] = AsEdgePlayer(stubs["edge"])  # type: ignore[assignment]
    return list(channels.values()), stubs


@pytest.fixture(scope="module")
def compliance(
    tmp_path_factory: pytest.TempPathFactory,
    pki: Pki,
    test_database: str,
    register: Simulator,
) -> Iterator[ServiceProcess]:
    folder = tmp_path_factory.mktemp("compliance")
    launcher = Launcher(folder, pki, [])
    process = launcher("compliance", extra=compliance_extra(register, folder))
    process.folder = folder  # type: ignore[attr-defined]
    yield process
    process.terminate()


@pytest.fixture
async def stubs(compliance: ServiceProcess, pki: Pki) -> AsyncIterator[dict[str, object]]:
    channels, stubs = open_stubs(compliance, pki)
    yield dict(stubs)
    for channel in channels:
        await channel.close()
