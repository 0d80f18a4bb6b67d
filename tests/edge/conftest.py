"""A running edge process in front of real service processes (echo, wallet), over real HTTP,
with players' access tokens and back-office operators' tokens minted here from Ed25519 key
pairs in temp dirs (as identity and the operator's SSO mint them), and an in-process gRPC
stand-in of the echo contract that fails on request (the error-mapping rows)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from casino.echo.v1 import echo_pb2, echo_pb2_grpc
from edge.process import EdgeProcess
from services.runtime.process import ServiceProcess
from services.runtime.status import abort
from services.runtime.tls import ServerCertificates
from tests.conftest import ROOT, Launcher, Pki
from tests.support.tcp_proxy import TcpProxy
from tests.wallet.conftest import wallet_extra

REDIS_URL = "redis://127.0.0.1:6379/0"
KID = "edge-test-1"
OPERATOR_KID = "sso-test-1"
# The admin listener serves 10.0.0.0/8 only; the test client (loopback) is its trusted proxy.
BACK_OFFICE = {"X-Forwarded-For": "10.1.2.3"}
# Roles the test edges require per admin operation (others: any operator).
REQUIRED_ROLES = {"casino.wallet.v1.WalletService/AdjustBalance": ["wallet-adjuster"]}


@dataclass(frozen=True)
class TokenMinter:
    """Signs access tokens the way identity does (EdDSA, kid header, identity's claims)."""

    key_dir: Path
    key: Ed25519PrivateKey

    def token(self, player_id: str, *, ttl: int = 900, **claims: object) -> str:
        now = int(time.time())
        payload = {
            "iss": "casino-identity",
            "aud": "casino-edge",
            "sub": player_id,
            "sid": uuid.uuid4().hex,
            "jti": uuid.uuid4().hex,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            **claims,
        }
        return jwt.encode(payload, self.key, algorithm="EdDSA", headers={"kid": KID})

    def bearer(self, player_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(player_id)}"}


def _write_public_key(path: Path, key: Ed25519PrivateKey) -> None:
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


@pytest.fixture(scope="session")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> TokenMinter:
    folder = tmp_path_factory.mktemp("jwt")
    key = Ed25519PrivateKey.generate()
    _write_public_key(folder / f"{KID}.pub", key)
    return TokenMinter(folder, key)


@dataclass(frozen=True)
class OperatorMinter:
    """Signs back-office operators' tokens the way the operator's SSO does (EdDSA, its own
    kid, issuer and audience, the operator's roles)."""

    key_dir: Path
    key: Ed25519PrivateKey

    def token(
        self,
        operator_id: str,
        roles: tuple[str, ...] = ("finance",),
        *,
        ttl: int = 300,
        kid: str = OPERATOR_KID,
        key: Ed25519PrivateKey | None = None,
        **claims: object,
    ) -> str:
        now = int(time.time())
        payload = {
            "iss": "casino-operator-sso",
            "aud": "casino-admin",
            "sub": operator_id,
            "roles": list(roles),
            "jti": uuid.uuid4().hex,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            **claims,
        }
        return jwt.encode(payload, key or self.key, algorithm="EdDSA", headers={"kid": kid})

    def bearer(self, operator_id: str, roles: tuple[str, ...] = ("finance",)) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(operator_id, roles)}"}


@pytest.fixture(scope="session")
def operators(tmp_path_factory: pytest.TempPathFactory) -> OperatorMinter:
    folder = tmp_path_factory.mktemp("operator-jwt")
    key = Ed25519PrivateKey.generate()
    _write_public_key(folder / f"{OPERATOR_KID}.pub", key)
    return OperatorMinter(folder, key)


