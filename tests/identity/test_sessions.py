"""Login and sessions: the uniform error, the lockout, the access token the edge verifies
(claims, key id, expiry, tampering), refresh rotation with reuse detection, logout and
self-exclusion revoking every session, also when they race a refresh or a login or come from
a replica whose clock is off."""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import grpc
import jwt
import pytest
from redis.asyncio import Redis

from casino.identity.v1 import identity_pb2 as pb
from casino.identity.v1 import identity_pb2_grpc
from services.identity import sessions as sessions_module
from services.identity.authentication import Authenticator, SessionRevoked
from services.identity.lockout import LockoutPolicy, LoginThrottle
from services.identity.passwords import Argon2Parameters, Passwords
from services.identity.sessions import (
    RefreshToken,
    RefreshTokenInvalid,
    RefreshTokenReused,
    Sessions,
)
from services.identity.tokens import TokenSigner
from services.runtime.config import DatabaseConfig
from services.runtime.db import create_engine
from tests.conftest import SECRETS, Pki, database_url
from tests.identity.conftest import (
    PASSWORD,
    Clients,
    Identity,
    error_info,
    registration,
    unique_email,
)
from tests.support.amqp import publish_player_excluded

Stub = identity_pb2_grpc.IdentityServiceStub
SessionsT = TypeVar("SessionsT", bound=Sessions)


async def new_player(edge: Stub) -> tuple[str, str]:
    request = registration()
    player = (await edge.Register(request)).player
    return player.player_id, request.email


async def login(edge: Stub, email: str, password: str = PASSWORD, **kw: Any) -> pb.Session:
    reply: pb.LoginResponse = await edge.Login(
        pb.LoginRequest(email=email, password=password), **kw
    )
    return reply.session


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    return error.value


def claims(identity: Identity, token: str, **options: Any) -> dict[str, Any]:
    """Verifies a token as the edge does: the public key file, EdDSA, issuer, audience."""
    key = identity.public_key_file.read_bytes()
    return jwt.decode(
        token,
        key,
        algorithms=["EdDSA"],
        audience="casino-edge",
        issuer="casino-identity",
        **options,
    )


async def revoked_before(redis: Redis, player_id: str) -> int:
    raw = await redis.get(f"identity:revoked-before:{player_id}")
    return int(raw) if raw else 0


def edge_accepts(token_claims: dict[str, Any], revoked_before_second: int) -> bool:
    """The edge's revocation rule: refuse a token issued before the revoked-before second."""
    return int(token_claims["iat"]) >= revoked_before_second


# Login.


async def test_unknown_email_and_wrong_password_get_the_same_answer_in_similar_time(
    edge: Stub,
) -> None:
    _, email = await new_player(edge)
    unknown: list[float] = []
    wrong: list[float] = []
    for _ in range(3):
        for attempt_email, times in ((unique_email("nobody"), unknown), (email, wrong)):
            started = time.perf_counter()
            error = await refused(
                edge.Login(pb.LoginRequest(email=attempt_email, password="x" * 12))
            )
            times.append(time.perf_counter() - started)
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED
            assert error.details() == "email or password is incorrect"
            assert error_info(error) == ("INVALID_CREDENTIALS", {})
        if len(wrong) == 2:
            # Stay below the account lockout threshold (3).
            await login(edge, email)
    # An unknown email is checked against a dummy hash: no fast path reveals it.
    assert statistics.median(unknown) > 0.5 * statistics.median(wrong)


async def test_failed_logins_lock_the_account_with_retry_after_and_success_resets(
    edge: Stub,
) -> None:
    _, email = await new_player(edge)
    for _ in range(3):
        error = await refused(edge.Login(pb.LoginRequest(email=email, password="wrong" * 3)))
        assert error_info(error)[0] == "INVALID_CREDENTIALS"
    # Locked: even the right password is not looked at.
    locked = await refused(edge.Login(pb.LoginRequest(email=email, password=PASSWORD)))
    assert locked.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    reason, metadata = error_info(locked)
    assert reason == "ACCOUNT_LOCKED"
    assert metadata["scope"] == "account"
    assert 1 <= int(metadata["retry_after"]) <= 2
    # After retry_after the right password works (polled, with a deadline).
    deadline = time.monotonic() + 10
    while True:
        try:
            await login(edge, email)
            break
        except grpc.aio.AioRpcError as exc:
            assert error_info(exc)[0] == "ACCOUNT_LOCKED"
            assert time.monotonic() < deadline, "still locked long after retry_after"
            await asyncio.sleep(0.2)
    # The success cleared the count: two more failures do not lock.
    for _ in range(2):
        error = await refused(edge.Login(pb.LoginRequest(email=email, password="wrong" * 3)))
        assert error_info(error)[0] == "INVALID_CREDENTIALS"
    await login(edge, email)


