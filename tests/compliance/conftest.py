"""The compliance service as a process, with the self-exclusion register simulator as
another, on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from casino.compliance.v1 import compliance_pb2_grpc
from services.runtime.client import secure_channel
from services.runtime.process import ServiceProcess
from tests.conftest import Launcher, Pki

ROOT = Path(__file__).resolve().parents[2]

EXCLUDED_ON_REGISTER = {
    "firstName": "Ada",
    "lastName": "Excluded",
    "dateOfBirth": "1980-02-29",
    "email": "ada.excluded@example.org",
    "postcode": "SW1A 1AA",
    "exclusion": "Y",
}


@dataclass
class RegisterSimulator:
    proc: subprocess.Popen[bytes]
    port: int
    key_file: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_faults(self, mode: str, delay_ms: int = 0) -> None:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        conn.request(
            "POST",
            "/_sim/faults",
            json.dumps({"mode": mode, "delay_ms": delay_ms}),
            {"Content-Type": "application/json"},
        )
        assert conn.getresponse().status == 200
        conn.close()


@pytest.fixture(scope="module")
def register(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegisterSimulator]:
    folder = tmp_path_factory.mktemp("register")
    key_file = folder / "api-key"
    key_file.write_text("key-" + uuid.uuid4().hex)
    key_file.chmod(0o600)
    registry = folder / "registry.json"
    registry.write_text(json.dumps([EXCLUDED_ON_REGISTER]))
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
        cwd=ROOT,
    )
    assert proc.stdout is not None
    line = json.loads(proc.stdout.readline())
    assert line["event"] == "listening"
    yield RegisterSimulator(proc, int(line["port"]), key_file)
    proc.terminate()
    proc.wait(10)


def compliance_extra(register: RegisterSimulator, folder: Path) -> str:
    return f"""
[compliance]
register_url = "{register.url}"
register_api_key_file = "{register.key_file}"
register_timeout_seconds = 1.0
signing_key_file = "{folder / "verdict-signing.key"}"
public_key_file = "{folder / "verdict-signing.pub"}"
checkpoint_dir = "{folder / "checkpoints"}"
outbox_relay = false
[compliance.rules]
limit_cooling_off_hours = 24
"""


@pytest.fixture(scope="module")
def compliance(
    tmp_path_factory: pytest.TempPathFactory,
    pki: Pki,
    test_database: str,
    register: RegisterSimulator,
) -> Iterator[ServiceProcess]:
    folder = tmp_path_factory.mktemp("compliance")
    launcher = Launcher(folder, pki, [])
    process = launcher("compliance", extra=compliance_extra(register, folder))
    process.folder = folder  # type: ignore[attr-defined]
    yield process
    process.terminate()


@pytest.fixture
async def stubs(compliance: ServiceProcess, pki: Pki) -> AsyncIterator[dict[str, object]]:
    channels = {
        identity: secure_channel(
            f"127.0.0.1:{compliance.ports['port']}",
            pki.tls(identity),
            "compliance",
            default_timeout=10,
        )
        for identity in ("identity", "games", "payments", "edge", "backoffice", "wallet")
    }
    yield {k: compliance_pb2_grpc.ComplianceServiceStub(c) for k, c in channels.items()}
    for channel in channels.values():
        await channel.close()