def operator_auth(key_dir: Path, required_roles: dict[str, list[str]] | None = None) -> str:
    """The [edge.operator_auth] tables of a test edge."""
    roles = REQUIRED_ROLES if required_roles is None else required_roles
    lines = "".join(f'"{rpc}" = {json.dumps(names)}\n' for rpc, names in roles.items())
    return (
        f'[edge.operator_auth]\npublic_key_dir = "{key_dir}"\n'
        f"[edge.operator_auth.required_roles]\n{lines}"
    )


HIGH_LIMITS = """
[edge.ratelimit.classes.CATALOG]
rate = 100000
burst = 100000
[edge.ratelimit.classes.PLAYER_WALLET]
rate = 100000
burst = 100000
[edge.ratelimit.classes.ADMIN]
rate = 100000
burst = 100000
[edge.ratelimit.classes.UNROUTED]
rate = 100000
burst = 100000
"""


def edge_config(
    path: Path,
    pki: Pki,
    key_dir: Path,
    *,
    upstreams: dict[str, tuple[int, str]],
    services: dict[str, str],
    extra: str = "",
    admin_networks: tuple[str, ...] = ("10.0.0.0/8",),
    admin_trusted_proxies: tuple[str, ...] = ("127.0.0.1/32",),
    public_max_in_flight: int = 512,
    catalog_deadline: float = 1.0,
    max_body_bytes: int = 4096,
    limits: str = HIGH_LIMITS,
    redis_url: str = REDIS_URL,
    operator_key_dir: Path | None = None,
    header_timeout: float | None = None,
    idle_timeout: float | None = None,
    proxy_idle_timeout: float | None = None,
    max_connections: int | None = None,
    max_connections_per_address: int | None = None,
) -> Path:
    """An edge config: every listener on a free loopback port; the admin listener only for
    `admin_networks` (loopback is not among them), believing X-Forwarded-For only from
    `admin_trusted_proxies` (the test client's loopback address plays the load balancer); a
    rate-limit key prefix of its own so runs never share budgets; high limits (unless
    `limits` says otherwise) so routing tests are never limited; operators' tokens from the
    keys of `operator_key_dir` (none: the admin listener authenticates no one); every
    listener's request-head and idle-connection bounds from `header_timeout`, `idle_timeout`
    and `proxy_idle_timeout`, and its connection limits from `max_connections` and
    `max_connections_per_address` (None: the edge's defaults)."""
    upstream_tables = "".join(
        f'[upstreams.{name}]\ntarget = "127.0.0.1:{port}"\nservice = "{service}"\n'
        for name, (port, service) in upstreams.items()
    )
    service_lines = "".join(f'"{svc}" = "{up}"\n' for svc, up in services.items())
    networks = ", ".join(f'"{n}"' for n in admin_networks)
    proxies = ", ".join(f'"{n}"' for n in admin_trusted_proxies)
    bounds = "".join(
        f"{key} = {value}\n"
        for key, value in (
            ("header_timeout_seconds", header_timeout),
            ("idle_timeout_seconds", idle_timeout),
            ("proxy_idle_timeout_seconds", proxy_idle_timeout),
            ("max_connections", max_connections),
            ("max_connections_per_address", max_connections_per_address),
        )
        if value is not None
    )
    path.write_text(
        f"""
[service]
name = "edge"
[tls]
ca_file = "{pki.folder / "ca.crt"}"
cert_file = "{pki.folder / "edge.crt"}"
key_file = "{pki.folder / "edge.key"}"
[redis]
url = "{redis_url}"
[telemetry]
log_level = "info"
[shutdown]
grace_seconds = 2
{upstream_tables}
[edge]
max_body_bytes = {max_body_bytes}
readiness_interval_seconds = 0.2
[edge.services]
{service_lines}
[edge.listeners.public]
port = 0
max_in_flight = {public_max_in_flight}
{bounds}[edge.listeners.webhooks]
port = 0
{bounds}[edge.listeners.admin]
port = 0
{bounds}allowed_networks = [{networks}]
trusted_proxies = [{proxies}]
[edge.deadlines]
CATALOG = {catalog_deadline}
[edge.auth]
public_key_dir = "{key_dir}"
{operator_auth(operator_key_dir) if operator_key_dir else ""}
[edge.ratelimit]
key_prefix = "edge-test-{uuid.uuid4().hex}"
{limits}
{extra}
"""
    )
    return path


