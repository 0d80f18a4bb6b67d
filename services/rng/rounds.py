"""Rounds: open (fresh sealed seed, versions fixed), draw, close, replay; provably-fair
server seeds. One transaction per operation, with its audit record appended to the chain
(``<schema>.verdicts``, the verdict-log machinery) in the same transaction.

Audit records (``decision`` RECORDED, ``rule_version`` = sampling version,
``config_version`` = generator version, ``inputs`` below; ids are UUIDv5 of the round id so
replay can find them):

* ROUND_OPENED  ``{round_id, game_id, game_inputs (hex), sealed_seed_sha256, seal_key_id,
  fair: {fair_key, server_seed_id, commitment, client_seed, nonce} | null}``
* ROUND_DRAW    ``{round_id, draw_index, specs, values, stream_position}``
* ROUND_CLOSED  ``{round_id, draw_count}``
* SERVER_SEED_COMMITTED / SERVER_SEED_REVEALED ``{fair_key, server_seed_id, commitment
  [, server_seed (hex, on reveal), rounds]}``
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.rng import draws, fair
from services.rng.draws import Spec, StreamSource
from services.rng.sealing import ROUND_SEED, SERVER_SEED, Sealer, SealError, SealKeyUnknown
from services.rng.selftest import RngHealth
from services.runtime import verdict_log
from services.runtime.errors import Code, DomainError, IdempotencyMismatch, InvalidArgument

SCHEMA = "rng"
ROUND_SEED_BYTES = 32
_AUDIT_NS = uuid.UUID("6b1d1c9e-4a3c-5d0b-9f5e-0c6a2b7e3d41")
_ROUND_COLUMNS = (
    "round_id, request_id, caller, game_id, game_inputs, generator_version, sampling_version,"
    " sealed_seed, seal_key_id, server_seed_id, client_seed, nonce, state, draw_count,"
    " stream_position, open_time, close_time"
)
_R_COLUMNS = ", ".join("r." + c.strip() for c in _ROUND_COLUMNS.split(","))


class RoundNotFound(DomainError):
    code = Code.NOT_FOUND

    def __init__(self, round_id: str) -> None:
        super().__init__("ROUND_NOT_FOUND", f"no round {round_id}", {"round_id": round_id})


class RoundClosed(DomainError):
    def __init__(self, round_id: uuid.UUID) -> None:
        super().__init__("ROUND_CLOSED", f"round {round_id} is closed", {"round_id": str(round_id)})


class RngUnhealthy(DomainError):
    code = Code.UNAVAILABLE

    def __init__(self, detail: str) -> None:
        super().__init__(
            "RNG_UNHEALTHY", "the RNG is unhealthy and refuses to draw", {"detail": detail}
        )


class UnknownAlgorithmVersion(DomainError):
    def __init__(self, version: str) -> None:
        super().__init__(
            "UNKNOWN_ALGORITHM_VERSION",
            f"algorithm version {version} is not implemented by this build",
            {"version": version},
        )


class ServerSeedNotFound(DomainError):
    def __init__(self, fair_key: str) -> None:
        super().__init__(
            "SERVER_SEED_NOT_FOUND",
            f"fair key {fair_key} has no committed server seed: call CommitServerSeed first",
            {"fair_key": fair_key},
        )


class ServerSeedInUse(DomainError):
    def __init__(self, fair_key: str) -> None:
        super().__init__(
            "SERVER_SEED_IN_USE",
            f"fair key {fair_key} has open rounds: close them before revealing the seed",
            {"fair_key": fair_key},
        )


class DrawOutOfOrder(DomainError):
    def __init__(self, round_id: uuid.UUID, next_index: int) -> None:
        super().__init__(
            "DRAW_OUT_OF_ORDER",
            f"round {round_id}'s next draw is {next_index}",
            {"round_id": str(round_id), "next_draw_index": next_index},
        )


class SeedUnsealable(DomainError):
    """A stored sealed seed does not open: altered, or sealed under a key this RNG does not
    hold. A finding about the stored record (a replay reports it), not a passing fault:
    asking again gives the same answer."""

    code = Code.FAILED_PRECONDITION

    def __init__(self, record_id: uuid.UUID, error: SealError) -> None:
        metadata = {"round_id": str(record_id)}
        if isinstance(error, SealKeyUnknown):
            metadata["seal_key_id"] = error.key_id
            why = f"it was sealed under key {error.key_id}, which this RNG does not hold"
        else:
            why = "it was altered, or sealed under another key than the one recorded"
        super().__init__(
            "SEED_UNSEALABLE", f"the sealed seed of {record_id} does not open: {why}", metadata
        )


@dataclass(frozen=True)
class FairInfo:
    fair_key: str
    server_seed_id: uuid.UUID
    commitment: str
    client_seed: str
    nonce: int


@dataclass(frozen=True)
class Round:
    round_id: uuid.UUID
    request_id: str
    game_id: str
    game_inputs: bytes
    generator_version: str
    sampling_version: str
    sealed_seed: bytes | None
    seal_key_id: str | None
    fair: FairInfo | None
    state: str
    draw_count: int
    stream_position: int
    open_time: datetime
    close_time: datetime | None


@dataclass(frozen=True)
class DrawRecord:
    draw_index: int
    specs: list[Spec]
    values: list[list[int]]


@dataclass(frozen=True)
class Replay:
    round: Round
    archived: list[DrawRecord]
    recomputed: list[DrawRecord]
    problems: list[str]

    @property
    def matches(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class Commitment:
    fair_key: str
    commitment: str
    next_nonce: int


@dataclass(frozen=True)
class Revealed:
    fair_key: str
    server_seed: bytes
    commitment: str
    rounds: int
    next: Commitment


def audit_id(round_id: uuid.UUID, what: str) -> uuid.UUID:
    return uuid.uuid5(_AUDIT_NS, f"{round_id}/{what}")


def _opened_inputs(r: Round) -> dict[str, Any]:
    return {
        "round_id": str(r.round_id),
        "game_id": r.game_id,
        "game_inputs": r.game_inputs.hex(),
        "sealed_seed_sha256": (
            hashlib.sha256(r.sealed_seed).hexdigest() if r.sealed_seed is not None else None
        ),
        "seal_key_id": r.seal_key_id,
        "fair": None
        if r.fair is None
        else {
            "fair_key": r.fair.fair_key,
            "server_seed_id": str(r.fair.server_seed_id),
            "commitment": r.fair.commitment,
            "client_seed": r.fair.client_seed,
            "nonce": r.fair.nonce,
        },
    }


class Rounds:
    def __init__(
        self,
        engine: AsyncEngine,
        sealer: Sealer,
        health: RngHealth,
        *,
        generator_version: str,
        sampling_version: str,
        schema: str = SCHEMA,
    ) -> None:
        draws.sampler(sampling_version)  # refuses an unimplemented version at start
        if generator_version not in draws.GENERATOR_VERSIONS:
            raise draws.UnknownVersion(generator_version)
        self._engine = engine
        self._sealer = sealer
        self._health = health
        self.generator_version = generator_version
        self.sampling_version = sampling_version
        self._schema = schema

    # -- helpers ------------------------------------------------------------------------

    def _fresh(self, n: int) -> bytes:
        try:
            return self._health.generate(n)
        except Exception as exc:  # DrbgFailure: fail closed
            raise RngUnhealthy(str(exc)) from None

    def _require_healthy(self) -> None:
        if self._health.failure is not None:
            raise RngUnhealthy(self._health.failure)

    async def _append(
        self,
        conn: AsyncConnection,
        records: Sequence[tuple[uuid.UUID, str, dict[str, Any]]],
        caller: str,
        generator: str,
        sampling_version: str,
    ) -> None:
        """Append (id, action, inputs) records to the audit chain, in one statement."""
        now = datetime.now(UTC)
        await verdict_log.append_many(
            conn,
            self._schema,
            [
                verdict_log.Verdict(
                    verdict_id=verdict_id,
                    player_id=None,
                    action=action,
                    decision="RECORDED",
                    reasons=[],
                    inputs=inputs,
                    rule_version=sampling_version,
                    config_version=generator,
                    caller=caller,
                    create_time=now,
                )
                for verdict_id, action, inputs in records
            ],
        )

    async def _load(self, conn: AsyncConnection, round_id: uuid.UUID, *, lock: bool) -> Round:
        s = self._schema
        row = (
            await conn.execute(
                text(
                    f"SELECT {_R_COLUMNS}, ss.fair_key, ss.commitment FROM {s}.rounds r"  # noqa: S608
                    f" LEFT JOIN {s}.server_seeds ss USING (server_seed_id)"
                    f" WHERE r.round_id = :id{' FOR UPDATE OF r' if lock else ''}"
                ),
                {"id": round_id},
            )
        ).one_or_none()
        if row is None:
            raise RoundNotFound(str(round_id))
        return _round(row)

    def _source(self, r: Round, conn_seed: bytes | None = None) -> StreamSource:
        try:
            if r.fair is None:
                assert r.sealed_seed is not None
                # Opened with the key it was sealed under (earlier keys stay in the keyring).
                seed = self._sealer.open(ROUND_SEED, r.round_id, r.sealed_seed, r.seal_key_id)
                return StreamSource(r.generator_version, seed, r.game_id, r.game_inputs)
            assert conn_seed is not None
            return StreamSource(
                r.generator_version, conn_seed, client_seed=r.fair.client_seed, nonce=r.fair.nonce
            )
        except SealError as exc:
            raise SeedUnsealable(r.round_id, exc) from None

    async def _server_seed(self, conn: AsyncConnection, server_seed_id: uuid.UUID) -> bytes:
        sealed, key_id = (
            await conn.execute(
                text(
                    f"SELECT sealed_seed, seal_key_id FROM {self._schema}.server_seeds"  # noqa: S608
                    " WHERE server_seed_id = :id"
                ),
                {"id": server_seed_id},
            )
        ).one()
        try:
            return self._sealer.open(SERVER_SEED, server_seed_id, bytes(sealed), key_id)
        except SealError as exc:
            raise SeedUnsealable(server_seed_id, exc) from None

    async def _stream_source(self, conn: AsyncConnection, r: Round) -> StreamSource:
        if r.fair is None:
            return self._source(r)
        return self._source(r, await self._server_seed(conn, r.fair.server_seed_id))

    # -- operations ----------------------------------------------------------------------

    async def open(
        self,
        *,
        request_id: str,
        game_id: str,
        game_inputs: bytes,
        fair_key: str,
        client_seed: str,
        caller: str,
    ) -> Round:
        s = self._schema
        async with self._engine.begin() as conn:
            existing = (
                await conn.execute(
                    text(f"SELECT round_id FROM {s}.rounds WHERE request_id = :rid"),  # noqa: S608
                    {"rid": request_id},
                )
            ).scalar_one_or_none()
            if existing is not None:
                r = await self._load(conn, existing, lock=False)
                same_fair = (r.fair.fair_key, r.fair.client_seed) if r.fair else ("", "")
                if (r.game_id, r.game_inputs, same_fair) != (
                    game_id,
                    game_inputs,
                    (fair_key, client_seed),
                ):
                    raise IdempotencyMismatch(request_id)
                return r
            # Only a new round needs a healthy generator: finding one opened before does
            # not, so a caller recovering its round learns its id whatever the RNG's state.
            self._require_healthy()
            round_id = uuid.uuid4()
            sealed: bytes | None = None
            fair_info: FairInfo | None = None
            generator = self.generator_version
            if fair_key:
                row = (
                    await conn.execute(
                        text(
                            f"UPDATE {s}.server_seeds SET next_nonce = next_nonce + 1"  # noqa: S608
                            " WHERE fair_key = :k AND reveal_time IS NULL"
                            " RETURNING server_seed_id, commitment, next_nonce - 1"
                        ),
                        {"k": fair_key},
                    )
                ).one_or_none()
                if row is None:
                    raise ServerSeedNotFound(fair_key)
                fair_info = FairInfo(fair_key, row[0], row[1], client_seed, int(row[2]))
                generator = fair.FAIR_VERSION
            else:
                sealed = self._sealer.seal(ROUND_SEED, round_id, self._fresh(ROUND_SEED_BYTES))
            row = (
                await conn.execute(
                    text(
                        f"INSERT INTO {s}.rounds (round_id, request_id, caller, game_id,"  # noqa: S608
                        " game_inputs, generator_version, sampling_version, sealed_seed,"
                        " seal_key_id, server_seed_id, client_seed, nonce)"
                        " VALUES (:id, :rid, :caller, :game, :inputs, :gen, :samp, :sealed,"
                        " :kid, :ssid, :cs, :nonce) ON CONFLICT (request_id) DO NOTHING"
                        " RETURNING round_id"
                    ),
                    {
                        "id": round_id,
                        "rid": request_id,
                        "caller": caller,
                        "game": game_id,
                        "inputs": game_inputs,
                        "gen": generator,
                        "samp": self.sampling_version,
                        "sealed": sealed,
                        "kid": self._sealer.key_id if sealed is not None else None,
                        "ssid": fair_info.server_seed_id if fair_info else None,
                        "cs": client_seed if fair_info else None,
                        "nonce": fair_info.nonce if fair_info else None,
                    },
                )
            ).one_or_none()
            if row is None:  # a concurrent retry with the same request_id won
                await conn.rollback()
                return await self.open(
                    request_id=request_id,
                    game_id=game_id,
                    game_inputs=game_inputs,
                    fair_key=fair_key,
                    client_seed=client_seed,
                    caller=caller,
                )
            r = await self._load(conn, round_id, lock=False)
            await self._append(
                conn,
                [(audit_id(round_id, "opened"), "ROUND_OPENED", _opened_inputs(r))],
                caller,
                r.generator_version,
                r.sampling_version,
            )
            return r

    async def draw(
        self,
        round_id: uuid.UUID,
        draw_index: int,
        specs: Sequence[Spec],
        caller: str,
        *,
        close: bool = False,
    ) -> tuple[Round, DrawRecord]:
        """Draw `draw_index` (a retry of a draw already made returns it); with `close`, the
        round closes in the same transaction, as `close` would. A draw already made is
        returned whatever the RNG's health; a new one needs it healthy."""
        async with self._engine.begin() as conn:
            r = await self._load(conn, round_id, lock=True)
            if draw_index < r.draw_count:
                archived = await self._archived_draw(conn, round_id, draw_index)
                if archived is None:
                    raise DrawOutOfOrder(round_id, r.draw_count)
                if [s.to_json() for s in archived.specs] != [s.to_json() for s in specs]:
                    raise InvalidArgument(
                        "specs", f"draw {draw_index} was already made with other specs"
                    )
                return r, archived
            if draw_index != r.draw_count:
                raise DrawOutOfOrder(round_id, r.draw_count)
            if r.state != "OPEN":
                raise RoundClosed(round_id)
            self._require_healthy()
            try:
                source = await self._stream_source(conn, r)
                stream = source.open(r.stream_position)
                values = draws.compute(stream, draws.sampler(r.sampling_version), specs)
            except draws.UnknownVersion as exc:
                raise UnknownAlgorithmVersion(exc.version) from None
            record = DrawRecord(draw_index, list(specs), values)
            closing = ", state = 'CLOSED', close_time = now()" if close else ""
            await conn.execute(
                text(
                    f"UPDATE {self._schema}.rounds SET draw_count = draw_count + 1,"  # noqa: S608
                    f" stream_position = :pos{closing} WHERE round_id = :id"
                ),
                {"pos": stream.position, "id": round_id},
            )
            drawn = {
                "round_id": str(round_id),
                "draw_index": draw_index,
                "specs": [s.to_json() for s in specs],
                "values": values,
                "stream_position": stream.position,
            }
            records = [(audit_id(round_id, f"draw/{draw_index}"), "ROUND_DRAW", drawn)]
            if close:
                closed = {"round_id": str(round_id), "draw_count": r.draw_count + 1}
                records.append((audit_id(round_id, "closed"), "ROUND_CLOSED", closed))
            await self._append(conn, records, caller, r.generator_version, r.sampling_version)
            return r, record

    async def _archived_draw(
        self, conn: AsyncConnection, round_id: uuid.UUID, index: int
    ) -> DrawRecord | None:
        stored = await verdict_log.get(conn, self._schema, audit_id(round_id, f"draw/{index}"))
        if stored is None:
            return None
        return DrawRecord(
            index,
            [draws.spec_from_json(s) for s in stored.inputs["specs"]],
            [[int(v) for v in values] for values in stored.inputs["values"]],
        )

    async def close(self, round_id: uuid.UUID, caller: str) -> Round:
        async with self._engine.begin() as conn:
            r = await self._load(conn, round_id, lock=True)
            if r.state == "CLOSED":
                return r
            await conn.execute(
                text(
                    f"UPDATE {self._schema}.rounds SET state = 'CLOSED', close_time = now()"  # noqa: S608
                    " WHERE round_id = :id"
                ),
                {"id": round_id},
            )
            await self._append(
                conn,
                [
                    (
                        audit_id(round_id, "closed"),
                        "ROUND_CLOSED",
                        {"round_id": str(round_id), "draw_count": r.draw_count},
                    )
                ],
                caller,
                r.generator_version,
                r.sampling_version,
            )
            return await self._load(conn, round_id, lock=False)

    async def get(self, round_id: uuid.UUID) -> Round:
        async with self._engine.begin() as conn:
            return await self._load(conn, round_id, lock=False)

    async def replay(self, round_id: uuid.UUID) -> Replay:
        """Recompute every draw from the sealed seed and the stored round under its recorded
        versions; compare with the audit chain's records of the opening and of each draw."""
        async with self._engine.begin() as conn:
            r = await self._load(conn, round_id, lock=False)
            problems: list[str] = []
            opened = await verdict_log.get(conn, self._schema, audit_id(round_id, "opened"))
            if opened is None:
                problems.append("the audit chain has no record of the round's opening")
            else:
                if opened.inputs != _opened_inputs(r):
                    problems.append("the stored round differs from its audit record")
                if (opened.config_version, opened.rule_version) != (
                    r.generator_version,
                    r.sampling_version,
                ):
                    problems.append("the round's versions differ from its audit record")
            archived: list[DrawRecord] = []
            for index in range(r.draw_count):
                record = await self._archived_draw(conn, round_id, index)
                if record is None:
                    problems.append(f"draw {index} is missing from the audit chain")
                    break
                archived.append(record)
            try:
                source = await self._stream_source(conn, r)
                values = draws.replay(source, r.sampling_version, [a.specs for a in archived])
            except draws.UnknownVersion as exc:
                raise UnknownAlgorithmVersion(exc.version) from None
            recomputed = [
                DrawRecord(a.draw_index, a.specs, v) for a, v in zip(archived, values, strict=True)
            ]
            for a, c in zip(archived, recomputed, strict=True):
                if a.values != c.values:
                    problems.append(f"draw {a.draw_index} recomputes to different values")
            return Replay(r, archived, recomputed, problems)

    # -- provably fair -------------------------------------------------------------------

    async def _new_server_seed(
        self, conn: AsyncConnection, fair_key: str, caller: str
    ) -> Commitment:
        seed = self._fresh(fair.SERVER_SEED_BYTES)
        seed_id = uuid.uuid4()
        digest = fair.commitment(seed)
        await conn.execute(
            text(
                f"INSERT INTO {self._schema}.server_seeds (server_seed_id, fair_key,"  # noqa: S608
                " sealed_seed, seal_key_id, commitment) VALUES (:id, :k, :sealed, :kid, :c)"
            ),
            {
                "id": seed_id,
                "k": fair_key,
                "sealed": self._sealer.seal(SERVER_SEED, seed_id, seed),
                "kid": self._sealer.key_id,
                "c": digest,
            },
        )
        await self._append(
            conn,
            [
                (
                    audit_id(seed_id, "committed"),
                    "SERVER_SEED_COMMITTED",
                    {"fair_key": fair_key, "server_seed_id": str(seed_id), "commitment": digest},
                )
            ],
            caller,
            fair.FAIR_VERSION,
            self.sampling_version,
        )
        return Commitment(fair_key, digest, 0)

    async def commit(self, fair_key: str, caller: str) -> Commitment:
        self._require_healthy()
        for _ in range(2):
            try:
                async with self._engine.begin() as conn:
                    row = (
                        await conn.execute(
                            text(
                                f"SELECT commitment, next_nonce FROM {self._schema}.server_seeds"  # noqa: S608
                                " WHERE fair_key = :k AND reveal_time IS NULL"
                            ),
                            {"k": fair_key},
                        )
                    ).one_or_none()
                    if row is not None:
                        return Commitment(fair_key, row[0], int(row[1]))
                    return await self._new_server_seed(conn, fair_key, caller)
            except IntegrityError:  # a concurrent commit created it first: read it
                continue
        raise ServerSeedNotFound(fair_key)

    async def reveal(self, fair_key: str, caller: str) -> Revealed:
        self._require_healthy()
        s = self._schema
        async with self._engine.begin() as conn:
            row = (
                await conn.execute(
                    text(
                        f"SELECT server_seed_id, commitment, next_nonce FROM {s}.server_seeds"  # noqa: S608
                        " WHERE fair_key = :k AND reveal_time IS NULL FOR UPDATE"
                    ),
                    {"k": fair_key},
                )
            ).one_or_none()
            if row is None:
                raise ServerSeedNotFound(fair_key)
            seed_id, digest, used = row[0], row[1], int(row[2])
            open_rounds = (
                await conn.execute(
                    text(
                        f"SELECT count(*) FROM {s}.rounds"  # noqa: S608
                        " WHERE server_seed_id = :id AND state = 'OPEN'"
                    ),
                    {"id": seed_id},
                )
            ).scalar_one()
            if open_rounds:
                raise ServerSeedInUse(fair_key)
            seed = await self._server_seed(conn, seed_id)
            await conn.execute(
                text(
                    f"UPDATE {s}.server_seeds SET reveal_time = now()"  # noqa: S608
                    " WHERE server_seed_id = :id"
                ),
                {"id": seed_id},
            )
            await self._append(
                conn,
                [
                    (
                        audit_id(seed_id, "revealed"),
                        "SERVER_SEED_REVEALED",
                        {
                            "fair_key": fair_key,
                            "server_seed_id": str(seed_id),
                            "commitment": digest,
                            "server_seed": seed.hex(),
                            "rounds": used,
                        },
                    )
                ],
                caller,
                fair.FAIR_VERSION,
                self.sampling_version,
            )
            nxt = await self._new_server_seed(conn, fair_key, caller)
            return Revealed(fair_key, seed, digest, used, nxt)


def _round(row: Any) -> Round:
    fair_info = None
    if row.server_seed_id is not None:
        fair_info = FairInfo(
            row.fair_key, row.server_seed_id, row.commitment, row.client_seed, int(row.nonce)
        )
    return Round(
        round_id=row.round_id,
        request_id=row.request_id,
        game_id=row.game_id,
        game_inputs=bytes(row.game_inputs),
        generator_version=row.generator_version,
        sampling_version=row.sampling_version,
        sealed_seed=None if row.sealed_seed is None else bytes(row.sealed_seed),
        seal_key_id=row.seal_key_id,
        fair=fair_info,
        state=row.state,
        draw_count=int(row.draw_count),
        stream_position=int(row.stream_position),
        open_time=row.open_time,
        close_time=row.close_time,
    )
