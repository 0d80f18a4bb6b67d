"""The compliance, wallet and RNG contracts as the round lifecycle uses them: gRPC clients that
map generated messages to domain values, and upstream failures to the runtime's errors.

A failure is either *final* (the upstream decided: a refusal the round must act on, raised
as `Refused` with the upstream's reason) or *transient* (unreachable, overloaded, timed
out: `DependencyUnavailable`; the round stays where it is and is resumed by a retry with the
same request_id or by the recovery worker)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import grpc

from casino.common.v1 import money_pb2
from casino.compliance.v1 import compliance_pb2, compliance_pb2_grpc
from casino.rng.v1 import rng_pb2, rng_pb2_grpc
from casino.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from services.runtime.errors import Code, DependencyUnavailable, DomainError
from services.runtime.messages import timestamp
from services.runtime.status import error_info

T = TypeVar("T")

_TRANSIENT = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.CANCELLED,
    # An internal failure is no answer: whether the call took effect is unknown, so it is
    # retried under the same key, never taken for a final refusal (which voids a round).
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    # A transaction that lost a conflict was rolled back whole: retried, like an outage.
    grpc.StatusCode.ABORTED,
}


class Refused(DomainError):
    """An upstream's final refusal: its ErrorInfo reason and metadata, and its status code
    (a DomainError, so one that is not handled reaches our caller as the upstream gave it,
    never as an internal error)."""

    def __init__(
        self,
        service: str,
        code: grpc.StatusCode,
        reason: str,
        message: str,
        metadata: Mapping[str, str],
    ) -> None:
        super().__init__(
            reason,
            message,
            metadata,
            code=Code[code.name] if code.name in Code.__members__ else Code.FAILED_PRECONDITION,
        )
        self.service = service


async def _call(service: str, call: Awaitable[T]) -> T:
    try:
        return await call
    except grpc.aio.AioRpcError as exc:
        raise _failure(service, exc) from None


def _failure(service: str, exc: grpc.aio.AioRpcError) -> Exception:
    info = error_info(exc)
    if exc.code() in _TRANSIENT and (info is None or info.reason != "RNG_UNHEALTHY"):
        return DependencyUnavailable(service)
    if info is None:
        # No ErrorInfo: not one of our services' deliberate answers; a bug between contracts.
        return RuntimeError(f"{service} answered {exc.code().name}: {exc.details()}")
    return Refused(service, exc.code(), info.reason, exc.details() or "", dict(info.metadata))


# ---------------------------------------------------------------------------- compliance


@dataclass(frozen=True)
class BetVerdict:
    allowed: bool
    verdict_id: str
    # Each reason with its metadata, in the verdict's order.
    reasons: tuple[tuple[str, Mapping[str, str]], ...]


@dataclass(frozen=True)
class RealityCheckClock:
    interval_minutes: int
    next_check_time: dt.datetime


_ACTIONS = {"BET": compliance_pb2.ACTION_BET, "GAME_LAUNCH": compliance_pb2.ACTION_GAME_LAUNCH}
_PRODUCTS = {"SLOTS": compliance_pb2.PRODUCT_SLOTS, "TABLE": compliance_pb2.PRODUCT_TABLE}


class ComplianceClient:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = compliance_pb2_grpc.ComplianceServiceStub(channel)

    async def check(
        self,
        *,
        player_id: str,
        action: str,
        amount_minor: int,
        currency: str,
        product: str,
        country: str,
        request_id: str,
    ) -> BetVerdict:
        request = compliance_pb2.CheckActionRequest(
            player_id=player_id,
            action=_ACTIONS[action],
            product=_PRODUCTS[product],
            request_country_code=country,
            request_id=request_id,
        )
        if amount_minor:
            request.amount.CopyFrom(
                money_pb2.Money(amount_minor=amount_minor, currency_code=currency)
            )
        reply = await _call("compliance", self._stub.CheckAction(request))
        verdict = reply.verdict
        return BetVerdict(
            allowed=verdict.decision == compliance_pb2.DECISION_ALLOW,
            verdict_id=verdict.verdict_id,
            reasons=tuple((r.reason, dict(r.metadata)) for r in verdict.reasons),
        )

    async def reality_check(self, player_id: str, session_start: dt.datetime) -> RealityCheckClock:
        reply = await _call(
            "compliance",
            self._stub.GetRealityCheck(
                compliance_pb2.GetRealityCheckRequest(
                    player_id=player_id, session_start_time=timestamp(session_start)
                )
            ),
        )
        return RealityCheckClock(
            reply.interval_minutes, reply.next_check_time.ToDatetime(tzinfo=dt.UTC)
        )


# -------------------------------------------------------------------------------- wallet


@dataclass(frozen=True)
class WalletStep:
    transaction_id: str
    available_minor: int
    # A rollback that found no bet (the wallet recorded a tombstone instead).
    nothing_to_undo: bool = False


def _money(amount: int, currency: str) -> money_pb2.Money:
    return money_pb2.Money(amount_minor=amount, currency_code=currency)


def _step(posting: wallet_pb2.Posting) -> WalletStep:
    return WalletStep(
        posting.transaction.request_id, posting.balance.available_minor, posting.nothing_to_undo
    )


class WalletClient:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = wallet_pb2_grpc.WalletServiceStub(channel)

    async def available(self, player_id: str, currency: str) -> int:
        reply = await _call(
            "wallet",
            self._stub.GetBalance(
                wallet_pb2.GetBalanceRequest(player_id=player_id, currency_code=currency)
            ),
        )
        return int(reply.balance.available_minor)

    async def place_bet(
        self,
        *,
        request_id: str,
        player_id: str,
        amount: int,
        currency: str,
        round_id: str,
        game_id: str,
    ) -> WalletStep:
        reply = await _call(
            "wallet",
            self._stub.PlaceBet(
                wallet_pb2.PlaceBetRequest(
                    request_id=request_id,
                    player_id=player_id,
                    amount=_money(amount, currency),
                    round_id=round_id,
                    game_id=game_id,
                    provider="inhouse",
                )
            ),
        )
        return _step(reply.posting)

    async def settle_win(
        self,
        *,
        request_id: str,
        player_id: str,
        amount: int,
        currency: str,
        round_id: str,
        bet_request_id: str,
        game_id: str,
    ) -> WalletStep:
        reply = await _call(
            "wallet",
            self._stub.SettleWin(
                wallet_pb2.SettleWinRequest(
                    request_id=request_id,
                    player_id=player_id,
                    amount=_money(amount, currency),
                    round_id=round_id,
                    bet_request_id=bet_request_id,
                    game_id=game_id,
                    provider="inhouse",
                )
            ),
        )
        return _step(reply.posting)

    async def rollback_bet(
        self, *, request_id: str, player_id: str, currency: str, bet_request_id: str, round_id: str
    ) -> WalletStep:
        reply = await _call(
            "wallet",
            self._stub.RollbackBet(
                wallet_pb2.RollbackBetRequest(
                    request_id=request_id,
                    player_id=player_id,
                    currency_code=currency,
                    bet_request_id=bet_request_id,
                    round_id=round_id,
                    provider="inhouse",
                )
            ),
        )
        return _step(reply.posting)


# ----------------------------------------------------------------------------------- rng


@dataclass(frozen=True)
class RngRound:
    round_id: uuid.UUID
    generator: str
    sampling: str
    draw_count: int
    fair_commitment: str = ""
    fair_nonce: int | None = None


@dataclass(frozen=True)
class RngReplay:
    matches: bool
    archived: tuple[int, ...]
    recomputed: tuple[int, ...]
    # The game inputs as the RNG recorded them when the round opened.
    game_inputs: bytes


@dataclass(frozen=True)
class FairSeed:
    commitment: str
    next_nonce: int


@dataclass(frozen=True)
class RevealedSeed:
    server_seed: str
    commitment: str
    rounds: int
    next_commitment: str


def _rng_round(r: rng_pb2.Round) -> RngRound:
    fair = r.provably_fair if r.HasField("provably_fair") else None
    return RngRound(
        uuid.UUID(r.round_id),
        r.versions.generator,
        r.versions.sampling,
        r.draw_count,
        fair.server_seed_commitment if fair else "",
        fair.nonce if fair else None,
    )


def _flatten(results: Sequence[rng_pb2.DrawResult]) -> tuple[int, ...]:
    return tuple(v for result in results for v in result.values)


class RngClient:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = rng_pb2_grpc.RngServiceStub(channel)

    async def open_round(
        self, *, request_id: str, game_id: str, game_inputs: bytes, fair_key: str, client_seed: str
    ) -> RngRound:
        reply = await _call(
            "rng",
            self._stub.OpenRound(
                rng_pb2.OpenRoundRequest(
                    request_id=request_id,
                    game_id=game_id,
                    game_inputs=game_inputs,
                    fair_key=fair_key,
                    client_seed=client_seed,
                )
            ),
        )
        return _rng_round(reply.round)

    async def draw(self, round_id: uuid.UUID, ranges: Sequence[int]) -> tuple[int, ...]:
        """The round's first and only draw: one integer in [0, n) per range, in order, closing
        the RNG round with it. A repeat returns the values already drawn; it never draws
        again."""
        specs = [
            rng_pb2.DrawSpec(integers=rng_pb2.IntegerDraw(low=0, high=n - 1, count=1))
            for n in ranges
        ]
        reply = await _call(
            "rng",
            self._stub.Draw(
                rng_pb2.DrawRequest(
                    round_id=str(round_id), specs=specs, draw_index=0, close_round=True
                )
            ),
        )
        return _flatten(reply.results)

    async def close_round(self, round_id: uuid.UUID) -> RngRound:
        reply = await _call(
            "rng", self._stub.CloseRound(rng_pb2.CloseRoundRequest(round_id=str(round_id)))
        )
        return _rng_round(reply.round)

    async def replay(self, round_id: uuid.UUID) -> RngReplay:
        reply = await _call(
            "rng", self._stub.ReplayRound(rng_pb2.ReplayRoundRequest(round_id=str(round_id)))
        )
        return RngReplay(
            reply.matches,
            _flatten(reply.archived),
            _flatten(reply.recomputed),
            reply.round.game_inputs,
        )

    async def commitment(self, fair_key: str) -> FairSeed:
        reply = await _call(
            "rng", self._stub.CommitServerSeed(rng_pb2.CommitServerSeedRequest(fair_key=fair_key))
        )
        return FairSeed(reply.server_seed_commitment, reply.next_nonce)

    async def reveal(self, fair_key: str) -> RevealedSeed:
        reply = await _call(
            "rng", self._stub.RevealServerSeed(rng_pb2.RevealServerSeedRequest(fair_key=fair_key))
        )
        return RevealedSeed(
            reply.revealed_server_seed,
            reply.revealed_commitment,
            reply.rounds,
            reply.server_seed_commitment,
        )
