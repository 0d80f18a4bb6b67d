"""Who may call: mutual TLS at the handshake, then the contract's allowed callers."""

from __future__ import annotations

import shutil
import uuid

import grpc
import pytest
from sqlalchemy import create_engine, text

from casino.echo.v1 import echo_pb2, echo_pb2_grpc
from services.runtime.devpki import ensure_pki, issue
from services.runtime.status import error_info
from tests.conftest import SECRETS, TEST_DATABASE, Pki
from tests.support.clients import echo_client


def _rows_with_request_id(request_id: str) -> int:
    password = (SECRETS / "postgres" / "casino_admin").read_text()
    engine = create_engine(
        f"postgresql+psycopg://casino_admin:{password}@127.0.0.1:5432/{TEST_DATABASE}"
    )
    with engine.connect() as conn:
        count = conn.execute(
            text("SELECT count(*) FROM echo.echoes WHERE request_id = :r"), {"r": request_id}
        ).scalar_one()
    engine.dispose()
    return int(count)


async def test_allowed_identity_is_served_and_seen_as_itself(launch, pki: Pki) -> None:
    echo = launch()
    async with echo_client(echo.ports["port"], pki.tls("games")) as client:
        reply = await client.Echo(echo_pb2.EchoRequest(request_id="a1", message="hi"), timeout=5)
    assert reply.caller == "games"
    assert reply.record.caller == "games"
    assert reply.record.message == "hi"


async def test_client_without_certificate_fails_at_handshake(launch, pki: Pki) -> None:
    echo = launch()
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(pki.folder / "ca.crt").read_bytes()
    )
    request_id = uuid.uuid4().hex
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{echo.ports['port']}",
        credentials,
        options=[("grpc.ssl_target_name_override", "echo")],
    ) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await echo_pb2_grpc.EchoServiceStub(channel).Echo(
                echo_pb2.EchoRequest(request_id=request_id, message="hi"), timeout=5
            )
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    assert _rows_with_request_id(request_id) == 0
    assert not [line for line in echo.log_lines() if line.get("event") == "rpc finished"]


async def test_certificate_from_another_ca_fails_at_handshake(launch, rogue_pki: Pki) -> None:
    echo = launch()
    request_id = uuid.uuid4().hex
    async with echo_client(echo.ports["port"], rogue_pki.tls("games")) as client:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await client.Echo(echo_pb2.EchoRequest(request_id=request_id, message="hi"), timeout=5)
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    assert _rows_with_request_id(request_id) == 0


async def test_identity_not_allowed_by_contract_is_denied_before_the_handler(
    launch, pki: Pki
) -> None:
    echo = launch()
    request_id = uuid.uuid4().hex
    async with echo_client(echo.ports["port"], pki.tls("wallet")) as client:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            # delay_ms would keep a handler busy; the denial is immediate because none runs.
            await client.Echo(
                echo_pb2.EchoRequest(request_id=request_id, message="hi", delay_ms=3000),
                timeout=2,
            )
    assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED
    info = error_info(failure.value)
    assert info is not None
    assert info.reason == "CALLER_NOT_ALLOWED"
    assert info.domain == "echo.casino.local"
    assert info.metadata["caller"] == "wallet"
    assert info.metadata["rpc"] == "/casino.echo.v1.EchoService/Echo"
    assert _rows_with_request_id(request_id) == 0


async def test_rpc_allowing_fewer_callers_denies_an_identity_another_rpc_allows(
    launch, pki: Pki
) -> None:
    # "echo" may call Echo but not RelayEcho: the policy is per RPC, not per service.
    echo = launch()
    async with echo_client(echo.ports["port"], pki.tls("echo")) as client:
        await client.Echo(echo_pb2.EchoRequest(request_id=uuid.uuid4().hex, message="m"), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await client.RelayEcho(
                echo_pb2.RelayEchoRequest(request_id=uuid.uuid4().hex, message="m"), timeout=5
            )
    assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_platform_certificate_without_a_known_identity_is_denied(
    launch, pki: Pki, tmp_path
) -> None:
    cert, key = issue(pki.authority, "mallory")  # signed by our CA, unknown SPIFFE name
    (tmp_path / "mallory.crt").write_bytes(cert)
    (tmp_path / "mallory.key").write_bytes(key)
    (tmp_path / "mallory.key").chmod(0o600)
    (tmp_path / "ca.crt").write_bytes((pki.folder / "ca.crt").read_bytes())
    echo = launch()
    async with echo_client(echo.ports["port"], Pki(tmp_path, pki.authority).tls("mallory")) as c:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await c.Echo(echo_pb2.EchoRequest(request_id=uuid.uuid4().hex, message="m"), timeout=5)
    assert failure.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info(failure.value).reason == "CALLER_NOT_ALLOWED"  # type: ignore[union-attr]


async def test_rotated_certificates_are_used_for_new_connections_without_restart(
    launch, tmp_path
) -> None:
    old = Pki(tmp_path / "old", ensure_pki(tmp_path / "old", ("echo", "games")))
    new = Pki(tmp_path / "new", ensure_pki(tmp_path / "new", ("echo", "games")))
    served = Pki(tmp_path / "served", old.authority)
    shutil.copytree(old.folder, served.folder)
    echo = launch(pki=served)
    message = echo_pb2.EchoRequest(message="m")

    async with echo_client(echo.ports["port"], old.tls("games")) as client:
        await client.Echo(echo_pb2.EchoRequest(request_id=uuid.uuid4().hex, message="m"), timeout=5)

    # Rotate in place, as cert-manager does: new CA bundle, new server certificate and key.
    for name in ("ca.crt", "echo.crt", "echo.key"):
        shutil.copy(new.folder / name, served.folder / name)

    async with echo_client(echo.ports["port"], new.tls("games")) as client:
        message.request_id = uuid.uuid4().hex
        reply = await client.Echo(message, timeout=5)
    assert reply.caller == "games"
    async with echo_client(echo.ports["port"], old.tls("games")) as client:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            message.request_id = uuid.uuid4().hex
            await client.Echo(message, timeout=5)
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    assert any(line.get("event") == "certificates reloaded" for line in echo.log_lines())
