"""What an auditor asks of the archive: replay one round (re-derive its draws at the RNG,
recompute its outcome under its math version, check its record against its hash and the
chain), and verify the archive over a time range against the chain (altered, missing and
unrecorded rounds).

A replay reads the archived record as evidence, not as trusted input: whatever in it or in
the RNG's records cannot be replayed (a round id that is no id, an unknown math version, a
bet that does not parse, a seed the RNG cannot unseal) is a finding in the report's
problems, never a failed replay. Only an RNG that cannot be reached fails it (retry)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from services.games import catalog, store
from services.games.rounds import game_inputs, record_hash, round_fields
from services.games.upstreams import Refused, RngClient
from services.runtime import verdict_log
from services.runtime.errors import DomainError, NotFound

# What reading a malformed record (or resolving draws that do not fit its bet) can raise.
_UNREADABLE = (DomainError, KeyError, IndexError, TypeError, ValueError)


class RoundNotFound(NotFound):
    def __init__(self, round_id: str) -> None:
        super().__init__("ROUND_NOT_FOUND", "no such round for this player", {"round_id": round_id})


@dataclass
class ReplayReport:
    record: dict[str, Any]
    digest: bytes
    # The round as the journal holds it (its fields in the archive's shape): what is shown
    # when the archived record cannot even be read as a round.
    journal: dict[str, Any]
    recomputed_draws: tuple[int, ...] = ()
    # The game the recomputed outcome is of (its math version's).
    recomputed_game_id: str = ""
    recomputed_outcome: dict[str, Any] | None = None
    recomputed_payout: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class ArchiveProblem:
    kind: str
    round_id: str
    detail: str


@dataclass
class ArchiveReport:
    rounds_checked: int
    chain_length: int
    problems: list[ArchiveProblem]


async def _chain_hash(engine: AsyncEngine, round_id: uuid.UUID) -> str | None:
    async with engine.begin() as conn:
        stored = await verdict_log.get(conn, store.SCHEMA, store.archive_chain_id(round_id))
    return None if stored is None else str(stored.inputs.get("record_hash"))


def _why(exc: BaseException) -> str:
    reason = getattr(exc, "reason", "")
    return f"{reason}: {exc}" if reason else f"{type(exc).__name__}: {exc}"


async def replay(
    engine: AsyncEngine, rng: RngClient, player_id: str, round_id: uuid.UUID
) -> ReplayReport:
    async with engine.begin() as conn:
        journal = await store.get(conn, player_id, round_id)
        if journal is None or journal.close_time is None:
            raise RoundNotFound(str(round_id))
        found = await store.archived(conn, player_id, round_id, journal.close_time)
    if found is None:
        raise RoundNotFound(str(round_id))
    record, digest = found
    report = ReplayReport(record, digest, round_fields(journal))
    if record_hash(record) != digest:
        report.problems.append("the archived record does not hash to its stored hash")
    chained = await _chain_hash(engine, round_id)
    if chained is None:
        report.problems.append("the archive chain has no record of this round")
    elif chained != digest.hex():
        report.problems.append("the archive chain holds another hash for this round")
    rng_section = record.get("rng")
    rng_round = rng_section.get("round_id") if isinstance(rng_section, dict) else None
    if not rng_round:
        if record.get("state") != "VOIDED":
            report.problems.append("the archived round names no RNG round, yet was not voided")
        return report  # voided before the RNG opened: nothing was drawn
    try:
        rng_round_id = uuid.UUID(str(rng_round))
    except ValueError:
        report.problems.append(f"the archived RNG round id {rng_round!r} is not a round id")
        return report
    try:
        replayed = await rng.replay(rng_round_id)
    except Refused as exc:
        # The RNG's answer about its own records (a seed that does not unseal, a round it
        # does not have): a finding. Unreachable (DependencyUnavailable) fails the replay.
        report.problems.append(
            f"the RNG cannot replay round {rng_round_id}: {exc.reason}: {exc.message}"
        )
        return report
    report.recomputed_draws = replayed.recomputed
    if not replayed.matches:
        report.problems.append("the RNG's recomputed draws differ from its audit records")
    try:
        inputs = game_inputs(record)
    except _UNREADABLE as exc:
        report.problems.append(f"the archived bet cannot be read: {_why(exc)}")
    else:
        if replayed.game_inputs != inputs:
            report.problems.append(
                "the archived bet differs from the bet the RNG round was opened with"
            )
    try:
        archived_draws = tuple(int(d) for d in record.get("draws") or ())
    except _UNREADABLE:
        report.problems.append("the archived draws are not a list of integers")
        archived_draws = ()
    if archived_draws != replayed.recomputed:
        report.problems.append(
            f"archived draws {list(archived_draws)} differ from recomputed"
            f" {list(replayed.recomputed)}"
        )
    if not replayed.recomputed:
        return report
    try:
        math = catalog.by_version(str(record.get("math_version")))
        bet = math.parse_bet(record.get("bet"))  # type: ignore[arg-type]
    except _UNREADABLE as exc:
        report.problems.append(f"the outcome cannot be recomputed: {_why(exc)}")
        return report
    try:
        outcome = math.resolve(bet, replayed.recomputed)
        recomputed = math.outcome_json(outcome)
    except _UNREADABLE as exc:
        report.problems.append(
            f"the recomputed draws do not resolve under {math.version}: {_why(exc)}"
        )
        return report
    report.recomputed_game_id = math.game_id
    report.recomputed_outcome = recomputed
    report.recomputed_payout = outcome.payout
    if record.get("state") == "COMPLETED":
        if recomputed != record.get("outcome"):
            report.problems.append("the archived outcome differs from the recomputed one")
        if outcome.payout != record.get("payout_minor"):
            report.problems.append(
                f"archived payout {record.get('payout_minor')} differs from recomputed"
                f" {outcome.payout}"
            )
    return report


async def verify_archive(
    engine: AsyncEngine, public_key: Path, start: dt.datetime, end: dt.datetime
) -> ArchiveReport:
    problems: list[ArchiveProblem] = []
    async with engine.begin() as conn:
        chain = await verdict_log.verify(conn, store.SCHEMA, public_key)
        rows = await store.archive_rows(conn, start, end)
        records = await store.chain_records(conn, start, end)
    for p in chain.problems:
        problems.append(ArchiveProblem(p.kind, "", f"chain seq {p.seq}: {p.detail}"))
    seen: set[uuid.UUID] = set()
    for round_id, record, digest, player_id, close_time, state in rows:
        seen.add(round_id)
        rid = str(round_id)
        if record_hash(record) != digest:
            problems.append(
                ArchiveProblem("RECORD_ALTERED", rid, "content does not hash to its hash")
            )
        elif (record.get("round_id"), record.get("player_id"), record.get("state")) != (
            rid,
            player_id,
            state,
        ) or dt.datetime.fromisoformat(record["close_time"]) != close_time:
            problems.append(
                ArchiveProblem("RECORD_ALTERED", rid, "indexed columns disagree with the record")
            )
        chained = records.get(round_id)
        if chained is None:
            problems.append(ArchiveProblem("ROUND_UNRECORDED", rid, "not in the archive chain"))
        elif chained[1].get("record_hash") != digest.hex():
            problems.append(
                ArchiveProblem("RECORD_ALTERED", rid, "the chain holds another hash for it")
            )
    for round_id in records.keys() - seen:
        problems.append(
            ArchiveProblem("ROUND_MISSING", str(round_id), "chained but not in the archive")
        )
    return ArchiveReport(len(rows), chain.rows_checked, problems)
