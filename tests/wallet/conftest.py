"""A wallet process on the test database, and clients speaking as the services that call
it. Each test works on its own fresh players, so one wallet serves the module."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from casino.common.v1.money_pb2 import Money
from casino.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from services.runtime import db
from services.runtime.client import secure_channel
from services.runtime.config import DatabaseConfig
from services.runtime.process import ServiceProcess
from services.wallet.cache import BalanceCache
from services.wallet.postings import Postings
from services.wallet.server import encode_event
from tests.conftest import SECRETS, Launcher, Pki, database_url
from tests.support.edge_player import AsEdgePlayer

WALLET_SECTION = """
[redis]
url = "redis://127.0.0.1:6379/0"
[wallet]
currencies = ["EUR", "GBP", "USD"]
outbox_relay = {relay}
"""


def wallet_extra(
    *,
    relay: bool = False,
    failpoints: dict[str, str] | None = None,
    wallet: str = "",
    checkpoints: Path | None = None,
    checkpoint_interval: float = 0.2,
) -> str:
    """The test wallet's config; `wallet`: more lines for its [wallet] table; `checkpoints`:
    a folder for signed ledger checkpoints and their keys (without one: no checkpoints, so
    wallets of concurrent test sessions never share a directory)."""
    extra = WALLET_SECTION.format(relay="true" if relay else "false")
    if checkpoints is None:
        extra += "checkpoint_interval_seconds = 0\n"
    else:
        extra += (
            f"checkpoint_interval_seconds = {checkpoint_interval}\n"
            f'checkpoint_dir = "{checkpoints / "checkpoints"}"\n'
            f'signing_key_file = "{checkpoints / "wallet-signing.key"}"\n'
            f'public_key_file = "{checkpoints / "wallet-signing.pub"}"\n'
        )
    extra += wallet
    if failpoints:
        extra += "[failpoints]\n" + "".join(f'"{k}" = "{v}"\n' for k, v in failpoints.items())
    return extra


@pytest.fixture(scope="module")
def wallet(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki, test_database: str
) -> Iterator[ServiceProcess]:
    launcher = Launcher(tmp_path_factory.mktemp("wallet"), pki, [])
    process = launcher("wallet", extra=wallet_extra(), max_concurrent_rpcs=2000)
    yield process
    process.terminate()


class WalletClients:
    """Stubs of one wallet per calling identity, on long-lived channels."""

    def __init__(self, port: int, pki: Pki) -> None:
        self._port = port
        self._pki = pki
        self._channels: dict[str, object] = {}
        self._stubs: dict[str, wallet_pb2_grpc.WalletServiceStub] = {}

    def __getattr__(self, identity: str) -> wallet_pb2_grpc.WalletServiceStub:
        if identity.startswith("_"):
            raise AttributeError(identity)
        if identity not in self._stubs:
            channel = secure_channel(
                f"127.0.0.1:{self._port}", self._pki.tls(identity), "wallet", default_timeout=10
            )
            self._channels[identity] = channel
            stub = wallet_pb2_grpc.WalletServiceStub(channel)
            # The edge calls for the player whose token it verified: the request's own player.
            self._stubs[identity] = AsEdgePlayer(stub) if identity == "edge" else stub  # type: ignore[assignment]
        return self._stubs[identity]

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()  # type: ignore[attr-defined]


@pytest.fixture
async def clients(wallet: ServiceProcess, pki: Pki) -> AsyncIterator[WalletClients]:
    c = WalletClients(wallet.ports["port"], pki)
    yield c
    await c.close()


def eur(amount: int) -> Money:
    return Money(amount_minor=amount, currency_code="EUR")


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def player(clients: WalletClients) -> Callable[..., object]:
    """A factory: a new player with an EUR account funded with `balance`."""

    async def make(balance: int = 0, currency: str = "EUR") -> str:
        player_id = new_id("player")
        await clients.identity.OpenAccount(
            wallet_pb2.OpenAccountRequest(player_id=player_id, currency_code=currency)
        )
        if balance:
            await clients.payments.Deposit(
                wallet_pb2.DepositRequest(
                    request_id=new_id("dep"),
                    player_id=player_id,
                    amount=Money(amount_minor=balance, currency_code=currency),
                )
            )
        return player_id

    return make


@pytest.fixture
async def postings(
    wallet: ServiceProcess,  # a running wallet: its schema is migrated
) -> AsyncIterator[Postings]:
    """The wallet's batch poster in the test process, on the wallet's schema and role (no
    display cache), for tests that drive it directly."""
    engine = db.create_engine(
        DatabaseConfig(
            url=database_url("wallet"), password_file=SECRETS / "postgres" / "casino_wallet"
        ),
        "test",
    )
    postings = Postings(engine, BalanceCache(None, 5.0), encode_event)
    worker = asyncio.create_task(postings.run())
    try:
        yield postings
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
        await engine.dispose()


def admin_dsn() -> str:
    from tests.conftest import SECRETS, TEST_DATABASE

    password = (SECRETS / "postgres" / "casino_admin").read_text()
    return f"postgresql://casino_admin:{password}@127.0.0.1:5432/{TEST_DATABASE}"


def wallet_role_dsn() -> str:
    from tests.conftest import SECRETS, TEST_DATABASE

    password = (SECRETS / "postgres" / "casino_wallet").read_text()
    return f"postgresql://casino_wallet:{password}@127.0.0.1:5432/{TEST_DATABASE}"


__all__ = ["Path", "admin_dsn", "eur", "new_id", "wallet_extra", "wallet_role_dsn"]
