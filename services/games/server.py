"""RPC surface of games: maps protobuf to sessions, the round lifecycle and the archive, and
wires the service on the runtime."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.ext.asyncio import AsyncEngine

from casino.common.v1 import money_pb2
from casino.games.v1 import games_pb2 as pb
from casino.games.v1 import games_pb2_grpc
from services.games import audit, catalog, messages, store
from services.games.lifecycle import BetRefused, Lifecycle, StakeBounds
from services.games.rounds import fair_key, round_fields
from services.games.sessions import Session, Sessions, launch_fingerprint
from services.games.upstreams import (
    ComplianceClient,
    RngClient,
    WalletClient,
)
from services.games.workers import ArchivePartitions, RoundRecovery
from services.runtime import verdict_log
from services.runtime.call import CLIENT_COUNTRY_METADATA, from_edge, require_player
from services.runtime.checkpoints import ChainCheckpointer
from services.runtime.config import ConfigError, domain_config
from services.runtime.errors import Code, DomainError, InvalidArgument
from services.runtime.exclusions import exclusion_consumer
from services.runtime.fields import request_id_field, text_field
from services.runtime.logs import get_logger
from services.runtime.outbox import outbox_workers
from services.runtime.pagination import decode_page_token, encode_page_token
from services.runtime.server import ServiceRuntime

_CURRENCY = re.compile(r"^[A-Z]{3}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_CLIENT_SEED = re.compile(r"^[\x21-\x7e]{1,64}$")
_MAX_HISTORY_PAGE = 100
_DEFAULT_HISTORY_PAGE = 20
# google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
_MIN_TIMESTAMP_SECONDS = -62_135_596_800
_MAX_TIMESTAMP_SECONDS = 253_402_300_799


log = get_logger()


@dataclass(frozen=True)
class GamesSettings:
    # Events leave through the outbox and arrive from compliance over the broker of the
    # runtime's [amqp] section. Published ones are kept in the outbox this long, then pruned.
    outbox_retention_hours: float = 24.0
    publish_events: bool = True
    # Consume compliance's PlayerExcluded events from this durable queue and end the
    # player's game sessions.
    exclusion_events: bool = True
    exclusion_queue: str = "games.sessions"
    # A session ends after this long without play.
    session_idle_seconds: int = 1800
    # Stake bounds of a round, in minor units of the session's currency (the compliance
    # service applies the player's limits and the jurisdiction's slot stake cap on top).
    min_stake_minor: int = 10
    max_stake_minor: int = 100_000
    # How long a live call owns a round before the recovery worker may finish it: longer
    # than any PlayRound deadline, so the worker never races a call that is still running.
    lease_seconds: float = 30.0
    recovery_interval_seconds: float = 2.0
    recovery_batch: int = 100
    # Archive partitions kept ready: months before this one (for back-dated or restored
    # rounds) and months ahead.
    archive_months_back: int = 13
    archive_months_ahead: int = 3
    partition_check_interval_seconds: float = 3600.0
    # Ed25519 key signing archive-chain checkpoints, and where they are written.
    signing_key_file: Path = Path(".dev/secrets/games-signing.key")
    public_key_file: Path = Path(".dev/secrets/games-signing.pub")
    checkpoint_dir: Path = Path(".dev/checkpoints/games")
    checkpoint_interval_seconds: float = 60.0


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _request_country(claimed: str, context: grpc.aio.ServicerContext) -> str:
    """Where the session's requests come from: the country the edge located the client in
    when it could (the client's own field cannot override it), else the client's field."""
    located = from_edge(context.invocation_metadata(), CLIENT_COUNTRY_METADATA)
    if located is not None and _COUNTRY.match(located):
        if claimed and claimed != located:
            log.info("client-claimed country differs from its location", claimed=claimed[:8])
        return located
    if not _COUNTRY.match(claimed):
        raise InvalidArgument(
            "request_country_code", "request_country_code must be an ISO 3166-1 alpha-2 code"
        )
    return claimed


def _round_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(text_field("round_id", value))
    except ValueError:
        raise InvalidArgument("round_id", "round_id is not a round id") from None


def _time_field(field: str, value: Timestamp) -> dt.datetime:
    if not (
        _MIN_TIMESTAMP_SECONDS <= value.seconds <= _MAX_TIMESTAMP_SECONDS
        and 0 <= value.nanos <= 999_999_999
    ):
        raise InvalidArgument(
            field, f"{field} must be a time from 0001-01-01 to 9999-12-31 UTC (nanos 0-999999999)"
        )
    return value.ToDatetime(dt.UTC)


def _own_player(player_id: str) -> str:
    """The request's player, who must be the caller's own when the call came through the edge."""
    require_player(text_field("player_id", player_id))
    return player_id


def _fair_game(game_id: str) -> catalog.GameMath:
    math = catalog.current(text_field("game_id", game_id))
    if not math.provably_fair:
        raise DomainError(
            "NOT_PROVABLY_FAIR",
            f"{game_id} does not offer provably-fair play",
            {"game_id": game_id},
            code=Code.FAILED_PRECONDITION,
        )
    return math


class GamesService(games_pb2_grpc.GamesServiceServicer):
    def __init__(
        self,
        engine: AsyncEngine,
        sessions: Sessions,
        lifecycle: Lifecycle,
        compliance: ComplianceClient,
        wallet: WalletClient,
        rng: RngClient,
        settings: GamesSettings,
    ) -> None:
        self._engine = engine
        self._sessions = sessions
        self._lifecycle = lifecycle
        self._compliance = compliance
        self._wallet = wallet
        self._rng = rng
        self._settings = settings

    async def ListGames(
        self, request: pb.ListGamesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListGamesResponse:
        s = self._settings
        return pb.ListGamesResponse(
            games=[
                messages.game_message(m, s.min_stake_minor, s.max_stake_minor)
                for m in catalog.GAMES
            ]
        )

    async def _session(
        self, player_id: str, session_id: str, *, allow_ended: bool = False
    ) -> Session:
        return await self._sessions.load(
            _own_player(player_id), text_field("session_id", session_id), allow_ended=allow_ended
        )

    async def StartSession(
        self, request: pb.StartSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.StartSessionResponse:
        player_id = _own_player(request.player_id)
        request_id = request_id_field(request.request_id)
        math = catalog.current(text_field("game_id", request.game_id))
        if not _CURRENCY.match(request.currency_code):
            raise InvalidArgument("currency_code", "currency_code must be an ISO 4217 code")
        country = _request_country(request.request_country_code, context)
        client_seed = request.client_seed
        if client_seed:
            _fair_game(math.game_id)
            if not _CLIENT_SEED.match(client_seed):
                raise InvalidArgument("client_seed", "client_seed is 1-64 printable ASCII")
        fingerprint = launch_fingerprint(math.game_id, request.currency_code, country, client_seed)
        started = await self._sessions.started(player_id, request_id, fingerprint)
        if started is not None:
            return pb.StartSessionResponse(session=messages.session_message(started))
        verdict = await self._compliance.check(
            player_id=player_id,
            action="GAME_LAUNCH",
            amount_minor=0,
            currency=request.currency_code,
            product=math.product,
            country=country,
            request_id=f"launch:{request_id}",
        )
        if not verdict.allowed:
            raise BetRefused(verdict.verdict_id, verdict.reasons)
        balance = await self._wallet.available(player_id, request.currency_code)
        now = _now()
        clock = await self._compliance.reality_check(player_id, now)
        commitment = ""
        if client_seed:
            seed = await self._rng.commitment(fair_key(player_id, math.game_id))
            commitment = seed.commitment
        session = await self._sessions.start(
            player_id=player_id,
            request_id=request_id,
            fingerprint=fingerprint,
            game_id=math.game_id,
            currency=request.currency_code,
            country=country,
            balance_minor=balance,
            reality_interval_minutes=clock.interval_minutes,
            next_check_time=clock.next_check_time,
            client_seed=client_seed,
            fair_commitment=commitment,
            now=now,
        )
        return pb.StartSessionResponse(session=messages.session_message(session))

    async def GetSession(
        self, request: pb.GetSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetSessionResponse:
        session = await self._session(request.player_id, request.session_id, allow_ended=True)
        return pb.GetSessionResponse(session=messages.session_message(session))

    async def AcknowledgeRealityCheck(
        self, request: pb.AcknowledgeRealityCheckRequest, context: grpc.aio.ServicerContext
    ) -> pb.AcknowledgeRealityCheckResponse:
        session = await self._session(request.player_id, request.session_id)
        session = await self._sessions.acknowledge(session, _now())
        return pb.AcknowledgeRealityCheckResponse(session=messages.session_message(session))

    async def EndSession(
        self, request: pb.EndSessionRequest, context: grpc.aio.ServicerContext
    ) -> pb.EndSessionResponse:
        session = await self._session(request.player_id, request.session_id, allow_ended=True)
        session = await self._sessions.end(session)
        return pb.EndSessionResponse(session=messages.session_message(session))

    async def PlayRound(
        self, request: pb.PlayRoundRequest, context: grpc.aio.ServicerContext
    ) -> pb.PlayRoundResponse:
        session = await self._session(request.player_id, request.session_id)
        request_id = request_id_field(request.request_id)
        if not request.HasField("bet"):
            raise InvalidArgument("bet", "bet is required")
        bet = messages.bet_json(session.game_id, request.bet)
        prepared = await self._lifecycle.prepare(session, request_id, bet)
        if prepared.existing is not None:
            played = await self._lifecycle.resume(prepared.existing)
        else:
            now = _now()
            self._sessions.require_no_reality_check(session, now)
            product, claim = prepared.math.product, None
            if prepared.math.min_round_interval_ms:
                claim = await self._sessions.claim_spin(
                    session, product, prepared.math.min_round_interval_ms, now
                )
            try:
                played = await self._lifecycle.play(session, prepared)
            except DomainError as exc:
                # A refused round played nothing: it does not count towards spin spacing.
                if claim is not None and exc.reason != "DEPENDENCY_UNAVAILABLE":
                    await self._sessions.release_spin(session, product, claim)
                raise
        r = played.round
        session = await self._sessions.load(session.player_id, session.session_id, allow_ended=True)
        return pb.PlayRoundResponse(
            round=messages.round_message(round_fields(r)),
            session=messages.session_message(session),
            replayed=played.replayed,
        )

    async def GetRound(
        self, request: pb.GetRoundRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetRoundResponse:
        player_id = _own_player(request.player_id)
        round_id = _round_id(request.round_id)
        async with self._engine.begin() as conn:
            r = await store.get(conn, player_id, round_id)
            found = (
                await store.archived(conn, player_id, round_id, r.close_time)
                if r is not None and r.close_time is not None
                else None
            )
        if r is None:
            raise audit.RoundNotFound(request.round_id)
        if found is not None:
            return pb.GetRoundResponse(round=messages.round_message(*found))
        return pb.GetRoundResponse(round=messages.round_message(round_fields(r)))

    async def ListRounds(
        self, request: pb.ListRoundsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRoundsResponse:
        player_id = _own_player(request.player_id)
        if request.page_size < 0:
            raise InvalidArgument("page_size", "page_size must not be negative")
        size = min(request.page_size or _DEFAULT_HISTORY_PAGE, _MAX_HISTORY_PAGE)
        game_id = request.game_id
        if game_id:
            catalog.current(game_id)
        start = (
            _time_field("start_time", request.start_time)
            if request.HasField("start_time")
            else None
        )
        end = _time_field("end_time", request.end_time) if request.HasField("end_time") else None
        if start is not None and end is not None and end <= start:
            raise InvalidArgument("end_time", "end_time must be after start_time")
        filters = {
            "player_id": player_id,
            "game_id": game_id,
            "start": start.isoformat() if start else "",
            "end": end.isoformat() if end else "",
        }
        after_raw = decode_page_token(request.page_token, filters)
        after = None
        if after_raw is not None:
            try:
                after = (dt.datetime.fromisoformat(after_raw[0]), uuid.UUID(after_raw[1]))
            except (ValueError, IndexError):
                raise InvalidArgument("page_token", "page_token is corrupt") from None
        async with self._engine.begin() as conn:
            rows = await store.history(
                conn,
                player_id,
                game_id=game_id or None,
                start=start,
                end=end,
                after=after,
                limit=size + 1,
            )
        page, more = rows[:size], len(rows) > size
        token = ""
        if more:
            last = page[-1][0]
            token = encode_page_token(filters, [last["close_time"], last["round_id"]])
        return pb.ListRoundsResponse(
            rounds=[messages.round_message(record, digest) for record, digest in page],
            next_page_token=token,
        )

    async def GetFairSeed(
        self, request: pb.GetFairSeedRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetFairSeedResponse:
        player_id = _own_player(request.player_id)
        math = _fair_game(request.game_id)
        seed = await self._rng.commitment(fair_key(player_id, math.game_id))
        return pb.GetFairSeedResponse(
            server_seed_commitment=seed.commitment, next_nonce=seed.next_nonce
        )

    async def RotateFairSeed(
        self, request: pb.RotateFairSeedRequest, context: grpc.aio.ServicerContext
    ) -> pb.RotateFairSeedResponse:
        player_id = _own_player(request.player_id)
        math = _fair_game(request.game_id)
        revealed = await self._rng.reveal(fair_key(player_id, math.game_id))
        return pb.RotateFairSeedResponse(
            revealed_server_seed=revealed.server_seed,
            revealed_commitment=revealed.commitment,
            rounds=revealed.rounds,
            server_seed_commitment=revealed.next_commitment,
        )

    async def ReplayRound(
        self, request: pb.ReplayRoundRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReplayRoundResponse:
        player_id = text_field("player_id", request.player_id)
        report = await audit.replay(self._engine, self._rng, player_id, _round_id(request.round_id))
        try:
            archived = messages.round_message(report.record, report.digest)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            # Altered past reading: the problems say so; the journal's round is shown.
            report.problems.append("the archived record cannot be read as a round")
            archived = messages.round_message(report.journal, report.digest)
        response = pb.ReplayRoundResponse(
            round=archived,
            matches=not report.problems,
            recomputed_draws=report.recomputed_draws,
            recomputed_payout=money_pb2.Money(
                amount_minor=report.recomputed_payout, currency_code=report.journal["currency"]
            ),
            problems=report.problems,
        )
        if report.recomputed_outcome is not None:
            response.recomputed_outcome.CopyFrom(
                messages.outcome_message(report.recomputed_game_id, report.recomputed_outcome)
            )
        return response

    async def VerifyArchive(
        self, request: pb.VerifyArchiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.VerifyArchiveResponse:
        if not request.HasField("start_time") or not request.HasField("end_time"):
            raise InvalidArgument("start_time", "start_time and end_time are required")
        start = _time_field("start_time", request.start_time)
        end = _time_field("end_time", request.end_time)
        if end <= start:
            raise InvalidArgument("end_time", "end_time must be after start_time")
        report = await audit.verify_archive(
            self._engine, self._settings.public_key_file, start, end
        )
        return pb.VerifyArchiveResponse(
            ok=not report.problems,
            rounds_checked=report.rounds_checked,
            chain_length=report.chain_length,
            problems=[
                pb.ArchiveProblem(kind=p.kind, round_id=p.round_id, detail=p.detail)
                for p in report.problems
            ],
        )


async def build(runtime: ServiceRuntime) -> None:
    settings = domain_config(runtime.config, GamesSettings)
    if settings.min_stake_minor < 1 or settings.max_stake_minor < settings.min_stake_minor:
        raise ConfigError("games: stakes must satisfy 1 <= min_stake_minor <= max_stake_minor")
    if settings.lease_seconds <= 0:
        raise ConfigError("games: lease_seconds must be positive")
    verdict_log.ensure_signing_key(settings.signing_key_file, settings.public_key_file)
    # The lobby shows each game's exact RTP; the slot's is a full enumeration of its reels
    # (seconds of CPU), done once before serving rather than inside a lobby request.
    await asyncio.to_thread(lambda: [m.reference_rtp for m in catalog.GAMES])
    engine = runtime.database()
    compliance = ComplianceClient(runtime.channel("compliance"))
    wallet = WalletClient(runtime.channel("wallet"))
    rng = RngClient(runtime.channel("rng"))
    redis = runtime.redis()
    sessions = Sessions(redis, settings.session_idle_seconds)
    lifecycle = Lifecycle(
        engine,
        compliance,
        wallet,
        rng,
        messages.round_archived_event,
        stakes=StakeBounds(settings.min_stake_minor, settings.max_stake_minor),
        lease_seconds=settings.lease_seconds,
        on_archived=sessions.record_round,
    )
    partitions = ArchivePartitions(
        engine,
        settings.archive_months_back,
        settings.archive_months_ahead,
        settings.partition_check_interval_seconds,
    )
    # Before serving: an archive insert must never find its month's partition missing.
    await partitions.ensure_once()
    runtime.add_service(
        pb.DESCRIPTOR.services_by_name["GamesService"],
        GamesService(
            engine,
            sessions,
            lifecycle,
            compliance,
            wallet,
            rng,
            settings,
        ),
        games_pb2_grpc.add_GamesServiceServicer_to_server,
    )
    runtime.add_background(partitions)
    runtime.add_background(
        RoundRecovery(
            engine,
            lifecycle,
            interval_seconds=settings.recovery_interval_seconds,
            batch=settings.recovery_batch,
            lease_seconds=settings.lease_seconds,
        )
    )
    runtime.add_background(
        ChainCheckpointer(
            engine,
            store.SCHEMA,
            settings.signing_key_file,
            settings.checkpoint_dir,
            settings.checkpoint_interval_seconds,
        )
    )
    if settings.exclusion_events:
        runtime.add_background(
            exclusion_consumer(
                sessions.end_all,
                what="game sessions ended",
                redis=redis,
                seen_prefix="games:excluded-event:",
                broker=runtime.broker(),
                queue=settings.exclusion_queue,
            )
        )
    if settings.publish_events:
        for worker in outbox_workers(
            engine, store.SCHEMA, runtime.broker(), settings.outbox_retention_hours
        ):
            runtime.add_background(worker)
