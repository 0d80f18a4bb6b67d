"""Fixtures shared by the suites: a test PKI, a migrated test database, and service
processes started from generated config files, all against the real PostgreSQL."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.runtime import dbsetup
from services.runtime.broker import Broker
from services.runtime.config import AmqpConfig, TLSConfig
from services.runtime.devpki import Authority, ensure_pki, issue, new_authority
from services.runtime.process import ServiceProcess

ROOT = Path(__file__).resolve().parent.parent
SECRETS = ROOT / ".dev" / "secrets"
# Recreated by every test session; concurrent sessions on one machine (a developer's run
# beside CI's) each name their own.
TEST_DATABASE = os.environ.get("CASINO_TEST_DATABASE", "casino_test")
# The RabbitMQ virtual host of tests (scripts/lib.sh creates it): the events tests publish
# never reach the dev stack's queues. Services and test tooling log in as the platform's
# user, the password read from its file as in every other configuration.
TEST_AMQP_URL = f"amqp://{dbsetup.BROKER_USER}@127.0.0.1:5672/casino_test"
TEST_AMQP_PASSWORD_FILE = dbsetup.broker_password_path(SECRETS)


def amqp_broker(password_file: Path = TEST_AMQP_PASSWORD_FILE) -> Broker:
    """The tests' virtual host as a service reaches it."""
    return Broker(AmqpConfig(url=TEST_AMQP_URL, password_file=password_file))


@dataclass(frozen=True)
class Pki:
    folder: Path
    authority: Authority

    def tls(self, identity: str) -> TLSConfig:
        return TLSConfig(
            self.folder / "ca.crt", self.folder / f"{identity}.crt", self.folder / f"{identity}.key"
        )


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    return Pki(folder, ensure_pki(folder))


@pytest.fixture(scope="session")
def rogue_pki(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Pki:
    """A CA the platform does not trust, issuing a certificate that claims to be 'games'."""
    folder = tmp_path_factory.mktemp("rogue")
    authority = new_authority("rogue CA")
    cert, key = issue(authority, "games")
    (folder / "games.crt").write_bytes(cert)
    (folder / "games.key").write_bytes(key)
    (folder / "games.key").chmod(0o600)
    (folder / "ca.crt").write_bytes((pki.folder / "ca.crt").read_bytes())
    return Pki(folder, authority)


@pytest.fixture(scope="session")
def test_database() -> str:
    dbsetup.migrate(TEST_DATABASE, [], SECRETS, recreate=True)
    return TEST_DATABASE


def database_url(service: str, host: str = "127.0.0.1", port: int = 5432) -> str:
    return f"postgresql+psycopg://casino_{service}@{host}:{port}/{TEST_DATABASE}"


_counter = itertools.count()


@dataclass
class Launcher:
    tmp: Path
    pki: Pki
    started: list[ServiceProcess]

    def __call__(
        self,
        service: str = "echo",
        *,
        db_port: int = 5432,
        upstream_port: int | None = None,
        grace_seconds: float = 10.0,
        extra: str = "",
        pki: Pki | None = None,
        max_concurrent_rpcs: int = 1000,
        amqp_url: str = TEST_AMQP_URL,
        amqp_password_file: Path = TEST_AMQP_PASSWORD_FILE,
    ) -> ServiceProcess:
        n = next(_counter)
        pki = pki or self.pki
        trace_file = self.tmp / f"{service}-{n}.spans.jsonl"
        upstream = (
            f'[upstreams.echo]\ntarget = "127.0.0.1:{upstream_port}"\nservice = "echo"\n'
            if upstream_port
            else ""
        )
        config = self.tmp / f"{service}-{n}.toml"
        config.write_text(
            f"""
[service]
name = "{service}"
[listen]
host = "127.0.0.1"
max_concurrent_rpcs = {max_concurrent_rpcs}
[tls]
ca_file = "{pki.folder / "ca.crt"}"
cert_file = "{pki.folder / f"{service}.crt"}"
key_file = "{pki.folder / f"{service}.key"}"
[database]
url = "{database_url(service, port=db_port)}"
password_file = "{SECRETS / "postgres" / f"casino_{service}"}"
pool_size = 4
connect_timeout_seconds = 1
[amqp]
url = "{amqp_url}"
password_file = "{amqp_password_file}"
[health]
probe_interval_seconds = 0.2
[telemetry]
trace_exporter = "file"
trace_file = "{trace_file}"
trace_export_delay_ms = 100
[shutdown]
grace_seconds = {grace_seconds}
{upstream}
{extra}
"""
        )
        process = ServiceProcess(service, config, self.tmp / f"{service}-{n}.log", cwd=ROOT)
        process.trace_file = trace_file  # type: ignore[attr-defined]
        process.start()
        self.started.append(process)
        process.wait_started()
        return process


@pytest.fixture
def launch(tmp_path: Path, pki: Pki, test_database: str) -> Iterator[Callable[..., ServiceProcess]]:
    launcher = Launcher(tmp_path, pki, [])
    yield launcher
    for process in launcher.started:
        process.terminate()
