"""Registration end to end: compliance decides before anything is stored, the account is
stored with an argon2id hash, the wallet account opens in the country's currency, and a
retry with the same request_id finishes a registration that failed part way."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import grpc
import psycopg
import pytest

from casino.identity.v1 import identity_pb2 as pb
from casino.identity.v1 import identity_pb2_grpc
from casino.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from services.runtime.call import CLIENT_COUNTRY_METADATA
from services.runtime.client import secure_channel
from services.runtime.process import ServiceProcess
from tests.compliance.conftest import EXCLUDED_ON_REGISTER
from tests.conftest import Pki
from tests.identity.conftest import (
    PASSWORD,
    Clients,
    Identity,
    date,
    error_info,
    registration,
    unique_email,
)
from tests.wallet.conftest import admin_dsn


def stored_rows(email: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(admin_dsn()) as conn:
        return conn.execute(
            "SELECT player_id, status, password_hash FROM identity.players"
            " WHERE email_key = lower(%s)",
            (email,),
        ).fetchall()


async def balance(wallet: ServiceProcess, pki: Pki, player_id: str, currency: str) -> int:
    async with secure_channel(
        f"127.0.0.1:{wallet.ports['port']}", pki.tls("backoffice"), "wallet", default_timeout=10
    ) as channel:
        reply = await wallet_pb2_grpc.WalletServiceStub(channel).GetBalance(
            wallet_pb2.GetBalanceRequest(player_id=player_id, currency_code=currency)
        )
        return int(reply.balance.posted_minor)


@pytest.mark.parametrize(("country", "currency"), [("GB", "GBP"), ("MT", "EUR"), ("IE", "EUR")])
async def test_registration_opens_a_wallet_account_in_the_countrys_currency(
    edge: identity_pb2_grpc.IdentityServiceStub,
    wallet: ServiceProcess,
    pki: Pki,
    country: str,
    currency: str,
) -> None:
    request = registration(
        address=pb.Address(line1="1 Main St", city="Town", postcode="AB1 2CD", country_code=country)
    )
    player = (await edge.Register(request)).player
    assert player.currency_code == currency
    assert player.email == request.email
    assert player.name == f"players/{player.player_id}"
    # The account exists (GetBalance of an unopened account is ACCOUNT_NOT_FOUND).
    assert await balance(wallet, pki, player.player_id, currency) == 0
    [(player_id, status, _)] = stored_rows(request.email)
    assert (player_id, status) == (player.player_id, "active")


async def test_under_age_registration_is_denied_and_stores_nothing(
    edge: identity_pb2_grpc.IdentityServiceStub,
) -> None:
    seventeen = dt.date.today().replace(year=dt.date.today().year - 17)
    request = registration(birth_date=date(seventeen))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await edge.Register(request)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    reason, metadata = error_info(refused.value)
    assert reason == "REGISTRATION_DENIED"
    assert "UNDER_AGE" in metadata["reasons"].split(",")
    assert metadata["verdict_id"]
    assert stored_rows(request.email) == []
    with pytest.raises(grpc.aio.AioRpcError) as login:
        await edge.Login(pb.LoginRequest(email=request.email, password=PASSWORD))
    assert error_info(login.value)[0] == "INVALID_CREDENTIALS"


async def test_registering_from_where_the_licence_does_not_reach_is_denied(
    edge: identity_pb2_grpc.IdentityServiceStub,
) -> None:
    # A GB resident whom the edge locates in the US: the check weighs where the request
    # comes from, not only the address given.
    request = registration()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await edge.Register(request, metadata=((CLIENT_COUNTRY_METADATA, "US"),))
    reason, metadata = error_info(refused.value)
    assert reason == "REGISTRATION_DENIED"
    assert "JURISDICTION_BLOCKED" in metadata["reasons"].split(",")
    assert stored_rows(request.email) == []
    # The same application from GB goes through (a retry from elsewhere is the same one).
    player = (await edge.Register(request, metadata=((CLIENT_COUNTRY_METADATA, "GB"),))).player
    assert player.player_id


async def test_a_person_on_the_national_register_is_denied_and_nothing_is_stored(
    edge: identity_pb2_grpc.IdentityServiceStub,
) -> None:
    person = EXCLUDED_ON_REGISTER
    born = dt.date.fromisoformat(person["dateOfBirth"])
    request = registration(
        email=person["email"],
        given_name=person["firstName"],
        family_name=person["lastName"],
        birth_date=date(born),
        address=pb.Address(
            line1="1 Main St", city="London", postcode=person["postcode"], country_code="GB"
        ),
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await edge.Register(request)
    reason, metadata = error_info(refused.value)
    assert reason == "REGISTRATION_DENIED"
    assert "REGISTER_EXCLUDED" in metadata["reasons"].split(",")
    assert stored_rows(request.email) == []


async def test_an_email_registers_once_whatever_its_case(
    edge: identity_pb2_grpc.IdentityServiceStub,
) -> None:
    email = unique_email("dup")
    await edge.Register(registration(email=email))
    with pytest.raises(grpc.aio.AioRpcError) as taken:
        await edge.Register(registration(email=f"  {email.upper()} "))
    assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert error_info(taken.value)[0] == "EMAIL_TAKEN"
    assert len(stored_rows(email)) == 1


async def test_a_retried_registration_returns_the_same_player(
    edge: identity_pb2_grpc.IdentityServiceStub,
) -> None:
    request = registration()
    first = (await edge.Register(request)).player
    again = (await edge.Register(request)).player
    assert again.player_id == first.player_id
    changed = pb.RegisterRequest()
    changed.CopyFrom(request)
    changed.given_name = "Someone Else"
    with pytest.raises(grpc.aio.AioRpcError) as mismatch:
        await edge.Register(changed)
    assert error_info(mismatch.value)[0] == "IDEMPOTENCY_MISMATCH"


async def test_bad_input_is_refused_naming_the_field(
    edge: identity_pb2_grpc.IdentityServiceStub,
) -> None:
    for request, field in [
        (registration(email="not-an-email"), "email"),
        (registration(password="short"), "password"),
        (registration(request_id=""), "request_id"),
        (registration(birth_date=pb.RegisterRequest().birth_date), "birth_date"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await edge.Register(request)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert error_info(refused.value)[1]["field"] == field
        assert stored_rows(request.email) == []


async def test_password_is_stored_as_argon2id_and_never_logged(
    edge: identity_pb2_grpc.IdentityServiceStub, identity: Identity
) -> None:
    secret = "never-log-me-" + unique_email()
    request = registration(password=secret)
    await edge.Register(request)
    await edge.Login(pb.LoginRequest(email=request.email, password=secret))
    with pytest.raises(grpc.aio.AioRpcError):
        await edge.Login(pb.LoginRequest(email=request.email, password=secret + "x"))
    [(_, _, password_hash)] = stored_rows(request.email)
    assert password_hash.startswith("$argon2id$")
    assert secret not in password_hash
    assert secret not in identity.process.log_file.read_text()


async def test_a_registration_interrupted_by_the_wallet_is_finished_by_its_retry(
    start_identity: Callable[..., Identity], pki: Pki
) -> None:
    # An identity whose wallet is unreachable: the registration stops after the account row.
    broken = start_identity(wallet_port=1)
    request = registration()
    clients = Clients(broken.process.ports["port"], pki, {})
    try:
        with pytest.raises(grpc.aio.AioRpcError) as unavailable:
            await clients.stub().Register(request)
        assert unavailable.value.code() == grpc.StatusCode.UNAVAILABLE
        [(player_id, status, _)] = stored_rows(request.email)
        assert status == "pending"
        # Not a usable account yet.
        with pytest.raises(grpc.aio.AioRpcError) as login:
            await clients.stub().Login(pb.LoginRequest(email=request.email, password=PASSWORD))
        assert error_info(login.value)[0] == "INVALID_CREDENTIALS"
    finally:
        await clients.close()
    # The retry (same request_id) through a healthy instance finishes it.
    healthy = start_identity()
    clients = Clients(healthy.process.ports["port"], pki, {})
    try:
        player = (await clients.stub().Register(request)).player
        assert player.player_id == player_id
        [(_, status, _)] = stored_rows(request.email)
        assert status == "active"
        await clients.stub().Login(pb.LoginRequest(email=request.email, password=PASSWORD))
    finally:
        await clients.close()


async def test_identity_is_serving_once_its_database_and_redis_answer(identity: Identity) -> None:
    await identity.process.wait_health(1, timeout=10)  # grpc.health.v1 SERVING