async def test_an_unknown_email_locks_like_a_known_one(edge: Stub) -> None:
    email = unique_email("ghost")
    for _ in range(3):
        await refused(edge.Login(pb.LoginRequest(email=email, password="wrong" * 3)))
    locked = await refused(edge.Login(pb.LoginRequest(email=email, password="wrong" * 3)))
    assert error_info(locked)[0] == "ACCOUNT_LOCKED"


async def test_failures_from_one_address_lock_that_address_only(edge: Stub) -> None:
    address = f"198.51.100.{uuid.uuid4().int % 250}-{uuid.uuid4().hex[:6]}"
    other = f"203.0.113.7-{uuid.uuid4().hex[:6]}"
    _, email = await new_player(edge)
    # Six failures over six different emails (each below its own account threshold).
    for _ in range(6):
        await refused(
            edge.Login(
                pb.LoginRequest(email=unique_email("spray"), password="wrong" * 3),
                metadata=(("x-casino-client-ip", address),),
            )
        )
    locked = await refused(
        edge.Login(
            pb.LoginRequest(email=email, password=PASSWORD),
            metadata=(("x-casino-client-ip", address),),
        )
    )
    reason, metadata = error_info(locked)
    assert (reason, metadata["scope"]) == ("ACCOUNT_LOCKED", "address")
    await login(edge, email, metadata=(("x-casino-client-ip", other),))


# Tokens.


async def test_access_token_carries_the_agreed_claims_and_key_id(
    edge: Stub, identity: Identity
) -> None:
    player_id, email = await new_player(edge)
    session = await login(edge, email)
    header = jwt.get_unverified_header(session.access_token)
    assert header == {"alg": "EdDSA", "typ": "JWT", "kid": "test-1"}
    verified = claims(identity, session.access_token)
    assert verified["sub"] == player_id == session.player_id
    assert verified["sid"] == session.session_id
    assert verified["exp"] - verified["iat"] == 900
    assert verified["nbf"] == verified["iat"]
    assert verified["jti"]
    assert session.token_type == "Bearer"
    assert session.access_token_expire_time.seconds == verified["exp"]
    assert len(session.refresh_token) >= 43  # 32 random bytes, URL-safe base64


async def test_a_tampered_or_foreign_token_fails_verification(
    edge: Stub, identity: Identity
) -> None:
    _, email = await new_player(edge)
    token = (await login(edge, email)).access_token
    header, payload, signature = token.split(".")
    other_player = jwt.utils.base64url_encode(
        jwt.utils.base64url_decode(payload).replace(b'"sub":"', b'"sub":"x')
    ).decode()
    with pytest.raises(jwt.InvalidSignatureError):
        claims(identity, f"{header}.{other_player}.{signature}")
    # Signed by another key (same kid claimed): refused too.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    forged = jwt.encode(
        claims(identity, token), Ed25519PrivateKey.generate(), "EdDSA", headers={"kid": "test-1"}
    )
    with pytest.raises(jwt.InvalidSignatureError):
        claims(identity, forged)


async def test_access_tokens_expire_after_the_configured_lifetime(
    start_identity: Callable[..., Identity], pki: Pki
) -> None:
    short = start_identity("access_token_lifetime_seconds = 2")
    clients = Clients(short.process.ports["port"], pki, {})
    try:
        edge = clients.stub()
        _, email = await new_player(edge)
        token = (await login(edge, email)).access_token
        verified = claims(short, token)
        assert verified["exp"] - verified["iat"] == 2
        deadline = time.monotonic() + 10
        with pytest.raises(jwt.ExpiredSignatureError):
            while time.monotonic() < deadline:
                claims(short, token)
                await asyncio.sleep(0.2)
    finally:
        await clients.close()


