"""A player's sessions end to end, as an app meets them: real HTTP through a running edge to a
running identity (with the real compliance, its register simulator, and the wallet behind
it). Register, log in, read the balance with the access token, refresh (a reused refresh
token revokes the family, and the edge refuses its access tokens at once), log out (every
session ends, at once at the edge), and the access tokens the edge must refuse: expired,
tampered, signed under a key id it does not hold. One stack for the module."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.process import EdgeProcess
from services.runtime.process import ServiceProcess
from tests.compliance.conftest import EXCLUDED_ON_REGISTER, compliance_extra, run_simulator
from tests.conftest import Launcher, Pki
from tests.edge.conftest import HIGH_LIMITS, edge_config, start_edge
from tests.identity.conftest import PASSWORD, identity_extra, unique_email
from tests.support.amqp import delete_queues_now

IDENTITY_KID = "test-1"  # identity_extra's jwt_key_id
# A player signs up, logs in and refreshes a few times a test: AUTH is not what is tested.
LIMITS = HIGH_LIMITS + "[edge.ratelimit.classes.AUTH]\nrate = 100000\nburst = 100000\n"


@dataclass
class Stack:
    edge: EdgeProcess
    jwt_dir: Path  # identity's <kid>.key / <kid>.pub

    def identity_key(self) -> Ed25519PrivateKey:
        key = serialization.load_pem_private_key(
            (self.jwt_dir / f"{IDENTITY_KID}.key").read_bytes(), password=None
        )
        assert isinstance(key, Ed25519PrivateKey)
        return key


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    pki: Pki,
    test_database: str,
    edge_services: dict[str, ServiceProcess],
) -> Iterator[Stack]:
    """The register simulator, compliance and identity (on the edge tests' wallet), and an
    edge fronting identity and the wallet that places loopback clients in GB."""
    folder = tmp_path_factory.mktemp("identity-http")
    launcher = Launcher(folder, pki, [])
    secrets = folder / "secrets"
    queue = f"test.identity.sessions.{uuid.uuid4().hex[:8]}"
    wallet = edge_services["wallet"]
    try:
        with run_simulator(folder, [EXCLUDED_ON_REGISTER], "key-" + uuid.uuid4().hex) as register:
            compliance = launcher("compliance", extra=compliance_extra(register, folder))
            identity = launcher(
                "identity",
                extra=identity_extra(
                    secrets,
                    compliance_port=compliance.ports["port"],
                    wallet_port=wallet.ports["port"],
                    queue=queue,
                ),
            )
            networks = folder / "networks.csv"
            networks.write_text("127.0.0.0/8,GB\n")
            config = edge_config(
                folder / "edge.toml",
                pki,
                secrets / "jwt",  # identity made its key pair there when it started
                upstreams={
                    "identity": (identity.ports["port"], "identity"),
                    "wallet": (wallet.ports["port"], "wallet"),
                },
                services={
                    "casino.identity.v1.IdentityService": "identity",
                    "casino.wallet.v1.WalletService": "wallet",
                },
                limits=LIMITS,
                extra=f'[edge.geo]\nnetworks_file = "{networks}"\n',
            )
            edge = start_edge(folder, config)
            try:
                yield Stack(edge, secrets / "jwt")
            finally:
                edge.terminate()
    finally:
        for process in reversed(launcher.started):
            process.terminate()
        delete_queues_now(queue, f"{queue}.dead")


@pytest.fixture
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.edge.url(), timeout=15) as client:
        yield client


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def register(http: httpx.AsyncClient) -> tuple[str, str]:
    """A new player over HTTP; (player_id, email)."""
    email = unique_email()
    reply = await http.post(
        "/v1/players:register",
        json={
            "requestId": f"reg-{uuid.uuid4().hex[:12]}",
            "email": email,
            "password": PASSWORD,
            "givenName": "Grace",
            "familyName": f"Tester{uuid.uuid4().hex[:6]}",
            "birthDate": {"year": 1985, "month": 6, "day": 15},
            "address": {
                "line1": "1 Test Street",
                "city": "London",
                "postcode": "E1 6AN",
                "countryCode": "GB",
            },
        },
    )
    assert reply.status_code == 200, reply.text
    player = reply.json()["player"]
    assert player["currencyCode"] == "GBP"
    return player["playerId"], email


async def login(http: httpx.AsyncClient, email: str) -> dict[str, Any]:
    reply = await http.post("/v1/sessions:login", json={"email": email, "password": PASSWORD})
    assert reply.status_code == 200, reply.text
    session: dict[str, Any] = reply.json()["session"]
    assert session["tokenType"] == "Bearer"
    return session


async def refresh(http: httpx.AsyncClient, refresh_token: str) -> httpx.Response:
    return await http.post("/v1/sessions:refresh", json={"refreshToken": refresh_token})


async def balance(http: httpx.AsyncClient, player_id: str, access_token: str) -> httpx.Response:
    return await http.get(
        f"/v1/players/{player_id}/accounts/GBP/balance", headers=bearer(access_token)
    )


def refused(reply: httpx.Response, status: int, reason: str) -> None:
    assert reply.status_code == status, reply.text
    assert reply.json()["reason"] == reason, reply.text


async def test_a_player_registers_logs_in_and_reads_their_balance(
    http: httpx.AsyncClient,
) -> None:
    player_id, email = await register(http)
    session = await login(http, email)
    assert session["playerId"] == player_id
    reply = await balance(http, player_id, session["accessToken"])
    assert reply.status_code == 200, reply.text
    assert reply.json()["balance"]["availableMinor"] == "0"
    profile = await http.get(
        f"/v1/players/{player_id}/profile", headers=bearer(session["accessToken"])
    )
    assert profile.status_code == 200, profile.text
    assert profile.json()["player"]["email"] == email
    # Without the token, or for another player, the balance is not shown.
    refused(await http.get(f"/v1/players/{player_id}/accounts/GBP/balance"), 401, "TOKEN_MISSING")
    other_id, _ = await register(http)
    refused(await balance(http, other_id, session["accessToken"]), 403, "PLAYER_MISMATCH")
    # A wrong password is the one uniform refusal.
    wrong = await http.post("/v1/sessions:login", json={"email": email, "password": "x" * 16})
    refused(wrong, 401, "INVALID_CREDENTIALS")


async def test_a_reused_refresh_token_revokes_the_family_at_the_edge_at_once(
    http: httpx.AsyncClient,
) -> None:
    player_id, email = await register(http)
    first = await login(http, email)
    rotated = await refresh(http, first["refreshToken"])
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()["session"]
    assert second["sessionId"] == first["sessionId"]
    assert second["refreshToken"] != first["refreshToken"]
    assert (await balance(http, player_id, second["accessToken"])).status_code == 200

    # The spent token presented again (a thief's copy, or the player's): refused, and the
    # whole family with it. The edge refuses the family's live access token on the very
    # next request, within the same second, not at its expiry.
    refused(await refresh(http, first["refreshToken"]), 401, "REFRESH_TOKEN_REUSED")
    refused(await balance(http, player_id, second["accessToken"]), 401, "TOKEN_REVOKED")
    refused(await refresh(http, second["refreshToken"]), 401, "REFRESH_TOKEN_INVALID")
    # Logging in again opens a new family whose token the edge accepts.
    again = await login(http, email)
    assert (await balance(http, player_id, again["accessToken"])).status_code == 200


async def test_logout_ends_every_session_and_the_edge_refuses_their_tokens_at_once(
    http: httpx.AsyncClient,
) -> None:
    player_id, email = await register(http)
    phone, laptop = await login(http, email), await login(http, email)
    for session in (phone, laptop):
        assert (await balance(http, player_id, session["accessToken"])).status_code == 200

    out = await http.post("/v1/sessions:logout", json={}, headers=bearer(phone["accessToken"]))
    assert out.status_code == 200, out.text
    assert out.json()["revokedSessions"] == 2
    for session in (phone, laptop):
        refused(await balance(http, player_id, session["accessToken"]), 401, "TOKEN_REVOKED")
        refused(await refresh(http, session["refreshToken"]), 401, "REFRESH_TOKEN_INVALID")


async def test_expired_tampered_and_unknown_key_tokens_are_refused(
    http: httpx.AsyncClient, stack: Stack
) -> None:
    player_id, email = await register(http)
    session = await login(http, email)
    token = session["accessToken"]
    claims = jwt.decode(token, options={"verify_signature": False})
    now = int(time.time())

    # Signed by identity's own key, but past its expiry (and the edge's clock leeway).
    expired = jwt.encode(
        {**claims, "iat": now - 1000, "nbf": now - 1000, "exp": now - 100},
        stack.identity_key(),
        algorithm="EdDSA",
        headers={"kid": IDENTITY_KID},
    )
    refused(await balance(http, player_id, expired), 401, "TOKEN_EXPIRED")

    # Identity's token with another player's id in it, the signature left as it was.
    other_id, _ = await register(http)
    header, payload, signature = token.split(".")
    forged_claims = _b64(json.dumps({**claims, "sub": other_id}).encode())
    refused(
        await balance(http, other_id, f"{header}.{forged_claims}.{signature}"),
        401,
        "TOKEN_INVALID",
    )
    # Its own claims with a signature altered.
    flipped = signature[:-4] + ("AAAA" if not signature.endswith("AAAA") else "BBBB")
    refused(await balance(http, player_id, f"{header}.{payload}.{flipped}"), 401, "TOKEN_INVALID")

    # Identity's claims under a key id the edge does not hold (never issued, or retired).
    rogue = jwt.encode(
        claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": "test-9"}
    )
    refused(await balance(http, player_id, rogue), 401, "UNKNOWN_KEY_ID")

    # The genuine token still works: nothing above touched the player's sessions.
    assert (await balance(http, player_id, token)).status_code == 200
