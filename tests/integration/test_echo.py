"""The example service end to end: idempotent writes, paging, and input errors."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest

from casino.echo.v1 import echo_pb2
from services.runtime.status import error_info
from tests.conftest import Pki
from tests.support.clients import echo_client


async def test_same_request_id_returns_the_original_record_marked_replayed(launch, pki) -> None:
    echo = launch()
    key = uuid.uuid4().hex
    async with echo_client(echo.ports["port"], pki.tls("games")) as client:
        first = await client.Echo(echo_pb2.EchoRequest(request_id=key, message="m"), timeout=5)
        again = await client.Echo(echo_pb2.EchoRequest(request_id=key, message="m"), timeout=5)
    assert not first.replayed and again.replayed
    assert again.record == first.record


async def test_same_request_id_with_another_body_is_refused(launch, pki) -> None:
    echo = launch()
    key = uuid.uuid4().hex
    async with echo_client(echo.ports["port"], pki.tls("games")) as client:
        await client.Echo(echo_pb2.EchoRequest(request_id=key, message="m"), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.Echo(echo_pb2.EchoRequest(request_id=key, message="n"), timeout=5)
        listed = await client.ListEchoes(echo_pb2.ListEchoesRequest(caller="games"), timeout=5)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(refused.value)
    assert info is not None and info.reason == "IDEMPOTENCY_MISMATCH"
    assert info.metadata["idempotency_key"] == key
    assert [e.message for e in listed.echoes if e.request_id == key] == ["m"]


async def test_concurrent_requests_with_one_key_record_once(launch, pki: Pki) -> None:
    echo = launch()
    key = uuid.uuid4().hex
    async with echo_client(echo.ports["port"], pki.tls("games")) as client:
        replies = await asyncio.gather(
            *(
                client.Echo(echo_pb2.EchoRequest(request_id=key, message="m"), timeout=10)
                for _ in range(20)
            )
        )
    assert len({r.record.name for r in replies}) == 1
    assert sum(not r.replayed for r in replies) == 1


async def test_paging_walks_every_record_once_newest_first(launch, pki: Pki) -> None:
    echo = launch()
    async with echo_client(echo.ports["port"], pki.tls("edge")) as client:
        sent = [f"page-{i}" for i in range(7)]
        for message in sent:
            await client.Echo(
                echo_pb2.EchoRequest(request_id=uuid.uuid4().hex, message=message), timeout=5
            )
        seen, token = [], ""
        while True:
            page = await client.ListEchoes(
                echo_pb2.ListEchoesRequest(caller="edge", page_size=3, page_token=token), timeout=5
            )
            assert len(page.echoes) <= 3
            seen += [e.message for e in page.echoes]
            token = page.next_page_token
            if not token:
                break
        assert seen[:7] == list(reversed(sent))
        assert len(seen) == len(set(e for e in seen))

        first = await client.ListEchoes(
            echo_pb2.ListEchoesRequest(caller="edge", page_size=1), timeout=5
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.ListEchoes(
                echo_pb2.ListEchoesRequest(caller="games", page_token=first.next_page_token),
                timeout=5,
            )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(refused.value).reason == "INVALID_PAGE_TOKEN"  # type: ignore[union-attr]


async def test_invalid_request_is_refused_by_field_and_records_nothing(launch, pki) -> None:
    echo = launch()
    key = uuid.uuid4().hex
    async with echo_client(echo.ports["port"], pki.tls("games")) as client:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.Echo(echo_pb2.EchoRequest(request_id=key, message="x" * 2000), timeout=5)
        listed = await client.ListEchoes(echo_pb2.ListEchoesRequest(caller="games"), timeout=5)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(refused.value).metadata["field"] == "message"  # type: ignore[union-attr]
    assert key not in {e.request_id for e in listed.echoes}
