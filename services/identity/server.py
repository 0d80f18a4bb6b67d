"""RPC surface of identity: maps protobuf to registration, login and session calls and back,
and wires the service on the runtime."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from casino.identity.v1 import identity_pb2 as pb
from casino.identity.v1 import identity_pb2_grpc
from services.identity import store
from services.identity.authentication import Authenticator, IssuedSession
from services.identity.lockout import LockoutPolicy, LoginThrottle
from services.identity.passwords import Argon2Parameters, Passwords, ensure_pepper
from services.identity.registration import Application, Registrar
from services.identity.sessions import Sessions
from services.identity.store import PlayerRecord
from services.identity.tokens import TokenSigner, ensure_key_pair
from services.identity.upstreams import ComplianceClient, WalletClient
from services.runtime.call import (
    CLIENT_ADDRESS_METADATA,
    CLIENT_COUNTRY_METADATA,
    current_call,
    from_edge,
    require_player,
)
from services.runtime.config import ConfigError, domain_config
from services.runtime.errors import InvalidArgument, NotFound
from services.runtime.exclusions import exclusion_consumer
from services.runtime.messages import timestamp
from services.runtime.server import ServiceRuntime


@dataclass(frozen=True)
class IdentitySettings:
    pepper_file: Path = Path("")
    # <kid>.key / <kid>.pub files; the edge reads the *.pub of the same directory.
    jwt_key_dir: Path = Path("")
    jwt_key_id: str = "dev-1"
    # Development only: create the pepper and the signing key pair when missing. Never in
    # production: a new pepper silently invalidates every stored password.
    generate_missing_secrets: bool = False
    access_token_lifetime_seconds: int = 900
    refresh_token_lifetime_seconds: int = 30 * 86_400
    # Wallet currency by country of residence.
    currencies: dict[str, str] = field(
        default_factory=lambda: {"GB": "GBP", "IE": "EUR", "MT": "EUR"}
    )
    argon2: Argon2Parameters = field(default_factory=Argon2Parameters)
    lockout: LockoutPolicy = field(default_factory=LockoutPolicy)
    # End sessions on compliance.player.excluded events (durable queue of our own, on the
    # broker of the runtime's [amqp] section).
    exclusion_events: bool = True
    exclusion_queue: str = "identity.sessions"


def player_message(player: PlayerRecord) -> pb.Player:
    birth = player.birth_date
    message = pb.Player(
        name=f"players/{player.player_id}",
        player_id=player.player_id,
        email=player.email,
        given_name=player.given_name,
        family_name=player.family_name,
        address=pb.Address(
            line1=player.address_line1,
            line2=player.address_line2,
            city=player.city,
            postcode=player.postcode,
            country_code=player.country,
        ),
        currency_code=player.currency,
        create_time=timestamp(player.create_time),
    )
    message.birth_date.year, message.birth_date.month = birth.year, birth.month
    message.birth_date.day = birth.day
    return message


def session_message(issued: IssuedSession) -> pb.Session:
    return pb.Session(
        player_id=issued.refresh.player_id,
        session_id=issued.refresh.session_id,
        access_token=issued.access.token,
        token_type="Bearer",  # noqa: S106 (the OAuth token type, not a secret)
        access_token_expire_time=timestamp(
            dt.datetime.fromtimestamp(issued.access.expires_at, dt.UTC)
        ),
        refresh_token=issued.refresh.token,
        refresh_token_expire_time=timestamp(
            dt.datetime.fromtimestamp(issued.refresh.expires_at, dt.UTC)
        ),
    )


def _birth_date(request: pb.RegisterRequest) -> dt.date:
    date = request.birth_date
    try:
        return dt.date(date.year, date.month, date.day)
    except ValueError:
        raise InvalidArgument("birth_date", "birth_date is not a date") from None


class IdentityService(identity_pb2_grpc.IdentityServiceServicer):
    def __init__(
        self, registrar: Registrar, authenticator: Authenticator, engine: AsyncEngine
    ) -> None:
        self._registrar = registrar
        self._auth = authenticator
        self._engine = engine

    async def Register(
        self, request: pb.RegisterRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterResponse:
        address = request.address
        player = await self._registrar.register(
            Application(
                request_id=request.request_id,
                email=request.email,
                password=request.password,
                given_name=request.given_name,
                family_name=request.family_name,
                birth_date=_birth_date(request),
                address_line1=address.line1,
                address_line2=address.line2,
                city=address.city,
                postcode=address.postcode,
                country=address.country_code,
                request_country=from_edge(context.invocation_metadata(), CLIENT_COUNTRY_METADATA)
                or "",
            )
        )
        return pb.RegisterResponse(player=player_message(player))

    async def Login(
        self, request: pb.LoginRequest, context: grpc.aio.ServicerContext
    ) -> pb.LoginResponse:
        issued = await self._auth.login(
            request.email,
            request.password,
            from_edge(context.invocation_metadata(), CLIENT_ADDRESS_METADATA),
        )
        return pb.LoginResponse(session=session_message(issued))

    async def Refresh(
        self, request: pb.RefreshRequest, context: grpc.aio.ServicerContext
    ) -> pb.RefreshResponse:
        return pb.RefreshResponse(
            session=session_message(await self._auth.refresh(request.refresh_token))
        )

    async def Logout(
        self, request: pb.LogoutRequest, context: grpc.aio.ServicerContext
    ) -> pb.LogoutResponse:
        call = current_call()
        player = call.player_id if call is not None else None
        revoked = await self._auth.logout(player, request.refresh_token)
        return pb.LogoutResponse(revoked_sessions=revoked)

    async def GetProfile(
        self, request: pb.GetProfileRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetProfileResponse:
        if not request.player_id:
            raise InvalidArgument("player_id", "player_id is required")
        require_player(request.player_id)
        async with self._engine.begin() as conn:
            player = await store.by_id(conn, request.player_id)
        if player is None or player.status != "active":
            raise NotFound("PLAYER_NOT_FOUND", "no such player", {"player_id": request.player_id})
        return pb.GetProfileResponse(player=player_message(player))


async def build(runtime: ServiceRuntime) -> None:
    settings = domain_config(runtime.config, IdentitySettings)
    if not settings.pepper_file.name or not settings.jwt_key_dir.name:
        raise ConfigError("identity: pepper_file and jwt_key_dir are required")
    if settings.generate_missing_secrets:
        ensure_pepper(settings.pepper_file)
        ensure_key_pair(settings.jwt_key_dir, settings.jwt_key_id)
    engine = runtime.database()
    redis = runtime.redis()
    passwords = Passwords.from_file(settings.pepper_file, settings.argon2)
    signer = TokenSigner(
        settings.jwt_key_dir, settings.jwt_key_id, settings.access_token_lifetime_seconds
    )
    sessions = Sessions(
        redis,
        refresh_lifetime_seconds=settings.refresh_token_lifetime_seconds,
        access_lifetime_seconds=settings.access_token_lifetime_seconds,
    )
    registrar = Registrar(
        engine,
        passwords,
        ComplianceClient(runtime.channel("compliance")),
        WalletClient(runtime.channel("wallet")),
        settings.currencies,
    )
    authenticator = Authenticator(
        engine, passwords, LoginThrottle(redis, settings.lockout), sessions, signer
    )
    runtime.add_service(
        pb.DESCRIPTOR.services_by_name["IdentityService"],
        IdentityService(registrar, authenticator, engine),
        identity_pb2_grpc.add_IdentityServiceServicer_to_server,
    )
    if settings.exclusion_events:
        runtime.add_background(
            exclusion_consumer(
                sessions.revoke_all,
                what="sessions revoked",
                redis=redis,
                seen_prefix="identity:excluded-event:",
                broker=runtime.broker(),
                queue=settings.exclusion_queue,
            )
        )