# Refresh, reuse, logout, exclusion.


async def test_refresh_rotates_the_refresh_token_within_the_session(
    edge: Stub, identity: Identity
) -> None:
    player_id, email = await new_player(edge)
    first = await login(edge, email)
    second = (await edge.Refresh(pb.RefreshRequest(refresh_token=first.refresh_token))).session
    assert second.refresh_token != first.refresh_token
    assert second.session_id == first.session_id
    assert claims(identity, second.access_token)["sid"] == first.session_id
    assert claims(identity, second.access_token)["sub"] == player_id
    third = (await edge.Refresh(pb.RefreshRequest(refresh_token=second.refresh_token))).session
    assert third.session_id == first.session_id


async def test_reusing_a_spent_refresh_token_revokes_its_family(
    edge: Stub, identity: Identity, redis: Redis
) -> None:
    player_id, email = await new_player(edge)
    stolen = await login(edge, email)
    other_device = await login(edge, email)
    rotated = (await edge.Refresh(pb.RefreshRequest(refresh_token=stolen.refresh_token))).session
    reuse = await refused(edge.Refresh(pb.RefreshRequest(refresh_token=stolen.refresh_token)))
    assert reuse.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(reuse)[0] == "REFRESH_TOKEN_REUSED"
    # The family is gone, so its latest token is dead too...
    dead = await refused(edge.Refresh(pb.RefreshRequest(refresh_token=rotated.refresh_token)))
    assert error_info(dead)[0] == "REFRESH_TOKEN_INVALID"
    # ...and the edge refuses the family's access tokens before they expire.
    cutoff = await revoked_before(redis, player_id)
    assert not edge_accepts(claims(identity, rotated.access_token), cutoff)
    # Another family of the player is untouched.
    other = (
        await edge.Refresh(pb.RefreshRequest(refresh_token=other_device.refresh_token))
    ).session
    assert edge_accepts(claims(identity, other.access_token), cutoff)


async def test_an_unknown_refresh_token_is_invalid(edge: Stub) -> None:
    error = await refused(edge.Refresh(pb.RefreshRequest(refresh_token="made-up-token")))
    assert error_info(error)[0] == "REFRESH_TOKEN_INVALID"


async def test_logout_revokes_every_session_of_the_player(
    edge: Stub, identity: Identity, redis: Redis
) -> None:
    player_id, email = await new_player(edge)
    phone, laptop = await login(edge, email), await login(edge, email)
    reply = await edge.Logout(pb.LogoutRequest(refresh_token=phone.refresh_token))
    assert reply.revoked_sessions == 2
    for session in (phone, laptop):
        error = await refused(edge.Refresh(pb.RefreshRequest(refresh_token=session.refresh_token)))
        assert error_info(error)[0] == "REFRESH_TOKEN_INVALID"
        assert not edge_accepts(
            claims(identity, session.access_token), await revoked_before(redis, player_id)
        )
    # Logging in again right away gives a token the edge accepts.
    fresh = await login(edge, email)
    assert edge_accepts(
        claims(identity, fresh.access_token), await revoked_before(redis, player_id)
    )
    await edge.Refresh(pb.RefreshRequest(refresh_token=fresh.refresh_token))


async def test_player_excluded_event_revokes_every_session(
    edge: Stub, identity: Identity, redis: Redis
) -> None:
    player_id, email = await new_player(edge)
    session = await login(edge, email)
    await publish_player_excluded(identity.queue, player_id)
    access = claims(identity, session.access_token)
    deadline = time.monotonic() + 15
    while edge_accepts(access, await revoked_before(redis, player_id)):
        assert time.monotonic() < deadline, "the exclusion event did not revoke the session"
        await asyncio.sleep(0.1)
    error = await refused(edge.Refresh(pb.RefreshRequest(refresh_token=session.refresh_token)))
    assert error_info(error)[0] == "REFRESH_TOKEN_INVALID"
    # Self-excluded players may still log in (to see and withdraw their balance).
    await login(edge, email)