def start_edge(tmp: Path, config: Path, *, ready: bool = True) -> EdgeProcess:
    process = EdgeProcess(config, tmp / f"{config.stem}.log", cwd=ROOT)
    process.start()
    try:
        process.wait_started()
        if ready:
            process.wait_ready()
    except Exception:
        process.terminate()
        raise
    return process


@pytest.fixture(scope="session")
def edge_services(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki, test_database: str
) -> Iterator[dict[str, ServiceProcess]]:
    """Real echo and wallet processes the edge fronts."""
    launcher = Launcher(tmp_path_factory.mktemp("edge-services"), pki, [])
    try:
        yield {
            "echo": launcher("echo"),
            "wallet": launcher("wallet", extra=wallet_extra()),
        }
    finally:
        for process in launcher.started:
            process.terminate()


@pytest.fixture(scope="session")
def edge(
    tmp_path_factory: pytest.TempPathFactory,
    pki: Pki,
    tokens: TokenMinter,
    operators: OperatorMinter,
    edge_services: dict[str, ServiceProcess],
) -> Iterator[EdgeProcess]:
    """The edge in front of the real echo and wallet, authenticating `operators` on its admin
    listener."""
    yield from serve_edge(
        tmp_path_factory.mktemp("edge"),
        pki,
        tokens,
        edge_services,
        operator_key_dir=operators.key_dir,
    )


@dataclass
class EdgeKit:
    """What every edge a test module starts needs: a place for its files, the PKI, the
    players' token keys and the real services it fronts."""

    tmp_path_factory: pytest.TempPathFactory
    pki: Pki
    tokens: TokenMinter
    services: dict[str, ServiceProcess]

    def serve(self, name: str, **config: Any) -> Iterator[EdgeProcess]:
        """An edge with `config` (as for edge_config), for a fixture to `yield from`."""
        yield from serve_edge(
            self.tmp_path_factory.mktemp(name), self.pki, self.tokens, self.services, **config
        )


@pytest.fixture(scope="session")
def edge_kit(
    tmp_path_factory: pytest.TempPathFactory,
    pki: Pki,
    tokens: TokenMinter,
    edge_services: dict[str, ServiceProcess],
) -> EdgeKit:
    return EdgeKit(tmp_path_factory, pki, tokens, edge_services)


def serve_edge(
    tmp: Path,
    pki: Pki,
    tokens: TokenMinter,
    edge_services: dict[str, ServiceProcess],
    **config: Any,
) -> Iterator[EdgeProcess]:
    """An edge as start_edge_for starts it, for a fixture to `yield from`: stopped after."""
    process = start_edge_for(tmp, pki, tokens, edge_services, **config)
    try:
        yield process
    finally:
        process.terminate()


def start_edge_for(
    tmp: Path,
    pki: Pki,
    tokens: TokenMinter,
    edge_services: dict[str, ServiceProcess],
    **config: Any,
) -> EdgeProcess:
    """An edge in front of the real echo and wallet; `config` as for edge_config."""
    path = edge_config(
        tmp / "edge.toml",
        pki,
        tokens.key_dir,
        upstreams={
            "echo": (edge_services["echo"].ports["port"], "echo"),
            "wallet": (edge_services["wallet"].ports["port"], "wallet"),
        },
        services={
            "casino.echo.v1.EchoService": "echo",
            "casino.wallet.v1.WalletService": "wallet",
        },
        **config,
    )
    return start_edge(tmp, path)


@pytest.fixture
async def http(edge: EdgeProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=edge.url(), timeout=10) as client:
        yield client


