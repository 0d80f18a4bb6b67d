"""Routing and transcoding through a running edge to real services: a route per HttpRule
shape round-trips in proto3 JSON, wrong methods and unknown paths, request ids, deadline
budgets, malformed inputs refused before any call, the listeners' rules, an authenticated
wallet read, and readiness."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from casino.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from edge.process import EdgeProcess
from services.runtime.client import secure_channel
from services.runtime.process import ServiceProcess
from tests.conftest import ROOT, Pki
from tests.edge.conftest import TokenMinter, edge_config


async def test_body_star_round_trips_in_lower_camel_case(http: httpx.AsyncClient) -> None:
    request_id = f"req-{uuid.uuid4().hex}"
    reply = await http.post("/v1/echoes", json={"requestId": request_id, "message": "hello"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["record"]["requestId"] == request_id
    assert body["record"]["message"] == "hello"
    assert body["record"]["name"].startswith("echoes/")
    # Timestamp as RFC 3339, the caller is the edge's certificate identity.
    assert body["record"]["createTime"].endswith("Z")
    assert body["caller"] == "edge"
    assert body["replayed"] is False
    # The original proto names are accepted on input too.
    again = await http.post("/v1/echoes", json={"request_id": request_id, "message": "hello"})
    assert again.status_code == 200
    assert again.json()["replayed"] is True


async def test_query_parameters_and_an_additional_binding_with_body_star(
    http: httpx.AsyncClient,
) -> None:
    by_query = await http.get("/v1/ping", params={"payload": "aGVsbG8="})
    assert by_query.status_code == 200, by_query.text
    assert by_query.json() == {"payload": "aGVsbG8="}
    by_body = await http.post("/v1/ping", json={"payload": "aGVsbG8="})
    assert by_body.status_code == 200, by_body.text
    assert by_body.json() == {"payload": "aGVsbG8="}


async def test_multi_segment_variable_custom_verb_and_body_field(http: httpx.AsyncClient) -> None:
    reply = await http.post(
        "/v1/mirrors/m-1:mirror", json={"title": "t", "text": "body field", "priority": 3}
    )
    assert reply.status_code == 200, reply.text
    mirrored = reply.json()["request"]
    assert mirrored["name"] == "mirrors/m-1"
    assert mirrored["note"] == {"title": "t", "text": "body field", "priority": 3}


async def test_nested_repeated_and_typed_query_parameters(http: httpx.AsyncClient) -> None:
    reply = await http.get(
        "/v1/mirrors/m-2",
        params=[
            ("note.title", "nested"),
            ("tags", "a"),
            ("tags", "b"),
            # Beyond 2**53: survives only as a string, as proto3 JSON writes int64.
            ("amountMinor", "9007199254740993"),
            ("kind", "MIRROR_KIND_FANCY"),
            ("flag", "true"),
            ("at", "2024-02-29T12:00:00Z"),
            ("counts", "1"),
            ("counts", "2"),
        ],
    )
    assert reply.status_code == 200, reply.text
    mirrored = reply.json()["request"]
    assert mirrored["name"] == "mirrors/m-2"
    assert mirrored["note"]["title"] == "nested"
    assert mirrored["tags"] == ["a", "b"]
    assert mirrored["amountMinor"] == "9007199254740993"
    assert mirrored["kind"] == "MIRROR_KIND_FANCY"
    assert mirrored["flag"] is True
    assert mirrored["at"] == "2024-02-29T12:00:00Z"
    assert mirrored["counts"] == [1, 2]
    snake = await http.get("/v1/mirrors/m-2", params={"amount_minor": "5", "kind": "1"})
    assert snake.status_code == 200, snake.text
    assert snake.json()["request"]["amountMinor"] == "5"
    assert snake.json()["request"]["kind"] == "MIRROR_KIND_PLAIN"


async def test_nested_path_variable_wins_over_the_body(http: httpx.AsyncClient) -> None:
    reply = await http.put(
        "/v1/mirrors/from-path/note",
        json={"name": "mirrors/x", "note": {"title": "from-body", "text": "kept"}},
    )
    assert reply.status_code == 200, reply.text
    mirrored = reply.json()["request"]
    assert mirrored["note"] == {"title": "from-path", "text": "kept", "priority": 0}
    assert mirrored["name"] == "mirrors/x"


async def test_get_with_paging_query(http: httpx.AsyncClient) -> None:
    for i in range(2):
        await http.post("/v1/echoes", json={"requestId": uuid.uuid4().hex, "message": f"m{i}"})
    first = await http.get("/v1/echoes", params={"pageSize": 1, "caller": "edge"})
    assert first.status_code == 200, first.text
    assert len(first.json()["echoes"]) == 1
    token = first.json()["nextPageToken"]
    assert token
    second = await http.get(
        "/v1/echoes", params={"pageSize": 1, "caller": "edge", "pageToken": token}
    )
    assert second.status_code == 200
    assert second.json()["echoes"][0]["name"] != first.json()["echoes"][0]["name"]


async def test_wrong_method_is_405_with_allow_and_unknown_path_is_404(
    http: httpx.AsyncClient,
) -> None:
    wrong = await http.delete("/v1/ping")
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "GET, HEAD, POST"
    assert wrong.json()["reason"] == "METHOD_NOT_ALLOWED"
    unknown = await http.get("/v1/nothing-here")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == "application/json"
    assert unknown.json()["reason"] == "ROUTE_NOT_FOUND"


async def test_head_is_served_wherever_get_is_without_a_body(http: httpx.AsyncClient) -> None:
    get, head = await http.get("/v1/ping"), await http.head("/v1/ping")
    assert (get.status_code, head.status_code) == (200, 200)
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"] == "application/json"
    assert head.headers["content-length"] == get.headers["content-length"]


async def test_answers_are_never_cached_but_the_contract_document_is(
    http: httpx.AsyncClient,
) -> None:
    served, refused = await http.get("/v1/ping"), await http.get("/v1/nothing-here")
    assert served.headers["cache-control"] == "no-store"
    assert refused.headers["cache-control"] == "no-store"
    assert (await http.get("/openapi.json")).headers["cache-control"] == "public, max-age=300"


async def test_request_id_is_kept_or_minted_echoed_and_sent_upstream(
    http: httpx.AsyncClient,
) -> None:
    mine = f"client-{uuid.uuid4().hex}"
    reply = await http.get("/v1/mirrors/m", headers={"X-Request-Id": mine})
    assert reply.headers["x-request-id"] == mine
    assert reply.json()["requestId"] == mine
    invalid = await http.get("/v1/mirrors/m", headers={"X-Request-Id": "bad id\twith junk"})
    minted = invalid.headers["x-request-id"]
    assert minted != "bad id\twith junk"
    assert len(minted) == 32
    assert invalid.json()["requestId"] == minted
    error = await http.get("/v1/nothing", headers={"X-Request-Id": mine})
    assert error.json()["requestId"] == mine


async def test_the_class_deadline_budget_is_the_calls_timeout(http: httpx.AsyncClient) -> None:
    reply = await http.get("/v1/mirrors/m")
    remaining = int(reply.json()["deadlineRemainingMs"])
    # CATALOG's budget is 1 s in the test config (the upstream's default would be 5 s); the
    # service sees what is left of it, give or take grpc-timeout's rounding up.
    assert 0 < remaining <= 1050


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "field_or_text"),
    [
        ("POST", "/v1/echoes", {"content": b'{"requestId": "x", '}, "not valid JSON"),
        ("POST", "/v1/echoes", {"json": {"requestId": "x", "mesage": "typo"}}, "mesage"),
        ("POST", "/v1/echoes", {"json": {"requestId": "x", "delayMs": "soon"}}, "delayMs"),
        ("POST", "/v1/echoes", {"json": ["not", "an", "object"]}, "JSON object"),
        ("POST", "/v1/echoes", {"content": b"\xff\xfe"}, "not valid JSON"),
        # Deeper than json.loads can recurse: a 400, not the parser's RecursionError as a 500.
        ("POST", "/v1/echoes", {"content": b"[" * 3000}, "nested too deeply"),
        ("GET", "/v1/mirrors/m", {"params": {"flag": "yes"}}, "flag"),
        ("GET", "/v1/mirrors/m", {"params": {"nope": "1"}}, "nope"),
        ("GET", "/v1/mirrors/m", {"params": {"amountMinor": "12abc"}}, "amount"),
        ("GET", "/v1/mirrors/m", {"params": {"kind": "MIRROR_KIND_NOPE"}}, "kind"),
        ("GET", "/v1/mirrors/m", {"params": {"name": "mirrors/other"}}, "bound"),
        ("POST", "/v1/ping?payload=aGk=", {"json": {}}, "body"),
        ("GET", "/v1/ping", {"content": b'{"payload": "aGk="}'}, "no request body"),
    ],
)
async def test_malformed_input_is_400_before_any_call(
    http: httpx.AsyncClient,
    edge: EdgeProcess,
    edge_services: dict[str, ServiceProcess],
    method: str,
    path: str,
    kwargs: dict[str, Any],
    field_or_text: str,
) -> None:
    request_id = f"bad-{uuid.uuid4().hex}"
    reply = await http.request(method, path, headers={"X-Request-Id": request_id}, **kwargs)
    assert reply.status_code == 400, reply.text
    body = reply.json()
    assert body["code"] == "INVALID_ARGUMENT"
    assert field_or_text.lower() in (body["message"] + body["metadata"].get("field", "")).lower()
    assert body["requestId"] == request_id
    assert "Traceback" not in reply.text
    assert not _reached_echo(edge, edge_services["echo"], request_id)


async def test_a_call_that_does_reach_the_service_is_seen_there(
    http: httpx.AsyncClient, edge: EdgeProcess, edge_services: dict[str, ServiceProcess]
) -> None:
    """The control for the test above: the trace-id check does see calls that arrive."""
    request_id = f"good-{uuid.uuid4().hex}"
    reply = await http.get("/v1/mirrors/m", headers={"X-Request-Id": request_id})
    assert reply.status_code == 200
    deadline = time.monotonic() + 5
    while not _reached_echo(edge, edge_services["echo"], request_id):
        assert time.monotonic() < deadline, "the call never showed in the echo log"
        await asyncio.sleep(0.05)


def _reached_echo(edge: EdgeProcess, echo: ServiceProcess, request_id: str) -> bool:
    """Whether the echo service logged an RPC in the trace the edge started for request_id."""
    deadline = time.monotonic() + 5
    while True:  # the access-log line is written just after the response is sent
        lines = [line for line in edge.log_lines() if line.get("request_id") == request_id]
        if lines:
            break
        assert time.monotonic() < deadline, f"no edge log line for {request_id}"
        time.sleep(0.02)
    trace_id = lines[-1]["trace_id"]
    return any(
        line.get("trace_id") == trace_id and line.get("event") == "rpc finished"
        for line in echo.log_lines()
    )


async def test_oversized_bodies_are_400_declared_or_streamed(http: httpx.AsyncClient) -> None:
    big = {"requestId": "r", "message": "x" * 5000}  # the test edge allows 4096 bytes
    declared = await http.post("/v1/echoes", json=big)
    assert declared.status_code == 400
    assert declared.json()["reason"] == "REQUEST_TOO_LARGE"

    async def chunks() -> Any:
        for _ in range(10):
            yield b" " * 1000

    streamed = await http.post("/v1/echoes", content=chunks())
    assert streamed.status_code == 400
    assert streamed.json()["reason"] == "REQUEST_TOO_LARGE"


async def test_authenticated_wallet_read_through_the_edge(
    http: httpx.AsyncClient,
    tokens: TokenMinter,
    edge_services: dict[str, ServiceProcess],
    pki: Pki,
) -> None:
    player_id = f"player-{uuid.uuid4().hex[:12]}"
    async with secure_channel(
        f"127.0.0.1:{edge_services['wallet'].ports['port']}",
        pki.tls("identity"),
        "wallet",
        default_timeout=10,
    ) as channel:
        await wallet_pb2_grpc.WalletServiceStub(channel).OpenAccount(
            wallet_pb2.OpenAccountRequest(player_id=player_id, currency_code="EUR")
        )
    path = f"/v1/players/{player_id}/accounts/EUR/balance"
    anonymous = await http.get(path)
    assert anonymous.status_code == 401
    assert anonymous.json()["reason"] == "TOKEN_MISSING"
    forged = await http.get(path, headers={"Authorization": "Bearer not.a.token"})
    assert forged.status_code == 401
    reply = await http.get(path, headers=tokens.bearer(player_id))
    assert reply.status_code == 200, reply.text
    balance = reply.json()["balance"]
    assert balance["playerId"] == player_id
    assert balance["currencyCode"] == "EUR"
    assert balance["availableMinor"] == "0"  # int64 as a string
    assert "ratelimit" in {h.lower() for h in reply.headers}
    # The edge sends the token's player in x-casino-player-id; the wallet refuses to show
    # one player's balance to another.
    other = await http.get(path, headers=tokens.bearer(f"player-{uuid.uuid4().hex[:12]}"))
    assert other.status_code == 403, other.text
    assert other.json()["reason"] == "PLAYER_MISMATCH"


async def test_admin_listener_refuses_sources_outside_its_networks(edge: EdgeProcess) -> None:
    async with httpx.AsyncClient(base_url=edge.url("admin"), timeout=10) as admin:
        # Loopback is not an allowed network: 403 before routing (even an unknown path).
        for path in ("/v1/admin/wallet:reconcile", "/v1/unknown", "/openapi.json"):
            refused = await admin.post(path, json={})
            assert refused.status_code == 403, path
            assert refused.json()["reason"] == "SOURCE_NOT_ALLOWED"
        # The forwarded client is believed only from a trusted proxy (here: loopback), and
        # only if that client is in an allowed network.
        outsider = await admin.post(
            "/v1/admin/wallet:reconcile", json={}, headers={"X-Forwarded-For": "192.168.1.9"}
        )
        assert outsider.status_code == 403
        spoofed = await admin.post(
            "/v1/admin/wallet:reconcile",
            json={},
            headers={"X-Forwarded-For": "10.1.2.3, 192.168.1.9"},
        )
        assert spoofed.status_code == 403
        inside = await admin.post(
            "/v1/admin/wallet:reconcile", json={}, headers={"X-Forwarded-For": "10.1.2.3"}
        )
        # Past the network rule: routed, and refused only for want of a token.
        assert inside.status_code == 401, inside.text
        # Probes are answered to anyone: they reveal nothing.
        assert (await admin.get("/livez")).status_code == 200


def test_the_edge_refuses_to_start_with_an_admin_listener_open_to_every_source(
    tmp_path: Path, pki: Pki, tokens: TokenMinter, edge_services: dict[str, ServiceProcess]
) -> None:
    config = edge_config(
        tmp_path / "open-admin.toml",
        pki,
        tokens.key_dir,
        upstreams={"echo": (edge_services["echo"].ports["port"], "echo")},
        services={"casino.echo.v1.EchoService": "echo"},
        admin_networks=(),
    )
    process = EdgeProcess(config, tmp_path / "open-admin.log", cwd=ROOT)
    process.start()
    try:
        with pytest.raises(RuntimeError, match="edge exited"):
            process.wait_started()
    finally:
        process.terminate()
    assert "admin.allowed_networks" in process.log_file.read_text()


async def test_each_listener_serves_only_its_classes(edge: EdgeProcess) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        public_admin = await client.post(f"{edge.url()}/v1/admin/wallet:reconcile", json={})
        assert public_admin.status_code == 404
        webhook_ping = await client.get(f"{edge.url('webhooks')}/v1/ping")
        assert webhook_ping.status_code == 404
        spec = (await client.get(f"{edge.url()}/openapi.json")).json()
        assert "/v1/admin/wallet:reconcile" not in spec["paths"]


async def test_livez_and_readyz(edge: EdgeProcess, failing_edge: EdgeProcess) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        for listener in ("public", "webhooks", "admin"):
            assert (await client.get(f"{edge.url(listener)}/livez")).status_code == 200
            assert (await client.get(f"{edge.url(listener)}/readyz")).status_code == 200
        # The failing edge's wallet upstream is not running: alive, not ready.
        assert (await client.get(f"{failing_edge.url()}/livez")).status_code == 200
        not_ready = await client.get(f"{failing_edge.url()}/readyz")
        assert not_ready.status_code == 503