async def test_a_player_reads_only_their_own_profile(edge: Stub, clients: Clients) -> None:
    player_id, email = await new_player(edge)
    other_id, _ = await new_player(edge)
    as_player = (("x-casino-player-id", player_id),)
    profile = (
        await edge.GetProfile(pb.GetProfileRequest(player_id=player_id), metadata=as_player)
    ).player
    assert (profile.player_id, profile.email, profile.currency_code) == (player_id, email, "GBP")
    mismatch = await refused(
        edge.GetProfile(pb.GetProfileRequest(player_id=other_id), metadata=as_player)
    )
    assert mismatch.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info(mismatch)[0] == "PLAYER_MISMATCH"
    # The back office (a service, not a player) reads any profile.
    backoffice = clients.stub("backoffice")
    assert (await backoffice.GetProfile(pb.GetProfileRequest(player_id=other_id))).player
    missing = await refused(backoffice.GetProfile(pb.GetProfileRequest(player_id="nobody")))
    assert error_info(missing)[0] == "PLAYER_NOT_FOUND"


async def test_through_the_edge_logout_ends_the_authenticated_players_sessions_only(
    edge: Stub,
) -> None:
    player_id, email = await new_player(edge)
    _, other_email = await new_player(edge)
    mine, theirs = await login(edge, email), await login(edge, other_email)
    as_player = (("x-casino-player-id", player_id),)
    mismatch = await refused(
        edge.Logout(pb.LogoutRequest(refresh_token=theirs.refresh_token), metadata=as_player)
    )
    assert error_info(mismatch)[0] == "PLAYER_MISMATCH"
    assert (await edge.Logout(pb.LogoutRequest(), metadata=as_player)).revoked_sessions == 1
    gone = await refused(edge.Refresh(pb.RefreshRequest(refresh_token=mine.refresh_token)))
    assert error_info(gone)[0] == "REFRESH_TOKEN_INVALID"
    await edge.Refresh(pb.RefreshRequest(refresh_token=theirs.refresh_token))


# Revocation racing a refresh or a login: identity's own pieces in this process, on the test
# database, Redis and the running identity's secrets, with a Sessions whose hooks land the
# revocation at the moment that used to let a live token for an ended session through.


@pytest.fixture
async def authenticator(
    identity: Identity, redis: Redis
) -> AsyncIterator[Callable[[Sessions], Authenticator]]:
    engine = create_engine(
        DatabaseConfig(
            url=database_url("identity"),
            password_file=SECRETS / "postgres" / "casino_identity",
            pool_size=2,
        ),
        "identity-tests",
    )
    passwords = Passwords.from_file(
        identity.secrets / "pepper", Argon2Parameters(time_cost=2, memory_kib=16384, parallelism=1)
    )
    signer = TokenSigner(identity.secrets / "jwt", "test-1", 900)

    def build(sessions: Sessions) -> Authenticator:
        throttle = LoginThrottle(redis, LockoutPolicy())
        return Authenticator(engine, passwords, throttle, sessions, signer)

    yield build
    await engine.dispose()


def sessions_kind(kind: type[SessionsT], redis: Redis) -> SessionsT:
    return kind(redis, refresh_lifetime_seconds=600, access_lifetime_seconds=900)


class LogoutWhileTheTokenIsIssued(Sessions):
    """Every session of the player ends after the refresh token was rotated, before the
    access token is signed (issuing then waits for the logout's cutoff second)."""

    async def issue_second(self, player_id: str) -> int:
        await self.revoke_all(player_id)
        return await super().issue_second(player_id)


class LogoutAsTheSessionOpens(Sessions):
    """Every session of the player ends just after a login opened its session."""

    async def open(self, player_id: str) -> RefreshToken:
        session = await super().open(player_id)
        await self.revoke_all(player_id)
        return session


async def test_a_refresh_racing_a_logout_answers_no_token(
    authenticator: Callable[[Sessions], Authenticator], redis: Redis
) -> None:
    sessions = sessions_kind(LogoutWhileTheTokenIsIssued, redis)
    player_id = f"player-{uuid.uuid4().hex[:12]}"
    first = await sessions.open(player_id)
    with pytest.raises(RefreshTokenInvalid):
        await authenticator(sessions).refresh(first.token)


