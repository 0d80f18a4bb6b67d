"""Identity as a process, with the real compliance service (and its register simulator) and
the real wallet as further processes, on the test database, Redis and RabbitMQ."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.type.date_pb2 import Date  # type: ignore[import-untyped]
from redis.asyncio import Redis

from casino.identity.v1 import identity_pb2 as pb
from casino.identity.v1 import identity_pb2_grpc
from services.runtime.client import secure_channel
from services.runtime.process import ServiceProcess
from services.runtime.status import error_info as status_error_info
from tests.compliance.conftest import (
    EXCLUDED_ON_REGISTER,
    Simulator,
    compliance_extra,
    run_simulator,
)
from tests.conftest import Launcher, Pki
from tests.support.amqp import delete_queues_now
from tests.wallet.conftest import wallet_extra

PASSWORD = "correct horse battery staple"
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="package")
def register(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    folder = tmp_path_factory.mktemp("identity-register")
    with run_simulator(folder, [EXCLUDED_ON_REGISTER], "key-" + uuid.uuid4().hex) as sim:
        yield sim


@pytest.fixture(scope="package")
def compliance(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki, test_database: str, register: Simulator
) -> Iterator[ServiceProcess]:
    folder = tmp_path_factory.mktemp("identity-compliance")
    process = Launcher(folder, pki, [])("compliance", extra=compliance_extra(register, folder))
    yield process
    process.terminate()


@pytest.fixture(scope="package")
def wallet(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki, test_database: str
) -> Iterator[ServiceProcess]:
    folder = tmp_path_factory.mktemp("identity-wallet")
    process = Launcher(folder, pki, [])("wallet", extra=wallet_extra())
    yield process
    process.terminate()


def identity_extra(
    secrets: Path,
    *,
    compliance_port: int,
    wallet_port: int,
    queue: str,
    settings: str = "",
    lockout: str = "",
) -> str:
    """The config of a test identity: the pepper and key directory in `secrets` (shared by
    the package's instances, as replicas share them), cheap
    argon2 parameters (the algorithm and the code path are the production ones), its own
    exclusion-events queue on the test virtual host."""
    return f"""
[redis]
url = "{REDIS_URL}"
[upstreams.compliance]
target = "127.0.0.1:{compliance_port}"
service = "compliance"
timeout_seconds = 5
[upstreams.wallet]
target = "127.0.0.1:{wallet_port}"
service = "wallet"
timeout_seconds = 5
[identity]
pepper_file = "{secrets / "pepper"}"
jwt_key_dir = "{secrets / "jwt"}"
jwt_key_id = "test-1"
generate_missing_secrets = true
exclusion_queue = "{queue}"
{settings}
[identity.argon2]
time_cost = 2
memory_kib = 16384
parallelism = 1
[identity.lockout]
max_failures_per_account = 3
max_failures_per_address = 6
failure_window_seconds = 60
lock_seconds = 2
max_lock_seconds = 8
{lockout}
"""


@dataclass
class Identity:
    process: ServiceProcess
    secrets: Path
    queue: str

    @property
    def public_key_file(self) -> Path:
        return self.secrets / "jwt" / "test-1.pub"


@pytest.fixture(scope="package")
def start_identity(
    tmp_path_factory: pytest.TempPathFactory,
    pki: Pki,
    test_database: str,
    compliance: ServiceProcess,
    wallet: ServiceProcess,
) -> Iterator[Callable[..., Identity]]:
    """A factory: an identity process with extra [identity] settings (each its own queue,
    deleted afterwards; all share the package's compliance and wallet unless told)."""
    started: list[Identity] = []
    secrets = tmp_path_factory.mktemp("identity-secrets")

    def start(settings: str = "", *, wallet_port: int | None = None) -> Identity:
        folder = tmp_path_factory.mktemp("identity")
        queue = f"test.identity.sessions.{uuid.uuid4().hex[:8]}"
        extra = identity_extra(
            secrets,
            compliance_port=compliance.ports["port"],
            wallet_port=wallet_port or wallet.ports["port"],
            queue=queue,
            settings=settings,
        )
        process = Launcher(folder, pki, [])("identity", extra=extra)
        instance = Identity(process, secrets, queue)
        started.append(instance)
        return instance

    yield start
    for instance in started:
        instance.process.terminate()
    delete_queues_now(*(q for i in started for q in (i.queue, f"{i.queue}.dead")))


@pytest.fixture(scope="package")
def identity(start_identity: Callable[..., Identity]) -> Identity:
    return start_identity()


@dataclass
class Clients:
    """Stubs of one identity instance per calling service, on long-lived channels."""

    port: int
    pki: Pki
    channels: dict[str, grpc.aio.Channel]

    def stub(self, caller: str = "edge") -> identity_pb2_grpc.IdentityServiceStub:
        if caller not in self.channels:
            self.channels[caller] = secure_channel(
                f"127.0.0.1:{self.port}", self.pki.tls(caller), "identity", default_timeout=15
            )
        return identity_pb2_grpc.IdentityServiceStub(self.channels[caller])

    async def close(self) -> None:
        for channel in self.channels.values():
            await channel.close()


@pytest.fixture
async def clients(identity: Identity, pki: Pki) -> AsyncIterator[Clients]:
    c = Clients(identity.process.ports["port"], pki, {})
    yield c
    await c.close()


@pytest.fixture
async def edge(clients: Clients) -> identity_pb2_grpc.IdentityServiceStub:
    # Async: a grpc.aio channel is made on the running loop.
    return clients.stub("edge")


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


def unique_email(prefix: str = "player") -> str:
    return f"{prefix}.{uuid.uuid4().hex[:12]}@example.org"


def registration(**overrides: Any) -> pb.RegisterRequest:
    """A registration compliance allows (an adult in GB), with a fresh email and key."""
    address = overrides.pop("address", None) or pb.Address(
        line1="1 Test Street", city="London", postcode="E1 6AN", country_code="GB"
    )
    fields: dict[str, Any] = {
        "request_id": f"reg-{uuid.uuid4().hex[:12]}",
        "email": unique_email(),
        "password": PASSWORD,
        "given_name": "Grace",
        "family_name": f"Tester{uuid.uuid4().hex[:6]}",
        "birth_date": Date(year=1985, month=6, day=15),
        "address": address,
    }
    fields.update(overrides)
    return pb.RegisterRequest(**fields)


def date(value: dt.date) -> Date:
    return Date(year=value.year, month=value.month, day=value.day)


def error_info(exc: grpc.aio.AioRpcError) -> tuple[str, dict[str, str]]:
    """The ErrorInfo reason and metadata of a failed call."""
    info = status_error_info(exc)
    assert info is not None, f"no ErrorInfo in {exc!r}"
    return info.reason, dict(info.metadata)
