"""The back office through the edge's admin listener: operators authenticate with their own
short-lived tokens (the operator SSO's keys, issuer and audience, never a player's), each
spends their own ADMIN budget, the back office can cut an operator off before their tokens
expire (and with Redis unreachable nothing is let through), and the services learn which
operator called from the edge alone. Real HTTP through a running edge to the real wallet; the
services' side of the rule over real mTLS gRPC."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import httpx
import pytest
from redis.asyncio import Redis

from casino.common.v1.money_pb2 import Money
from casino.wallet.v1 import wallet_pb2 as w
from casino.wallet.v1 import wallet_pb2_grpc
from edge.operators import revocation_key
from edge.process import EdgeProcess
from services.runtime.call import OPERATOR_METADATA, OPERATOR_ROLES_METADATA, PLAYER_METADATA
from services.runtime.client import secure_channel
from services.runtime.process import ServiceProcess
from services.runtime.status import error_info
from tests.conftest import ROOT, Pki
from tests.edge.conftest import (
    BACK_OFFICE,
    REDIS_URL,
    EdgeKit,
    OperatorMinter,
    TokenMinter,
)
from tests.support.tcp_proxy import TcpProxy

RECONCILE = "/v1/admin/wallet:reconcile"


def _adjust_path(player: str) -> str:
    return f"/v1/admin/players/{player}/adjustments"


@pytest.fixture
async def admin(edge: EdgeProcess) -> AsyncIterator[httpx.AsyncClient]:
    """A back-office client: its requests come through the load balancer (loopback, trusted)
    from a back-office network."""
    async with httpx.AsyncClient(
        base_url=edge.url("admin"), headers=BACK_OFFICE, timeout=10
    ) as client:
        yield client


@pytest.fixture
async def wallet_as(edge_services: dict[str, ServiceProcess], pki: Pki) -> AsyncIterator[Any]:
    """Wallet stubs speaking as a given service identity, over the platform's mTLS."""
    channels: list[grpc.aio.Channel] = []

    def stub(identity: str) -> wallet_pb2_grpc.WalletServiceStub:
        channel = secure_channel(
            f"127.0.0.1:{edge_services['wallet'].ports['port']}",
            pki.tls(identity),
            "wallet",
            default_timeout=10,
        )
        channels.append(channel)
        return wallet_pb2_grpc.WalletServiceStub(channel)

    yield stub
    for channel in channels:
        await channel.close()


async def _account(wallet_as: Any) -> str:
    player = f"player-{uuid.uuid4().hex[:12]}"
    await wallet_as("identity").OpenAccount(
        w.OpenAccountRequest(player_id=player, currency_code="EUR")
    )
    return player


def _adjustment(player: str, **fields: Any) -> dict[str, Any]:
    return {
        "requestId": f"adj-{uuid.uuid4().hex}",
        "amount": {"amountMinor": "500", "currencyCode": "EUR"},
        "reason": "goodwill credit after a disputed round",
        **fields,
    }