# A stand-in upstream for the error table: the echo contract, served over the platform's
# mTLS with echo's certificate, whose Mirror fails with the status named in the request.


class FailingEcho(echo_pb2_grpc.EchoServiceServicer):
    """Mirror with name "mirrors/<CODE>" fails with that gRPC status; the reason, message
    and metadata come from note.title, note.text and tags ("k=v"). "mirrors/SLOW" answers
    after 5 s, noting the time its caller's deadline left it (None: no deadline)."""

    def __init__(self) -> None:
        self.slow_deadlines: list[float | None] = []

    async def Mirror(
        self, request: echo_pb2.MirrorRequest, context: grpc.aio.ServicerContext
    ) -> echo_pb2.MirrorResponse:
        code_name = request.name.removeprefix("mirrors/")
        if code_name == "SLOW":
            self.slow_deadlines.append(context.time_remaining())
            await asyncio.sleep(5)
            return echo_pb2.MirrorResponse(request=request)
        if code_name == "CRASH":
            raise RuntimeError("psycopg.connect(password='hunter2') at /srv/wallet/store.py:42")
        code = grpc.StatusCode[code_name]
        if not request.note.title:  # a bare status, no ErrorInfo
            await context.abort(code, request.note.text)
        metadata = dict(tag.split("=", 1) for tag in request.tags)
        await abort(context, code, request.note.title, request.note.text, metadata)
        raise AssertionError("unreachable")


@dataclass
class StubUpstream:
    server: grpc.aio.Server
    port: int


async def serve_stand_in(
    pki: Pki, identity: str, add: Callable[[grpc.aio.Server], None]
) -> StubUpstream:
    """A stand-in upstream, started: what `add` puts on a server, plus health SERVING (the
    edge is ready only when its upstreams say so), over mTLS with `identity`'s certificate."""
    server = grpc.aio.server()
    add(server)
    health = health_aio.HealthServicer()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_secure_port(
        "127.0.0.1:0", ServerCertificates(pki.tls(identity)).credentials()
    )
    await server.start()
    return StubUpstream(server, port)


@pytest.fixture(scope="session")
def failing_echo() -> FailingEcho:
    return FailingEcho()


@pytest.fixture(scope="session")
async def failing_upstream(pki: Pki, failing_echo: FailingEcho) -> AsyncIterator[StubUpstream]:
    # Only Mirror is served: the other methods are the base class's UNIMPLEMENTED.
    upstream = await serve_stand_in(
        pki,
        "echo",
        lambda server: echo_pb2_grpc.add_EchoServiceServicer_to_server(failing_echo, server),
    )
    yield upstream
    await upstream.server.stop(0)


@pytest.fixture(scope="session")
def failing_edge(
    tmp_path_factory: pytest.TempPathFactory,
    pki: Pki,
    tokens: TokenMinter,
    failing_upstream: StubUpstream,
    unused_port: int,
) -> Iterator[EdgeProcess]:
    """An edge whose echo is the failing stand-in and whose wallet is not running."""
    tmp = tmp_path_factory.mktemp("failing-edge")
    config = edge_config(
        tmp / "failing-edge.toml",
        pki,
        tokens.key_dir,
        upstreams={"echo": (failing_upstream.port, "echo"), "wallet": (unused_port, "wallet")},
        services={
            "casino.echo.v1.EchoService": "echo",
            "casino.wallet.v1.WalletService": "wallet",
        },
        catalog_deadline=0.5,
        public_max_in_flight=4,
    )
    # Never ready: its wallet is down (which is what /readyz must say).
    process = start_edge(tmp, config, ready=False)
    yield process
    process.terminate()


@pytest.fixture(scope="session")
def unused_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def redis_proxy() -> Iterator[TcpProxy]:
    """Redis behind a proxy a test can cut and restore (one per test module)."""
    proxy = TcpProxy("127.0.0.1", 6379)
    proxy.start()
    yield proxy
    proxy.close()
