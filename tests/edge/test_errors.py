"""The error mapping through a running edge: every gRPC status an upstream returns becomes
grpc-gateway's HTTP status with one JSON shape; internals never leave the edge; deadline
budgets (a withheld request body included), a dead upstream, and a listener at capacity that
leaves the others serving."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from edge.process import EdgeProcess
from tests.edge.conftest import FailingEcho, StubUpstream, TokenMinter


@pytest.fixture
async def failing(
    failing_edge: EdgeProcess, failing_upstream: StubUpstream
) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=failing_edge.url(), timeout=10) as client:
        yield client


async def _fail(
    client: httpx.AsyncClient, code: str, reason: str = "", message: str = "", **metadata: str
) -> httpx.Response:
    return await client.post(
        f"/v1/mirrors/{code}:mirror",
        params=[("tags", f"{k}={v}") for k, v in metadata.items()],
        json={"title": reason, "text": message},
    )


@pytest.mark.parametrize(
    ("code", "reason", "status"),
    [
        ("INVALID_ARGUMENT", "INVALID_ARGUMENT", 400),
        ("OUT_OF_RANGE", "INVALID_PAGE_TOKEN", 400),
        ("FAILED_PRECONDITION", "IDEMPOTENCY_MISMATCH", 400),
        # Business refusals of a well-formed request.
        ("FAILED_PRECONDITION", "INSUFFICIENT_FUNDS", 422),
        ("FAILED_PRECONDITION", "LIMIT_EXCEEDED", 422),
        ("FAILED_PRECONDITION", "SELF_EXCLUDED", 422),
        ("UNAUTHENTICATED", "TOKEN_EXPIRED", 401),
        ("PERMISSION_DENIED", "PLAYER_MISMATCH", 403),
        ("NOT_FOUND", "ACCOUNT_NOT_FOUND", 404),
        ("ALREADY_EXISTS", "WITHDRAWAL_ID_IN_USE", 409),
        ("ABORTED", "CONCURRENT_UPDATE", 409),
        ("RESOURCE_EXHAUSTED", "OVERLOADED", 429),
        ("CANCELLED", "CANCELLED", 499),
        ("UNIMPLEMENTED", "NOT_IMPLEMENTED", 501),
        ("UNAVAILABLE", "DEPENDENCY_UNAVAILABLE", 503),
        ("DEADLINE_EXCEEDED", "DEADLINE", 504),
    ],
)
async def test_each_grpc_status_maps_to_its_http_status_with_the_error_info(
    failing: httpx.AsyncClient, code: str, reason: str, status: int
) -> None:
    reply = await _fail(failing, code, reason, f"refused: {reason}", currency_code="EUR")
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert body["code"] == code
    assert body["reason"] == reason
    assert body["metadata"] == {"currency_code": "EUR"}
    assert body["requestId"] == reply.headers["x-request-id"]
    if code not in ("UNIMPLEMENTED",):
        assert body["message"] == f"refused: {reason}"


@pytest.mark.parametrize("code", ["INTERNAL", "UNKNOWN", "DATA_LOSS"])
async def test_internal_failures_are_500_with_the_request_id_only(
    failing: httpx.AsyncClient, code: str
) -> None:
    reply = await _fail(
        failing,
        code,
        "INTERNAL_ERROR",
        "Traceback (most recent call last): File /srv/wallet/store.py line 42",
        trace_id="0af7651916cd43dd8448eb211c80319c",
        dsn="postgresql://casino_wallet:hunter2@db",
    )
    assert reply.status_code == 500
    body = reply.json()
    assert body == {
        "code": "INTERNAL",
        "message": "internal error; quote the request id when reporting it",
        "reason": "INTERNAL_ERROR",
        "metadata": {},
        "requestId": reply.headers["x-request-id"],
    }


async def test_an_unhandled_exception_upstream_leaks_nothing(failing: httpx.AsyncClient) -> None:
    reply = await failing.post("/v1/mirrors/CRASH:mirror", json={})
    assert reply.status_code == 500
    assert "hunter2" not in reply.text
    assert "store.py" not in reply.text
    assert "RuntimeError" not in reply.text
    assert reply.json()["reason"] == "INTERNAL_ERROR"


async def test_a_bare_status_without_error_info_gets_a_fixed_message(
    failing: httpx.AsyncClient,
) -> None:
    reply = await _fail(failing, "UNAVAILABLE", "", "connect to 10.0.0.7:5432 failed")
    assert reply.status_code == 503
    body = reply.json()
    assert "10.0.0.7" not in reply.text
    assert body["reason"] == "DEPENDENCY_UNAVAILABLE"
    assert body["message"] == "the service is unavailable; retry later"


async def test_a_slow_upstream_is_cut_at_the_class_budget_with_504(
    failing: httpx.AsyncClient, failing_echo: FailingEcho
) -> None:
    seen = len(failing_echo.slow_deadlines)
    reply = await failing.post("/v1/mirrors/SLOW:mirror", json={})
    assert reply.status_code == 504
    assert reply.json()["code"] == "DEADLINE_EXCEEDED"
    # The upstream (which would take 5 s) was called with CATALOG's budget on this edge, 0.5 s,
    # as its deadline: the 504 is that deadline passing, not a client or server timeout.
    (remaining,) = failing_echo.slow_deadlines[seen:]
    assert remaining is not None and 0 < remaining <= 0.5


async def test_a_dead_upstream_is_503_without_its_address(
    failing: httpx.AsyncClient, tokens: TokenMinter, unused_port: int
) -> None:
    player = f"player-{uuid.uuid4().hex[:8]}"
    reply = await failing.get(
        f"/v1/players/{player}/accounts/EUR/balance", headers=tokens.bearer(player)
    )
    assert reply.status_code == 503, reply.text
    assert reply.json()["reason"] == "DEPENDENCY_UNAVAILABLE"
    assert str(unused_port) not in reply.text
    assert "127.0.0.1" not in reply.text


async def test_a_full_listener_refuses_at_once_and_the_others_keep_serving(
    failing_edge: EdgeProcess, failing: httpx.AsyncClient
) -> None:
    # The public listener of this edge takes 4 requests at once; 8 slow ones arrive (each
    # held to CATALOG's 0.5 s budget): 4 are served, 4 refused at once.
    slow = [asyncio.create_task(failing.post("/v1/mirrors/SLOW:mirror", json={})) for _ in range(8)]
    done, _ = await asyncio.wait(slow, return_when=asyncio.FIRST_COMPLETED)
    first = next(iter(done)).result()
    assert first.status_code == 503
    assert first.json()["reason"] == "OVERLOADED"
    assert first.headers["retry-after"] == "1"
    # Meanwhile the other listeners answer.
    async with httpx.AsyncClient(timeout=10) as other:
        webhooks = await other.get(f"{failing_edge.url('webhooks')}/openapi.json")
        assert webhooks.status_code == 200
        admin = await other.get(f"{failing_edge.url('admin')}/livez")
        assert admin.status_code == 200
    assert not all(t.done() for t in slow), "the slow requests ended before the check"
    statuses = sorted(r.status_code for r in await asyncio.gather(*slow))
    assert statuses == [503] * 4 + [504] * 4
    # Capacity returns once the slow requests are done.
    assert (await failing.get("/v1/mirrors/INVALID_ARGUMENT")).status_code == 400


async def test_clients_withholding_their_bodies_get_408_and_give_their_slots_back(
    failing_edge: EdgeProcess, failing: httpx.AsyncClient
) -> None:
    # As many clients as the listener has slots (4) announce a body and send none or only
    # part of it. Each is cut at its class's deadline budget (CATALOG: 0.5 s on this edge) with 408
    # and the connection closed, instead of holding its slot for as long as it stays open.
    head = (
        "POST /v1/mirrors/m:mirror HTTP/1.1\r\nHost: edge\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    )
    connections = [
        await asyncio.open_connection("127.0.0.1", failing_edge.ports["public"]) for _ in range(4)
    ]
    try:
        started = time.monotonic()
        for i, (_, writer) in enumerate(connections):
            writer.write(head.encode() + (b'{"title": ' if i % 2 else b""))
            await writer.drain()
        # Each answer ends with the server closing the connection (reads to EOF).
        answers = await asyncio.wait_for(
            asyncio.gather(*(reader.read() for reader, _ in connections)), timeout=5
        )
        elapsed = time.monotonic() - started
    finally:
        for _, writer in connections:
            writer.close()
    assert elapsed < 3.0
    for answer in answers:
        head_part, _, body = answer.partition(b"\r\n\r\n")
        status_line, *header_lines = head_part.decode().split("\r\n")
        assert status_line.startswith("HTTP/1.1 408"), answer
        headers = {k.lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
        assert headers["connection"] == "close"
        assert headers["content-type"] == "application/json"
        error = json.loads(body)
        assert (error["code"], error["reason"]) == ("DEADLINE_EXCEEDED", "BODY_TIMEOUT")
        assert error["requestId"] == headers["x-request-id"]
    # The slots are free again: a request that sends its body is served.
    assert (await failing.get("/v1/mirrors/INVALID_ARGUMENT")).status_code == 400