async def _refusal(call: Any) -> tuple[grpc.StatusCode, str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call
    info = error_info(failure.value)
    assert info is not None, failure.value
    return failure.value.code(), info.reason, failure.value.details() or ""


async def test_an_operator_reconciles_through_the_admin_listener(
    admin: httpx.AsyncClient, operators: OperatorMinter, wallet_as: Any
) -> None:
    player = await _account(wallet_as)
    reply = await admin.post(
        RECONCILE,
        json={"playerId": player, "currencyCode": "EUR"},
        headers=operators.bearer("ops.alice", ("finance",)),
    )
    assert reply.status_code == 200, reply.text
    report = reply.json()
    assert report["accountsChecked"] == "1"
    assert report["discrepancies"] == []
    # The operator's own ADMIN budget.
    assert reply.headers["RateLimit-Policy"].startswith('"admin"')


async def test_a_players_token_is_refused_on_the_admin_listener(
    admin: httpx.AsyncClient, tokens: TokenMinter
) -> None:
    reply = await admin.post(RECONCILE, json={}, headers=tokens.bearer("player-1"))
    assert reply.status_code == 401, reply.text
    assert reply.json()["reason"] == "OPERATOR_TOKEN_REQUIRED"


async def test_no_token_or_an_unusable_operator_token_is_401(
    admin: httpx.AsyncClient, operators: OperatorMinter
) -> None:
    missing = await admin.post(RECONCILE, json={})
    assert missing.status_code == 401
    assert missing.json()["reason"] == "TOKEN_MISSING"

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    expired = operators.token("ops.alice", ttl=-120)
    rogue = operators.token("ops.alice", kid="sso-unknown")
    header, _, signature = operators.token("ops.alice").split(".")
    elevated = operators.token("ops.alice", ("finance", "wallet-adjuster")).split(".")[1]
    day_long = operators.token("ops.alice", ttl=86_400)  # the SSO may not mint these
    for token, reason in (
        (expired, "TOKEN_EXPIRED"),
        (rogue, "UNKNOWN_KEY_ID"),
        (f"{header}.{elevated}.{signature}", "TOKEN_INVALID"),
        (day_long, "TOKEN_INVALID"),
    ):
        reply = await admin.post(RECONCILE, json={}, headers=bearer(token))
        assert reply.status_code == 401, (reason, reply.text)
        assert reply.json()["reason"] == reason


async def test_an_operator_token_opens_nothing_on_the_public_listener(
    http: httpx.AsyncClient, operators: OperatorMinter
) -> None:
    path = "/v1/players/ops.alice/accounts/EUR/balance"
    reply = await http.get(path, headers=operators.bearer("ops.alice"))
    assert reply.status_code == 401
    assert reply.json()["reason"] == "UNKNOWN_KEY_ID"  # not a key of identity's


async def test_an_adjustment_records_the_operator_of_the_token(
    admin: httpx.AsyncClient, operators: OperatorMinter, wallet_as: Any
) -> None:
    player = await _account(wallet_as)
    adjuster = operators.bearer("ops.bob", ("wallet-adjuster",))
    # Left out, the operator is the token's.
    reply = await admin.post(_adjust_path(player), json=_adjustment(player), headers=adjuster)
    assert reply.status_code == 200, reply.text
    posting = reply.json()["posting"]
    assert posting["transaction"]["operatorId"] == "ops.bob"
    assert posting["balance"]["availableMinor"] == "500"
    # Naming themselves is the same; naming someone else is refused before any call.
    same = await admin.post(
        _adjust_path(player), json=_adjustment(player, operatorId="ops.bob"), headers=adjuster
    )
    assert same.status_code == 200, same.text
    other = await admin.post(
        _adjust_path(player), json=_adjustment(player, operatorId="ops.carol"), headers=adjuster
    )
    assert other.status_code == 403, other.text
    assert other.json()["reason"] == "OPERATOR_MISMATCH"
    history = await wallet_as("backoffice").ListTransactions(
        w.ListTransactionsRequest(player_id=player)
    )
    adjustments = [t for t in history.transactions if t.kind == w.TRANSACTION_KIND_ADJUSTMENT]
    assert [t.operator_id for t in adjustments] == ["ops.bob", "ops.bob"]


async def test_an_operation_needing_a_role_refuses_an_operator_without_it(
    admin: httpx.AsyncClient, operators: OperatorMinter, wallet_as: Any
) -> None:
    player = await _account(wallet_as)
    reply = await admin.post(
        _adjust_path(player),
        json=_adjustment(player),
        headers=operators.bearer("ops.dave", ("finance",)),
    )
    assert reply.status_code == 403, reply.text
    body = reply.json()
    assert body["reason"] == "OPERATOR_ROLE_REQUIRED"
    assert body["metadata"]["required_roles"] == "wallet-adjuster"
    balance = await wallet_as("backoffice").GetBalance(
        w.GetBalanceRequest(player_id=player, currency_code="EUR")
    )
    assert balance.balance.posted_minor == 0


# The services' side: the edge may call an ADMIN RPC only naming an operator, and only the
# edge may name one; the back-office service keeps calling directly.


async def test_the_wallet_admits_the_edge_to_admin_rpcs_only_for_an_operator(
    wallet_as: Any,
) -> None:
    player = await _account(wallet_as)
    edge = wallet_as("edge")
    one = w.ReconcileRequest(player_id=player, currency_code="EUR")
    code, reason, details = await _refusal(edge.Reconcile(one))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED")
    assert "operator" in details
    as_alice = ((OPERATOR_METADATA, "ops.alice"), (OPERATOR_ROLES_METADATA, "finance"))
    assert (await edge.Reconcile(one, metadata=as_alice)).accounts_checked == 1
    # An operator on a player's RPC, or a player on an admin RPC (or both at once): refused.
    balance = w.GetBalanceRequest(player_id=player, currency_code="EUR")
    for call in (
        edge.GetBalance(balance, metadata=((PLAYER_METADATA, player), *as_alice)),
        edge.GetBalance(balance, metadata=as_alice),
        edge.Reconcile(one, metadata=((PLAYER_METADATA, player),)),
        edge.Reconcile(one, metadata=((PLAYER_METADATA, player), *as_alice)),
        edge.Reconcile(one, metadata=((OPERATOR_METADATA, "a"), (OPERATOR_METADATA, "b"))),
    ):
        code, reason, _ = await _refusal(call)
        assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED")


async def test_the_wallet_records_only_the_authenticated_operator_from_the_edge(
    wallet_as: Any,
) -> None:
    player = await _account(wallet_as)
    edge = wallet_as("edge")
    as_alice = ((OPERATOR_METADATA, "ops.alice"),)

    def adjustment(operator_id: str) -> w.AdjustBalanceRequest:
        return w.AdjustBalanceRequest(
            request_id=f"adj-{uuid.uuid4().hex}",
            player_id=player,
            amount=Money(amount_minor=100, currency_code="EUR"),
            reason="correction",
            operator_id=operator_id,
        )

    for operator_id in ("ops.mallory", ""):
        refused = edge.AdjustBalance(adjustment(operator_id), metadata=as_alice)
        code, reason, _ = await _refusal(refused)
        assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "OPERATOR_MISMATCH")
    applied = await edge.AdjustBalance(adjustment("ops.alice"), metadata=as_alice)
    assert applied.posting.transaction.operator_id == "ops.alice"


