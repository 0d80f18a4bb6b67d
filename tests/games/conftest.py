"""The games service as a process with the real compliance (and its register simulator),
wallet and RNG services as further processes, on the test database, Redis and RabbitMQ."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.type.date_pb2 import Date

from casino.common.v1.money_pb2 import Money
from casino.compliance.v1 import compliance_pb2, compliance_pb2_grpc
from casino.games.v1 import games_pb2 as pb
from casino.games.v1 import games_pb2_grpc
from casino.rng.v1 import rng_pb2_grpc
from casino.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from services.runtime.client import secure_channel
from services.runtime.process import ServiceProcess
from tests.compliance.conftest import (
    EXCLUDED_ON_REGISTER,
    Simulator,
    compliance_extra,
    run_simulator,
)
from tests.conftest import Launcher, Pki
from tests.rng.conftest import rng_extra
from tests.support.edge_player import AsEdgePlayer
from tests.wallet.conftest import wallet_extra

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="package")
def register(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    folder = tmp_path_factory.mktemp("games-register")
    with run_simulator(folder, [EXCLUDED_ON_REGISTER], "key-" + uuid.uuid4().hex) as sim:
        yield sim


@dataclass
class Upstreams:
    compliance: ServiceProcess
    wallet: ServiceProcess
    rng: ServiceProcess
    folder: Path


@pytest.fixture(scope="package")
def upstreams(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki, test_database: str, register: Simulator
) -> Iterator[Upstreams]:
    folder = tmp_path_factory.mktemp("games-upstreams")
    launcher = Launcher(folder, pki, [])
    compliance = launcher("compliance", extra=compliance_extra(register, folder))
    wallet = launcher("wallet", extra=wallet_extra())
    rng = launcher("rng", extra=rng_extra(folder))
    yield Upstreams(compliance, wallet, rng, folder)
    for process in launcher.started:
        process.terminate()


def games_extra(
    up: Upstreams,
    folder: Path,
    *,
    rng_port: int | None = None,
    settings: str = "",
    failpoints: dict[str, str] | None = None,
) -> str:
    """A test games instance: short leases and recovery intervals (so a crashed round is
    recovered within a test), its own signing key and checkpoints in `folder`."""
    extra = f"""