async def test_a_login_racing_a_logout_answers_no_token(
    authenticator: Callable[[Sessions], Authenticator], edge: Stub, redis: Redis
) -> None:
    _, email = await new_player(edge)
    sessions = sessions_kind(LogoutAsTheSessionOpens, redis)
    with pytest.raises(SessionRevoked) as ended:
        await authenticator(sessions).login(email, PASSWORD, None)
    assert ended.value.reason == "TOKEN_REVOKED"


async def test_a_refresh_racing_another_familys_reuse_answers_a_token_the_edge_accepts(
    authenticator: Callable[[Sessions], Authenticator], identity: Identity, redis: Redis
) -> None:
    player_id = f"player-{uuid.uuid4().hex[:12]}"
    plain = sessions_kind(Sessions, redis)
    elsewhere = await plain.open(player_id)
    await plain.rotate(elsewhere.token)

    class ReuseElsewhereAsTheTokenIsSigned(Sessions):
        """The other family's spent token is presented again just after this refresh chose
        its token's second: the player's cutoff passes it, this family lives on."""

        reused = False

        async def issue_second(self, player_id: str) -> int:
            second = await super().issue_second(player_id)
            if not self.reused:
                self.reused = True
                with pytest.raises(RefreshTokenReused):
                    await plain.rotate(elsewhere.token)
            return second

    sessions = sessions_kind(ReuseElsewhereAsTheTokenIsSigned, redis)
    mine = await sessions.open(player_id)
    issued = await authenticator(sessions).refresh(mine.token)
    assert sessions.reused
    token_claims = claims(identity, issued.access.token)
    assert token_claims["sid"] == mine.session_id
    assert edge_accepts(token_claims, await revoked_before(redis, player_id))


# Replicas whose clocks disagree: the running identity (this host's clock) and one in this
# process whose clock is `skew` seconds off. Whichever of them issues a token and whichever
# ends the player's sessions, the edge refuses the token after the logout, and a token issued
# after it is accepted (without waiting out the skew).


class SkewedClock:
    """The `time` module as sessions.py sees it on a replica whose clock is off."""

    def __init__(self, skew: float) -> None:
        self.skew = skew

    def time(self) -> float:
        return time.time() + self.skew


@pytest.mark.parametrize("skew", [5.0, -5.0])
@pytest.mark.parametrize("revoker", ["host", "skewed"])
async def test_a_replica_with_a_skewed_clock_yields_no_token_the_edge_accepts_after_a_logout(
    authenticator: Callable[[Sessions], Authenticator],
    edge: Stub,
    identity: Identity,
    redis: Redis,
    monkeypatch: pytest.MonkeyPatch,
    skew: float,
    revoker: str,
) -> None:
    monkeypatch.setattr(sessions_module, "time", SkewedClock(skew))
    skewed = sessions_kind(Sessions, redis)
    player_id, email = await new_player(edge)

    async def issue(replica: str) -> tuple[str, str]:
        """(access token, refresh token) from a login at `replica`."""
        if replica == "host":
            session = await login(edge, email)
            return session.access_token, session.refresh_token
        issued = await authenticator(skewed).login(email, PASSWORD, None)
        return issued.access.token, issued.refresh.token

    def accepted(token: str, cutoff: int) -> bool:
        # Verified as the edge does, with its 30 s leeway for clocks.
        return edge_accepts(claims(identity, token, leeway=30), cutoff)

    issuer = "skewed" if revoker == "host" else "host"
    access, refresh = await issue(issuer)
    if revoker == "host":
        assert (await edge.Logout(pb.LogoutRequest(refresh_token=refresh))).revoked_sessions == 1
    else:
        assert await skewed.revoke_all(player_id) == 1
    cutoff = await revoked_before(redis, player_id)
    assert not accepted(access, cutoff), "a token issued before the logout outlived it"
    # The cutoff is Redis's next second, whichever replica's clock is off: a login waits at
    # most for that second to begin (sessions wait by Redis's clock), never for a skewed one.
    redis_second, _ = await redis.time()
    assert cutoff <= redis_second + 1, f"the cutoff is {cutoff - redis_second} s ahead"
    for replica in ("host", "skewed"):
        fresh, _ = await issue(replica)
        assert accepted(fresh, await revoked_before(redis, player_id)), replica