async def test_the_back_office_service_keeps_calling_directly_but_names_no_operator(
    wallet_as: Any,
) -> None:
    player = await _account(wallet_as)
    backoffice = wallet_as("backoffice")
    one = w.ReconcileRequest(player_id=player, currency_code="EUR")
    assert (await backoffice.Reconcile(one)).accounts_checked == 1
    adjusted = await backoffice.AdjustBalance(
        w.AdjustBalanceRequest(
            request_id=f"adj-{uuid.uuid4().hex}",
            player_id=player,
            amount=Money(amount_minor=100, currency_code="EUR"),
            reason="correction",
            operator_id="ops.anyone",  # the back-office service's own word
        )
    )
    assert adjusted.posting.transaction.operator_id == "ops.anyone"
    code, reason, _ = await _refusal(
        backoffice.Reconcile(one, metadata=((OPERATOR_METADATA, "ops.alice"),))
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED")


# Each operator's own budget.

ADMIN_LIMITS = """
[edge.ratelimit.classes.ADMIN]
rate = 0.1
burst = 3
"""


@pytest.fixture(scope="module")
def strict_admin_edge(
    edge_kit: EdgeKit,
    operators: OperatorMinter,
) -> Iterator[EdgeProcess]:
    yield from edge_kit.serve(
        "strict-admin-edge",
        operator_key_dir=operators.key_dir,
        limits=ADMIN_LIMITS,
    )


async def test_each_operator_spends_their_own_admin_budget(
    strict_admin_edge: EdgeProcess, operators: OperatorMinter
) -> None:
    async with httpx.AsyncClient(
        base_url=strict_admin_edge.url("admin"), headers=BACK_OFFICE, timeout=10
    ) as admin:
        # Refused for a role (nothing is called upstream), yet each spends the budget.
        player = f"player-{uuid.uuid4().hex[:12]}"
        eve = operators.bearer("ops.eve", ("finance",))
        answers = [
            (await admin.post(_adjust_path(player), json=_adjustment(player), headers=eve))
            for _ in range(4)
        ]
        assert [a.status_code for a in answers] == [403, 403, 403, 429]
        assert answers[-1].json()["reason"] == "RATE_LIMITED"
        # Another operator behind the same address has a budget of their own.
        frank = operators.bearer("ops.frank", ("finance",))
        other = await admin.post(_adjust_path(player), json=_adjustment(player), headers=frank)
        assert other.status_code == 403
        assert other.json()["reason"] == "OPERATOR_ROLE_REQUIRED"


# Cutting an operator off: the back office's revoked-before second, read with the rate limit.


async def _revoke(edge: EdgeProcess, operator_id: str) -> None:
    """What the back office runs: the development SSO's `revoke`, on the edge's own config."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "scripts" / "operator_token.py"),
        "revoke",
        operator_id,
        "--config",
        str(edge.config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, (out, err)


async def test_a_revoked_operators_token_is_refused_at_once_and_a_later_one_works(
    edge: EdgeProcess, admin: httpx.AsyncClient, operators: OperatorMinter, wallet_as: Any
) -> None:
    player = await _account(wallet_as)
    body = {"playerId": player, "currencyCode": "EUR"}
    operator_id, colleague = f"ops.gone-{uuid.uuid4().hex[:8]}", f"ops.{uuid.uuid4().hex[:8]}"
    held = operators.bearer(operator_id)
    redis = Redis.from_url(REDIS_URL)
    try:
        assert (await admin.post(RECONCILE, json=body, headers=held)).status_code == 200
        await _revoke(edge, operator_id)
        refused = await admin.post(RECONCILE, json=body, headers=held)
        assert refused.status_code == 401, refused.text
        assert refused.json()["reason"] == "TOKEN_REVOKED"
        # Another operator is not touched.
        other = await admin.post(RECONCILE, json=body, headers=operators.bearer(colleague))
        assert other.status_code == 200, other.text
        # A token the SSO mints once the revocation's second has begun is served.
        cutoff = int(await redis.get(revocation_key(operator_id)) or 0)
        assert cutoff > 0
        await asyncio.sleep(max(0.0, cutoff - time.time()))
        later = await admin.post(RECONCILE, json=body, headers=operators.bearer(operator_id))
        assert later.status_code == 200, later.text
    finally:
        await redis.delete(revocation_key(operator_id))
        await redis.aclose()


@pytest.fixture(scope="module")
def admin_edge_behind_cuttable_redis(
    edge_kit: EdgeKit,
    operators: OperatorMinter,
    redis_proxy: TcpProxy,
) -> Iterator[EdgeProcess]:
    yield from edge_kit.serve(
        "cuttable-admin-edge",
        operator_key_dir=operators.key_dir,
        redis_url=f"redis://127.0.0.1:{redis_proxy.port}/0",
    )


async def test_with_redis_down_admin_requests_fail_closed(
    admin_edge_behind_cuttable_redis: EdgeProcess,
    operators: OperatorMinter,
    wallet_as: Any,
    redis_proxy: TcpProxy,
) -> None:
    # Whether the operator was cut off cannot be known: refused, as players' money requests
    # are, not waved through under the local rate limiter.
    player = await _account(wallet_as)
    body = {"playerId": player, "currencyCode": "EUR"}
    async with httpx.AsyncClient(
        base_url=admin_edge_behind_cuttable_redis.url("admin"), headers=BACK_OFFICE, timeout=10
    ) as admin:
        assert (
            await admin.post(RECONCILE, json=body, headers=operators.bearer("ops.alice"))
        ).status_code == 200
        redis_proxy.cut()
        try:
            refused = await admin.post(RECONCILE, json=body, headers=operators.bearer("ops.alice"))
            assert refused.status_code == 503, refused.text
            assert refused.json()["reason"] == "DEPENDENCY_UNAVAILABLE"
        finally:
            redis_proxy.start()
        # Redis back: served again once the breaker lets a call through.
        deadline = time.monotonic() + 10
        while True:
            reply = await admin.post(RECONCILE, json=body, headers=operators.bearer("ops.alice"))
            if reply.status_code == 200:
                break
            assert reply.status_code == 503 and time.monotonic() < deadline, reply.text
            await asyncio.sleep(0.2)
