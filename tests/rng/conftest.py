"""The RNG service as a process on loopback, against the real PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import grpc
import pytest

from casino.rng.v1 import rng_pb2_grpc
from services.runtime.client import secure_channel
from services.runtime.process import ServiceProcess
from tests.conftest import Launcher, Pki

IDENTITIES = ("games", "backoffice", "wallet")


def rng_extra(folder: Path, *, settings: str = "") -> str:
    """The [rng] section of a test instance; keys live in the test's folder."""
    return f"""
[rng]
seal_key_file = "{folder / "rng-seal.key"}"
signing_key_file = "{folder / "rng-signing.key"}"
public_key_file = "{folder / "rng-signing.pub"}"
checkpoint_dir = "{folder / "checkpoints"}"
checkpoint_interval_seconds = 0.2
{settings}
"""


class RngLauncher:
    def __init__(self, folder: Path, pki: Pki) -> None:
        self.folder = folder
        self.launcher = Launcher(folder, pki, [])

    def __call__(self, settings: str = "") -> ServiceProcess:
        return self.launcher("rng", extra=rng_extra(self.folder, settings=settings))

    def close(self) -> None:
        for process in self.launcher.started:
            process.terminate()


@pytest.fixture(scope="module")
def launch_rng(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki, test_database: str
) -> Iterator[RngLauncher]:
    launcher = RngLauncher(tmp_path_factory.mktemp("rng"), pki)
    yield launcher
    launcher.close()


@pytest.fixture(scope="module")
def rng(launch_rng: RngLauncher) -> ServiceProcess:
    return launch_rng()


StubsFor = Callable[[ServiceProcess], dict[str, rng_pb2_grpc.RngServiceStub]]


@pytest.fixture
async def stubs_for(pki: Pki) -> AsyncIterator[StubsFor]:
    """An RNG stub per caller identity for a given instance, each on its own mTLS channel."""
    channels: list[grpc.aio.Channel] = []

    def make(process: ServiceProcess) -> dict[str, rng_pb2_grpc.RngServiceStub]:
        stubs = {}
        for identity in IDENTITIES:
            channel = secure_channel(
                f"127.0.0.1:{process.ports['port']}", pki.tls(identity), "rng", default_timeout=10
            )
            channels.append(channel)
            stubs[identity] = rng_pb2_grpc.RngServiceStub(channel)
        return stubs

    yield make
    for channel in channels:
        await channel.close()


@pytest.fixture
def stubs(rng: ServiceProcess, stubs_for: StubsFor) -> dict[str, rng_pb2_grpc.RngServiceStub]:
    return stubs_for(rng)
