"""A round as the games service records it, step by step, and the archived record it ends as
(pure: the canonical record and its hash, which the archive chain holds)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.games.catalog import canonical_json


class State(enum.StrEnum):
    OPEN = "OPEN"  # checked, journalled; the RNG round may be open; no debit known
    DEBITED = "DEBITED"  # the wallet took the stake
    DRAWN = "DRAWN"  # the outcome is drawn and recorded; the payout is owed
    COMPLETED = "COMPLETED"  # settled and archived
    VOIDED = "VOIDED"  # never drawn: the stake rolled back (or never taken), archived


TERMINAL = frozenset({State.COMPLETED, State.VOIDED})


def bet_transaction_id(round_id: uuid.UUID) -> str:
    """The wallet request_id of the round's stake: one per round, whoever posts it."""
    return f"{round_id}:bet"


def win_transaction_id(round_id: uuid.UUID) -> str:
    return f"{round_id}:win"


def rollback_transaction_id(round_id: uuid.UUID) -> str:
    return f"{round_id}:rollback"


def fair_key(player_id: str, game_id: str) -> str:
    """A player's provably-fair seed pair is per game."""
    return f"{player_id}/{game_id}"


def request_hash(session_id: str, game_id: str, bet: Mapping[str, Any]) -> bytes:
    """What a PlayRound request_id stands for: the same key with another bet is a mismatch."""
    return hashlib.sha256(
        canonical_json({"session_id": session_id, "game_id": game_id, "bet": bet})
    ).digest()


@dataclass(frozen=True)
class RoundRecord:
    player_id: str
    round_id: uuid.UUID
    request_id: str
    request_hash: bytes
    session_id: str
    game_id: str
    math_version: str
    currency: str
    country: str
    bet: dict[str, Any]
    stake_minor: int
    bet_verdict_id: str
    client_seed: str | None
    state: State
    open_time: dt.datetime
    rng_round_id: uuid.UUID | None = None
    rng_generator: str | None = None
    rng_sampling: str | None = None
    fair_commitment: str | None = None
    fair_nonce: int | None = None
    bet_transaction_id: str | None = None
    settle_transaction_id: str | None = None
    draws: tuple[int, ...] | None = None
    outcome: dict[str, Any] | None = None
    payout_minor: int | None = None
    balance_after_minor: int | None = None
    void_reason: str | None = None
    close_time: dt.datetime | None = None

    def but(self, **changes: Any) -> RoundRecord:
        return dataclasses.replace(self, **changes)

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL

    def game_inputs(self) -> bytes:
        return game_inputs(round_fields(self))


def game_inputs(fields: Mapping[str, Any]) -> bytes:
    """What the RNG binds into a round's stream and keeps in its audit chain: the round, its
    player and its bet (from the round's fields or its archived record), so the RNG's record
    also vouches for the archived bet."""
    return canonical_json(
        {
            "round_id": fields["round_id"],
            "player_id": fields["player_id"],
            "game_id": fields["game_id"],
            "math_version": fields["math_version"],
            "currency": fields["currency"],
            "bet": fields["bet"],
        }
    )


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds")


def archive_record(r: RoundRecord) -> dict[str, Any]:
    """The round as archived: every fact a regulator or a dispute needs, as canonical JSON."""
    if r.close_time is None or not r.finished:
        raise ValueError("only a finished round is archived")
    return round_fields(r)


def round_fields(r: RoundRecord) -> dict[str, Any]:
    """The round in the archive's shape, finished or not (an unfinished one has no close
    time yet and no payout)."""
    return {
        "round_id": str(r.round_id),
        "player_id": r.player_id,
        "session_id": r.session_id,
        "request_id": r.request_id,
        "game_id": r.game_id,
        "math_version": r.math_version,
        "state": r.state.value,
        "currency": r.currency,
        "country": r.country,
        "bet": r.bet,
        "stake_minor": r.stake_minor,
        "payout_minor": r.payout_minor if r.state is State.COMPLETED else 0,
        "outcome": r.outcome,
        "draws": list(r.draws) if r.draws is not None else None,
        "rng": {
            "round_id": str(r.rng_round_id) if r.rng_round_id else None,
            "generator": r.rng_generator,
            "sampling": r.rng_sampling,
        },
        "fair": (
            {"commitment": r.fair_commitment, "client_seed": r.client_seed, "nonce": r.fair_nonce}
            if r.client_seed
            else None
        ),
        "bet_verdict_id": r.bet_verdict_id,
        "bet_transaction_id": r.bet_transaction_id,
        "settle_transaction_id": r.settle_transaction_id,
        "balance_after_minor": r.balance_after_minor,
        "void_reason": r.void_reason,
        "open_time": _iso(r.open_time),
        "close_time": _iso(r.close_time) if r.close_time else None,
    }


def record_hash(record: Mapping[str, Any]) -> bytes:
    return hashlib.sha256(canonical_json(record)).digest()
