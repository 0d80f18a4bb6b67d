"""RPC surface of the RNG service: validates and maps protobuf to the round logic and back."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from casino.rng.v1 import rng_pb2 as pb
from casino.rng.v1 import rng_pb2_grpc
from services.rng import draws, versions
from services.rng.drbg import DRBG_VERSION, ChaChaDrbg
from services.rng.rounds import SCHEMA, DrawRecord, Round, Rounds
from services.rng.sampling import SAMPLING_VERSION
from services.rng.sealing import Sealer, ensure_seal_key
from services.rng.selftest import RngHealth
from services.runtime import verdict_log
from services.runtime.call import authenticated_caller
from services.runtime.checkpoints import ChainCheckpointer
from services.runtime.config import ConfigError, domain_config
from services.runtime.errors import InvalidArgument
from services.runtime.fields import request_id_field, text_field
from services.runtime.messages import timestamp
from services.runtime.secrets import SecretFileError
from services.runtime.server import ServiceRuntime

MAX_GAME_INPUTS = 4096
MAX_SPECS = 64


@dataclass(frozen=True)
class RngSettings:
    # AES-256-GCM key sealing round and server seeds (64 hex characters), outside the
    # database. A development key is generated at start if the file does not exist.
    seal_key_file: Path = Path(".dev/secrets/rng-seal.key")
    # Earlier seal keys (one file each, as the current one): never seal, still open the
    # seeds they sealed, so rounds sealed before a rotation replay. Drop a key from this
    # list only once nothing it sealed needs replaying.
    retired_seal_key_files: list[Path] = field(default_factory=list)
    # Ed25519 key signing audit-chain checkpoints, and where checkpoints are written.
    signing_key_file: Path = Path(".dev/secrets/rng-signing.key")
    public_key_file: Path = Path(".dev/secrets/rng-signing.pub")
    checkpoint_dir: Path = Path(".dev/checkpoints/rng")
    checkpoint_interval_seconds: float = 60.0
    # The versions new rounds open under; open rounds keep their own.
    generator_version: str = DRBG_VERSION
    sampling_version: str = SAMPLING_VERSION
    # The live DRBG reseeds from the OS after this many generate calls.
    reseed_interval: int = 4096
    # Test only: make the start-up self-test fail with this reason (empty in production).
    self_test_fail: str = ""


def _versions(generator: str, sampling: str) -> pb.Versions:
    return pb.Versions(generator=generator, sampling=sampling)


def round_message(r: Round) -> pb.Round:
    message = pb.Round(
        round_id=str(r.round_id),
        game_id=r.game_id,
        game_inputs=r.game_inputs,
        versions=_versions(r.generator_version, r.sampling_version),
        state=pb.ROUND_STATE_OPEN if r.state == "OPEN" else pb.ROUND_STATE_CLOSED,
        draw_count=r.draw_count,
        open_time=timestamp(r.open_time),
    )
    if r.close_time is not None:
        message.close_time.CopyFrom(timestamp(r.close_time))
    if r.fair is not None:
        message.provably_fair.CopyFrom(
            pb.ProvablyFair(
                fair_key=r.fair.fair_key,
                server_seed_commitment=r.fair.commitment,
                client_seed=r.fair.client_seed,
                nonce=r.fair.nonce,
            )
        )
    return message


def spec_message(spec: draws.Spec) -> pb.DrawSpec:
    if isinstance(spec, draws.IntegerSpec):
        return pb.DrawSpec(integers=pb.IntegerDraw(low=spec.low, high=spec.high, count=spec.count))
    return pb.DrawSpec(shuffle=pb.ShuffleDraw(size=spec.size))


def results(record: DrawRecord) -> list[pb.DrawResult]:
    return [
        pb.DrawResult(spec=spec_message(s), values=v)
        for s, v in zip(record.specs, record.values, strict=True)
    ]


def _round_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument("round_id", "round_id must be a UUID") from None


def _spec(index: int, spec: pb.DrawSpec) -> draws.Spec:
    field = f"specs[{index}]"
    kind = spec.WhichOneof("kind")
    parsed: draws.Spec
    if kind == "integers":
        parsed = draws.IntegerSpec(spec.integers.low, spec.integers.high, spec.integers.count)
    elif kind == "shuffle":
        parsed = draws.ShuffleSpec(spec.shuffle.size)
    else:
        raise InvalidArgument(field, f"{field} must be integers or shuffle")
    try:
        return draws.validate(parsed)
    except ValueError as exc:
        raise InvalidArgument(field, f"{field}: {exc}") from None


class RngService(rng_pb2_grpc.RngServiceServicer):
    def __init__(self, rounds: Rounds) -> None:
        self._rounds = rounds

    async def OpenRound(
        self, request: pb.OpenRoundRequest, context: grpc.aio.ServicerContext
    ) -> pb.OpenRoundResponse:
        request_id = request_id_field(request.request_id)
        game_id = text_field("game_id", request.game_id)
        if len(request.game_inputs) > MAX_GAME_INPUTS:
            raise InvalidArgument("game_inputs", f"game_inputs exceed {MAX_GAME_INPUTS} bytes")
        fair_key = text_field("fair_key", request.fair_key, required=False)
        client_seed = text_field("client_seed", request.client_seed, required=False)
        if bool(fair_key) != bool(client_seed):
            raise InvalidArgument(
                "client_seed", "a provably-fair round needs both fair_key and client_seed"
            )
        r = await self._rounds.open(
            request_id=request_id,
            game_id=game_id,
            game_inputs=request.game_inputs,
            fair_key=fair_key,
            client_seed=client_seed,
            caller=authenticated_caller(),
        )
        return pb.OpenRoundResponse(round=round_message(r))

    async def Draw(
        self, request: pb.DrawRequest, context: grpc.aio.ServicerContext
    ) -> pb.DrawResponse:
        round_id = _round_id(request.round_id)
        if not request.specs:
            raise InvalidArgument("specs", "specs must name at least one draw")
        if len(request.specs) > MAX_SPECS:
            raise InvalidArgument("specs", f"at most {MAX_SPECS} specs per draw")
        specs = [_spec(i, s) for i, s in enumerate(request.specs)]
        r, record = await self._rounds.draw(
            round_id, request.draw_index, specs, authenticated_caller(), close=request.close_round
        )
        return pb.DrawResponse(
            results=results(record),
            draw_index=record.draw_index,
            versions=_versions(r.generator_version, r.sampling_version),
        )

    async def CloseRound(
        self, request: pb.CloseRoundRequest, context: grpc.aio.ServicerContext
    ) -> pb.CloseRoundResponse:
        r = await self._rounds.close(_round_id(request.round_id), authenticated_caller())
        return pb.CloseRoundResponse(round=round_message(r))

    async def ReplayRound(
        self, request: pb.ReplayRoundRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReplayRoundResponse:
        replay = await self._rounds.replay(_round_id(request.round_id))
        return pb.ReplayRoundResponse(
            round=round_message(replay.round),
            matches=replay.matches,
            archived=[m for a in replay.archived for m in results(a)],
            recomputed=[m for c in replay.recomputed for m in results(c)],
        )

    async def ListVersions(
        self, request: pb.ListVersionsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListVersionsResponse:
        current = {self._rounds.generator_version, self._rounds.sampling_version}
        return pb.ListVersionsResponse(
            versions=[
                pb.AlgorithmVersion(
                    version=impl.version,
                    kind=impl.kind,
                    source_file=impl.source_file,
                    source_sha256=impl.source_sha256,
                    current=impl.version in current,
                )
                for impl in versions.registry()
            ]
        )

    async def CommitServerSeed(
        self, request: pb.CommitServerSeedRequest, context: grpc.aio.ServicerContext
    ) -> pb.CommitServerSeedResponse:
        c = await self._rounds.commit(
            text_field("fair_key", request.fair_key), authenticated_caller()
        )
        return pb.CommitServerSeedResponse(
            fair_key=c.fair_key, server_seed_commitment=c.commitment, next_nonce=c.next_nonce
        )

    async def RevealServerSeed(
        self, request: pb.RevealServerSeedRequest, context: grpc.aio.ServicerContext
    ) -> pb.RevealServerSeedResponse:
        revealed = await self._rounds.reveal(
            text_field("fair_key", request.fair_key), authenticated_caller()
        )
        return pb.RevealServerSeedResponse(
            fair_key=revealed.fair_key,
            revealed_server_seed=revealed.server_seed.hex(),
            revealed_commitment=revealed.commitment,
            rounds=revealed.rounds,
            server_seed_commitment=revealed.next.commitment,
        )


async def build(runtime: ServiceRuntime) -> None:
    settings = domain_config(runtime.config, RngSettings)
    if settings.generator_version not in draws.GENERATOR_VERSIONS:
        raise ConfigError(f"rng.generator_version: unknown {settings.generator_version!r}")
    if settings.sampling_version not in versions.SAMPLERS:
        raise ConfigError(f"rng.sampling_version: unknown {settings.sampling_version!r}")
    ensure_seal_key(settings.seal_key_file)
    try:
        sealer = Sealer(settings.seal_key_file, settings.retired_seal_key_files)
    except (ValueError, SecretFileError) as exc:
        raise ConfigError(f"rng seal keys: {exc}") from None
    runtime.log.info("seal keys", sealing=sealer.key_id, held=list(sealer.key_ids))
    verdict_log.ensure_signing_key(settings.signing_key_file, settings.public_key_file)
    health = RngHealth(
        ChaChaDrbg(reseed_interval=settings.reseed_interval),
        force_fail=settings.self_test_fail,
    )
    if health.failure is not None:
        runtime.log.error("rng self-test failed", detail=health.failure)
    # NOT_SERVING while the generator is unhealthy; draws are refused as well.
    runtime.readiness.add_probe("rng_self_test", health.probe)
    engine = runtime.database()
    rounds = Rounds(
        engine,
        sealer,
        health,
        generator_version=settings.generator_version,
        sampling_version=settings.sampling_version,
    )
    runtime.add_service(
        pb.DESCRIPTOR.services_by_name["RngService"],
        RngService(rounds),
        rng_pb2_grpc.add_RngServiceServicer_to_server,
    )
    runtime.add_background(
        ChainCheckpointer(
            engine,
            SCHEMA,
            settings.signing_key_file,
            settings.checkpoint_dir,
            settings.checkpoint_interval_seconds,
        )
    )