[redis]
url = "{REDIS_URL}"
[upstreams.compliance]
target = "127.0.0.1:{up.compliance.ports["port"]}"
service = "compliance"
[upstreams.wallet]
target = "127.0.0.1:{up.wallet.ports["port"]}"
service = "wallet"
[upstreams.rng]
target = "127.0.0.1:{rng_port or up.rng.ports["port"]}"
service = "rng"
[games]
lease_seconds = 3
recovery_interval_seconds = 0.2
checkpoint_interval_seconds = 0.5
signing_key_file = "{folder / "games-signing.key"}"
public_key_file = "{folder / "games-signing.pub"}"
checkpoint_dir = "{folder / "games-checkpoints"}"
{settings}
"""
    if failpoints:
        extra += "[failpoints]\n" + "".join(f'"{k}" = "{v}"\n' for k, v in failpoints.items())
    return extra


@pytest.fixture(scope="package")
def games(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki, upstreams: Upstreams
) -> Iterator[ServiceProcess]:
    folder = tmp_path_factory.mktemp("games")
    process = Launcher(folder, pki, [])("games", extra=games_extra(upstreams, folder))
    process.folder = folder  # type: ignore[attr-defined]
    yield process
    process.terminate()


class Clients:
    """Stubs for one test: games as the edge (for the request's player) and as the back
    office, compliance, wallet and RNG as the services that call them."""

    def __init__(self, pki: Pki, up: Upstreams) -> None:
        self._pki = pki
        self._up = up
        self._channels: list[grpc.aio.Channel] = []
        self.compliance = {
            who: compliance_pb2_grpc.ComplianceServiceStub(
                self._channel(up.compliance, who, "compliance")
            )
            for who in ("identity", "backoffice", "games")
        }
        self.wallet = {
            who: wallet_pb2_grpc.WalletServiceStub(self._channel(up.wallet, who, "wallet"))
            for who in ("payments", "backoffice", "games")
        }
        self.rng = rng_pb2_grpc.RngServiceStub(self._channel(up.rng, "backoffice", "rng"))

    def _channel(self, process: ServiceProcess, identity: str, service: str) -> grpc.aio.Channel:
        channel = secure_channel(
            f"127.0.0.1:{process.ports['port']}",
            self._pki.tls(identity),
            service,
            default_timeout=20,
        )
        self._channels.append(channel)
        return channel

    def games(self, process: ServiceProcess, identity: str = "edge") -> Any:
        stub = games_pb2_grpc.GamesServiceStub(self._channel(process, identity, "games"))
        return AsEdgePlayer(stub) if identity == "edge" else stub

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()

    async def player(
        self, *, deposit: int = 100_000, currency: str = "GBP", birth_year: int = 1980
    ) -> str:
        """A verified adult player in GB with a funded wallet account."""
        player_id = f"player-{uuid.uuid4().hex[:12]}"
        await self.compliance["identity"].EnrolPlayer(
            compliance_pb2.EnrolPlayerRequest(
                player_id=player_id,
                person=compliance_pb2.Person(
                    given_name="Alex",
                    family_name=f"Player{uuid.uuid4().hex[:6]}",
                    birth_date=Date(year=birth_year, month=4, day=2),
                    email=f"{uuid.uuid4().hex[:10]}@example.org",
                    postcode="N1 9GU",
                    country_code="GB",
                ),
            )
        )
        await self.compliance["backoffice"].UpdateVerification(
            compliance_pb2.UpdateVerificationRequest(
                player_id=player_id,
                name_verified=True,
                address_verified=True,
                birth_date_verified=True,
                verified_by="kyc-provider:test",
            )
        )
        await self.wallet["payments"].OpenAccount(
            wallet_pb2.OpenAccountRequest(player_id=player_id, currency_code=currency)
        )
        if deposit:
            await self.wallet["payments"].Deposit(
                wallet_pb2.DepositRequest(
                    request_id=f"dep-{uuid.uuid4().hex}",
                    player_id=player_id,
                    amount=Money(amount_minor=deposit, currency_code=currency),
                    payment_id=f"pay-{uuid.uuid4().hex[:8]}",
                )
            )
        return player_id

    async def balance(self, player_id: str, currency: str = "GBP") -> wallet_pb2.Balance:
        reply = await self.wallet["games"].GetBalance(
            wallet_pb2.GetBalanceRequest(player_id=player_id, currency_code=currency)
        )
        return reply.balance

    async def transactions(self, player_id: str) -> list[wallet_pb2.Transaction]:
        reply = await self.wallet["backoffice"].ListTransactions(
            wallet_pb2.ListTransactionsRequest(player_id=player_id, page_size=100)
        )
        return list(reply.transactions)


@pytest.fixture
async def clients(pki: Pki, upstreams: Upstreams) -> AsyncIterator[Clients]:
    c = Clients(pki, upstreams)
    yield c
    await c.close()


async def start_session(
    stub: Any, player_id: str, game_id: str, *, client_seed: str = "", currency: str = "GBP"
) -> pb.Session:
    reply = await stub.StartSession(
        pb.StartSessionRequest(
            player_id=player_id,
            request_id=uuid.uuid4().hex,
            game_id=game_id,
            currency_code=currency,
            request_country_code="GB",
            client_seed=client_seed,
        )
    )
    return reply.session


def dice_bet(stake: int = 100, target: int = 5000, over: bool = False) -> pb.Bet:
    direction = pb.DICE_DIRECTION_OVER if over else pb.DICE_DIRECTION_UNDER
    return pb.Bet(dice=pb.DiceBet(stake_minor=stake, target=target, direction=direction))
