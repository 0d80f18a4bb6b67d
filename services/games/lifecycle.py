"""A round's lifecycle: open -> stake debited -> outcome drawn -> win credited -> archived,
each step recorded in the round journal before the next begins.

The same step functions serve the live call and the recovery worker; they differ only in
what an unfinished round means. Live, an OPEN round goes on to debit and a DEBITED one to
draw. In recovery (the live call died or gave up) the round must not be played on: the RNG
round is closed first (so a stalled live call can no longer draw), and then an outcome the
RNG had already drawn is settled (credit the win) while an undrawn round is voided (roll the
stake back: the wallet records a tombstone if the stake never arrived, so a late debit is
refused). Nothing ever draws twice: the RNG returns the recorded draw for a repeated index.

Every write is a compare-and-set on the journal row's state, and every upstream call is
idempotent by a key derived from the round id, so a live call and the worker racing on one
round apply each effect once."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncEngine

from services.games import catalog, store
from services.games.rounds import (
    RoundRecord,
    State,
    archive_record,
    bet_transaction_id,
    fair_key,
    record_hash,
    request_hash,
    rollback_transaction_id,
    win_transaction_id,
)
from services.games.sessions import Session
from services.games.upstreams import (
    ComplianceClient,
    Refused,
    RngClient,
    WalletClient,
)
from services.runtime import db, failpoints, outbox
from services.runtime.errors import Code, DomainError, IdempotencyMismatch, InvalidArgument
from services.runtime.logs import get_logger

log = get_logger()

ARCHIVED = Counter(
    "casino_games_rounds_archived_total",
    "Rounds archived, by game and how they ended (COMPLETED, VOIDED).",
    ["game", "state"],
)

# Round ids are derived from (player, request_id): a retry is the same round everywhere (the
# compliance usage count, the RNG round, the wallet's transaction ids).
_ROUND_NAMESPACE = uuid.UUID("6f1d3c4e-2b7a-5e8f-9a0b-1c2d3e4f5a6b")

# Why a round was voided, when no upstream refusal says it.
NOT_DRAWN = "NOT_DRAWN"
ROUTING_KEY = "games.round.{state}"
EVENT_TYPE = "casino.games.v1.RoundArchived"

# Builds the RoundArchived payload from an archived record; supplied by the RPC surface so
# this module stays free of generated code.
EncodeEvent = Callable[[Mapping[str, Any], bytes, uuid.UUID], bytes]


def _rng_fields(r: RoundRecord) -> dict[str, Any]:
    return {
        "rng_round_id": r.rng_round_id,
        "rng_generator": r.rng_generator,
        "rng_sampling": r.rng_sampling,
        "fair_commitment": r.fair_commitment,
        "fair_nonce": r.fair_nonce,
    }


def round_id_for(player_id: str, request_id: str) -> uuid.UUID:
    return uuid.uuid5(_ROUND_NAMESPACE, f"{player_id}\x00{request_id}")


class BetRefused(DomainError):
    def __init__(self, verdict_id: str, reasons: tuple[tuple[str, Mapping[str, str]], ...]) -> None:
        first = dict(reasons[0][1]) if reasons else {}
        super().__init__(
            "BET_REFUSED",
            "the bet was refused: " + ", ".join(r for r, _ in reasons),
            {**first, "verdict_id": verdict_id, "reasons": ",".join(r for r, _ in reasons)},
        )


class GameUnavailable(DomainError):
    def __init__(self, detail: str) -> None:
        super().__init__(
            "GAME_UNAVAILABLE",
            "the game cannot be played now; a stake taken for this round is given back",
            {"detail": detail},
            code=Code.UNAVAILABLE,
        )


class RoundVoided(DomainError):
    """A replayed request whose round was voided by a refusal answers with that refusal."""

    def __init__(self, r: RoundRecord) -> None:
        super().__init__(
            r.void_reason or NOT_DRAWN,
            f"the round was voided ({r.void_reason}); nothing was staked",
            {"round_id": str(r.round_id)},
        )


@dataclass(frozen=True)
class StakeBounds:
    min_minor: int
    max_minor: int


@dataclass(frozen=True)
class Prepared:
    math: catalog.GameMath
    request_id: str
    bet: dict[str, Any]  # canonical
    stake: int
    fingerprint: bytes
    existing: RoundRecord | None


@dataclass(frozen=True)
class Played:
    round: RoundRecord
    replayed: bool


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Lifecycle:
    def __init__(
        self,
        engine: AsyncEngine,
        compliance: ComplianceClient,
        wallet: WalletClient,
        rng: RngClient,
        encode_event: EncodeEvent,
        *,
        stakes: StakeBounds,
        lease_seconds: float,
        on_archived: Callable[[RoundRecord], Awaitable[None]] | None = None,
        clock: Callable[[], dt.datetime] = _now,
    ) -> None:
        self._engine = engine
        # Each step of the journal is one statement (a compare-and-set): one round trip.
        self._one_statement = db.autocommit(engine)
        self._compliance = compliance
        self._wallet = wallet
        self._rng = rng
        self._encode = encode_event
        self._stakes = stakes
        self._lease = lease_seconds
        self._clock = clock
        self._on_archived = on_archived

    # ---------------------------------------------------------------------------- live

    async def prepare(
        self, session: Session, request_id: str, bet_json: Mapping[str, Any]
    ) -> Prepared:
        """Check the bet against the session's game and stake bounds, and find the round this
        request_id already stands for (IdempotencyMismatch if it stood for another bet)."""
        math = catalog.current(session.game_id)
        bet = math.parse_bet(bet_json)
        canonical = math.bet_json(bet)
        stake = math.stake(bet)
        if not self._stakes.min_minor <= stake <= self._stakes.max_minor:
            raise InvalidArgument(
                "bet",
                f"the round's stake must be {self._stakes.min_minor}-{self._stakes.max_minor}"
                f" minor units, got {stake}",
            )
        fingerprint = request_hash(session.session_id, session.game_id, canonical)
        existing = await self._find(session.player_id, request_id, fingerprint)
        return Prepared(math, request_id, canonical, stake, fingerprint, existing)

    async def play(self, session: Session, prepared: Prepared) -> Played:
        """Play a new round in `session` (the caller checked the session, its reality check
        and the spin spacing): compliance, then the steps. Answers after the archive."""
        round_id = round_id_for(session.player_id, prepared.request_id)
        verdict = await self._compliance.check(
            player_id=session.player_id,
            action="BET",
            amount_minor=prepared.stake,
            currency=session.currency,
            product=prepared.math.product,
            country=session.country,
            request_id=bet_transaction_id(round_id),
        )
        if not verdict.allowed:
            raise BetRefused(verdict.verdict_id, verdict.reasons)
        r = RoundRecord(
            player_id=session.player_id,
            round_id=round_id,
            request_id=prepared.request_id,
            request_hash=prepared.fingerprint,
            session_id=session.session_id,
            game_id=session.game_id,
            math_version=prepared.math.version,
            currency=session.currency,
            country=session.country,
            bet=prepared.bet,
            stake_minor=prepared.stake,
            bet_verdict_id=verdict.verdict_id,
            client_seed=session.client_seed or None,
            state=State.OPEN,
            open_time=self._clock(),
        )
        async with self._one_statement.connect() as conn:
            inserted = await store.insert_open(conn, r, self._lease)
        if not inserted:  # a concurrent retry of this request_id journalled it first
            existing = await self._find(
                session.player_id, prepared.request_id, prepared.fingerprint
            )
            assert existing is not None
            return await self.resume(existing)
        done = await self.advance(r, recovering=False)
        return Played(done, replayed=False)

    async def _find(
        self, player_id: str, request_id: str, fingerprint: bytes
    ) -> RoundRecord | None:
        async with self._one_statement.connect() as conn:
            existing = await store.find(conn, player_id, request_id)
        if existing is not None and existing.request_hash != fingerprint:
            raise IdempotencyMismatch(request_id)
        return existing

    async def resume(self, r: RoundRecord) -> Played:
        """A request_id seen before: its round again, finished first if it is not yet."""
        if r.finished:
            if r.state is State.VOIDED and r.void_reason != NOT_DRAWN:
                raise RoundVoided(r)
            return Played(r, replayed=True)
        done = await self.advance(r, recovering=False)
        return Played(done, replayed=True)

    # ---------------------------------------------------------------------------- steps

    async def advance(self, r: RoundRecord, *, recovering: bool) -> RoundRecord:
        """Take the round through its remaining steps to the archive. A compare-and-set that
        loses (another worker moved the round) re-reads the round and carries on from there."""
        while not r.finished:
            if r.state is State.OPEN:
                r = await self._open_step(r, recovering=recovering)
            elif r.state is State.DEBITED:
                r = await self._draw_step(r, recovering=recovering)
            else:
                r = await self._settle_step(r)
        return r

    async def _reload(self, r: RoundRecord) -> RoundRecord:
        async with self._one_statement.connect() as conn:
            current = await store.get(conn, r.player_id, r.round_id)
        assert current is not None, "journal rows are never deleted"
        return current

    async def _step(self, r: RoundRecord, new: State, **changes: Any) -> RoundRecord:
        async with self._one_statement.connect() as conn:
            moved = await store.step(conn, r, new, self._lease, **changes)
        return r.but(state=new, **changes) if moved else await self._reload(r)

    async def _open_rng(self, r: RoundRecord) -> RoundRecord:
        """Open (or find again: idempotent by round id) the round's RNG round. Its id and
        versions are journalled with the round's next step; the round completes under those
        versions whatever is deployed later."""
        fair = fair_key(r.player_id, r.game_id) if r.client_seed else ""
        try:
            opened = await self._rng.open_round(
                request_id=str(r.round_id),
                game_id=r.game_id,
                game_inputs=r.game_inputs(),
                fair_key=fair,
                client_seed=r.client_seed or "",
            )
        except Refused as exc:
            raise GameUnavailable(exc.reason) from None
        return r.but(
            rng_round_id=opened.round_id,
            rng_generator=opened.generator,
            rng_sampling=opened.sampling,
            fair_commitment=opened.fair_commitment or None,
            fair_nonce=opened.fair_nonce,
        )

    async def _open_step(self, r: RoundRecord, *, recovering: bool) -> RoundRecord:
        if recovering:
            return await self._recover_undrawn(r)
        if r.rng_round_id is None:
            try:
                r = await self._open_rng(r)
            except GameUnavailable as exc:
                # The RNG round is journalled only with the DEBITED step: an earlier attempt
                # under this request may have been debited before it died. Give the stake
                # back (or leave the tombstone that refuses it) before voiding.
                await self._roll_back_and_void(r, "GAME_UNAVAILABLE")
                raise exc from None
        try:
            step = await self._wallet.place_bet(
                request_id=bet_transaction_id(r.round_id),
                player_id=r.player_id,
                amount=r.stake_minor,
                currency=r.currency,
                round_id=str(r.round_id),
                game_id=r.game_id,
            )
        except Refused as exc:
            # The wallet's refusals are final and sticky under this key: no debit will ever
            # exist for it, so the round is void with nothing to give back.
            await self._close_rng(r)
            await self._void(r, reason=exc.reason, settle=None)
            raise
        failpoints.reached("games.after_debit")
        return await self._step(
            r,
            State.DEBITED,
            **_rng_fields(r),
            bet_transaction_id=step.transaction_id,
            balance_after_minor=step.available_minor,
        )

    async def _draw_step(self, r: RoundRecord, *, recovering: bool) -> RoundRecord:
        if recovering:
            return await self._recover_undrawn(r)
        assert r.rng_round_id is not None
        math = catalog.by_version(r.math_version)
        bet = math.parse_bet(r.bet)
        try:
            draws = await self._rng.draw(r.rng_round_id, math.ranges(bet))
        except Refused as exc:
            # The stake is taken and the RNG will not draw: the worker voids the round
            # (rolling the stake back) once the lease runs out, or a retry resumes it.
            raise GameUnavailable(exc.reason) from None
        r = await self._record_draw(r, draws)
        failpoints.reached("games.after_draw")
        return r

    async def _record_draw(self, r: RoundRecord, draws: tuple[int, ...]) -> RoundRecord:
        math = catalog.by_version(r.math_version)
        outcome = math.resolve(math.parse_bet(r.bet), draws)
        return await self._step(
            r,
            State.DRAWN,
            draws=draws,
            outcome=math.outcome_json(outcome),
            payout_minor=outcome.payout,
        )

    async def _settle_step(self, r: RoundRecord) -> RoundRecord:
        assert r.state is State.DRAWN and r.payout_minor is not None
        bet_tx = r.bet_transaction_id or bet_transaction_id(r.round_id)
        try:
            step = await self._wallet.settle_win(
                request_id=win_transaction_id(r.round_id),
                player_id=r.player_id,
                amount=r.payout_minor,
                currency=r.currency,
                round_id=str(r.round_id),
                bet_request_id=bet_tx,
                game_id=r.game_id,
            )
        except Refused as exc:
            # A drawn round's stake was taken; a refusal here is a defect between us and the
            # wallet (never a player's doing). Leave the round for an operator, loudly.
            log.error("win refused by the wallet", round_id=str(r.round_id), reason=exc.reason)
            raise
        return await self._archive(
            r,
            r.but(
                state=State.COMPLETED,
                bet_transaction_id=bet_tx,
                settle_transaction_id=step.transaction_id,
                balance_after_minor=step.available_minor,
            ),
        )

    # ------------------------------------------------------------------------- recovery

    async def _recover_undrawn(self, r: RoundRecord) -> RoundRecord:
        """A round the journal does not show drawn. Close its RNG round so nothing draws any
        more; if the RNG had drawn before the crash, settle that outcome; else void the round
        and roll the stake back (a tombstone if it never arrived)."""
        r = await self._open_rng(r) if r.rng_round_id is None else r
        assert r.rng_round_id is not None
        closed = await self._rng.close_round(r.rng_round_id)
        if closed.draw_count > 0:
            math = catalog.by_version(r.math_version)
            draws = await self._rng.draw(r.rng_round_id, math.ranges(math.parse_bet(r.bet)))
            if r.state is State.OPEN:  # the debit's record was lost, not the debit
                r = await self._step(
                    r,
                    State.DEBITED,
                    **_rng_fields(r),
                    bet_transaction_id=bet_transaction_id(r.round_id),
                )
                if r.state is not State.DEBITED:
                    return r
            return await self._record_draw(r, draws)
        return await self._roll_back_and_void(r, NOT_DRAWN)

    async def _roll_back_and_void(self, r: RoundRecord, reason: str) -> RoundRecord:
        """Void a round that was never drawn, its stake rolled back: refunded if the wallet
        took it, else a tombstone that refuses it should it still arrive."""
        step = await self._wallet.rollback_bet(
            request_id=rollback_transaction_id(r.round_id),
            player_id=r.player_id,
            currency=r.currency,
            bet_request_id=bet_transaction_id(r.round_id),
            round_id=str(r.round_id),
        )
        # The archive names the stake the wallet took and gave back, or none if it never
        # arrived.
        taken = None if step.nothing_to_undo else bet_transaction_id(r.round_id)
        return await self._void(
            r.but(bet_transaction_id=taken),
            reason=reason,
            settle=step.transaction_id,
            balance=step.available_minor,
        )

    async def _close_rng(self, r: RoundRecord) -> None:
        if r.rng_round_id is not None:
            await self._rng.close_round(r.rng_round_id)

    async def _void(
        self, r: RoundRecord, *, reason: str, settle: str | None, balance: int | None = None
    ) -> RoundRecord:
        return await self._archive(
            r,
            r.but(
                state=State.VOIDED,
                void_reason=reason,
                settle_transaction_id=settle,
                balance_after_minor=balance if balance is not None else r.balance_after_minor,
            ),
        )

    async def _archive(self, r: RoundRecord, final: RoundRecord) -> RoundRecord:
        final = final.but(close_time=self._clock())
        record = archive_record(final)
        digest = record_hash(record)
        event_id = uuid.uuid4()
        event = outbox.Event(
            routing_key=ROUTING_KEY.format(state=final.state.value.lower()),
            message_type=EVENT_TYPE,
            payload=self._encode(record, digest, event_id),
            shard_key=final.player_id,
            event_id=event_id,
        )
        async with self._engine.begin() as conn:
            archived = await store.archive(conn, r, final, record, digest, [event])
        if not archived:
            return await self._reload(r)
        ARCHIVED.labels(final.game_id, final.state.value).inc()
        if self._on_archived is not None:
            # Whoever archives the round (the call or the recovery worker) tells the session,
            # once. Display state: a failure here is logged, never the round's failure.
            try:
                await self._on_archived(final)
            except Exception as exc:
                log.warning("session not updated", round_id=str(final.round_id), error=str(exc))
        return final
