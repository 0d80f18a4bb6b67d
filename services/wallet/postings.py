"""Posting requests to the ledger: the one place wallet transactions begin and commit.

Concurrent requests are coalesced: a worker takes what is queued and posts it all in one
transaction, answering each only after that commit. Several requests of one player may
share a batch (a busy account is the one that most needs it) as long as none of them names
what another names (its key, the bet it settles or rolls back, its round, its withdrawal):
then no request's facts depend on another's, and only the balance threads through them, in
arrival order. The order inside the transaction is the invariant: lock the accounts (in key
order), read what the keys and the referenced bets and withdrawals already hold, decide
each request (pure), record every outcome under its idempotency key (the primary key
decides: a key that turns out to exist sends the batch back to be posted one request at a
time), then append the entries, move the accounts and enqueue the events. A batch that
fails for any other reason is also retried one request at a time, so one bad request never
fails its neighbours. The display cache is written after the answers, never before.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.runtime import db, failpoints
from services.runtime.errors import DomainError, IdempotencyMismatch
from services.runtime.logs import get_logger
from services.runtime.outbox import Event
from services.wallet import store
from services.wallet.cache import BalanceCache
from services.wallet.ledger import (
    AccountNotFound,
    AccountState,
    Effect,
    Entry,
    Kind,
    Refusal,
    ReplayOf,
    Request,
    decide,
    next_entry,
)
from services.wallet.store import StoredTransaction

EVENT_TYPE = "casino.wallet.v1.TransactionPosted"

log = get_logger()


@dataclass(frozen=True)
class PostingResult:
    transaction: StoredTransaction
    replayed: bool

    @property
    def balance(self) -> AccountState:
        t = self.transaction
        return AccountState(t.posted_after, t.reserved_after, t.sequence_after, b"")


# Builds the event payload (the contract's TransactionPosted) from a result; supplied by
# the RPC surface so this module stays free of generated code.
EncodeEvent = Callable[[PostingResult, uuid.UUID], bytes]

Outcome = PostingResult | DomainError


@dataclass
class _Pending:
    request: Request
    caller: str
    future: asyncio.Future[PostingResult]


class _KeyRaced(Exception):
    """A key expected to be new existed at insert time (a concurrent request under another
    account's lock): the batch is rolled back and posted again one request at a time."""


def _replay(request: Request, existing: StoredTransaction) -> Outcome:
    if existing.fingerprint != request.fingerprint():
        return IdempotencyMismatch(request.request_id)
    if existing.refusal is not None:
        return existing.refusal.error()  # sticky: the same refusal again
    return PostingResult(existing, replayed=True)


class Postings:
    def __init__(
        self,
        engine: AsyncEngine,
        cache: BalanceCache,
        encode_event: EncodeEvent,
        *,
        max_batch: int = 64,
        workers: int = 1,
    ) -> None:
        self._engine = engine
        self._one_statement = db.autocommit(engine)
        self._cache = cache
        self._encode_event = encode_event
        self._max_batch = max_batch
        self._workers = workers
        self._queue: collections.deque[_Pending] = collections.deque()
        self._busy_players: set[str] = set()
        self._wake = asyncio.Event()

    async def post(self, request: Request, caller: str) -> PostingResult:
        """Apply `request` once; returns after the commit. Raises the recorded refusal
        (sticky), IdempotencyMismatch or AccountNotFound; a replay returns the original."""
        future: asyncio.Future[PostingResult] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(request, caller, future))
        self._wake.set()
        return await future

    # The batch workers (a BackgroundWorker of the service runtime).

    async def run(self) -> None:
        await asyncio.gather(*(self._work() for _ in range(self._workers)))

    async def close(self) -> None:
        for pending in self._queue:
            if not pending.future.done():
                pending.future.cancel()

    async def _work(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await self._post_batch(batch)
            finally:
                self._busy_players.difference_update(p.request.player_id for p in batch)
                self._wake.set()  # players released: another worker may take their requests

    def _take(self) -> list[_Pending]:
        """Up to max_batch queued requests, in arrival order, of players no other batch is
        posting, none naming what another in the batch names (see `_references`)."""
        batch: list[_Pending] = []
        kept: collections.deque[_Pending] = collections.deque()
        named: set[tuple[str, str, str]] = set()
        while self._queue:
            pending = self._queue.popleft()
            if pending.future.done():  # the caller gave up before we started
                continue
            references = _references(pending.request)
            if (
                len(batch) < self._max_batch
                and pending.request.player_id not in self._busy_players
                and named.isdisjoint(references)
            ):
                batch.append(pending)
                named |= references
            else:
                # Also holds back what a held-back request names: a later request never
                # overtakes an earlier one it could depend on.
                named |= references
                kept.append(pending)
        self._queue = kept
        self._busy_players |= {p.request.player_id for p in batch}
        return batch

    async def _post_batch(self, batch: list[_Pending]) -> None:
        requests, callers = [p.request for p in batch], [p.caller for p in batch]
        try:
            try:
                outcomes, balances = await self._apply(requests, callers)
            except _KeyRaced:
                if len(batch) > 1:
                    raise
                # Once more, alone: the raced key is now read as existing and replayed.
                outcomes, balances = await self._apply(requests, callers)
        except Exception as exc:
            if len(batch) > 1:
                for pending in batch:
                    await self._post_batch([pending])
                return
            if not batch[0].future.done():
                batch[0].future.set_exception(exc)
            return
        for pending, outcome in zip(batch, outcomes, strict=True):
            if pending.future.done():
                continue
            if isinstance(outcome, DomainError):
                pending.future.set_exception(outcome)
            else:
                pending.future.set_result(outcome)
        # The callers are answered; then the display cache (never on the answer's path, and
        # never able to stop the worker: it is display only).
        try:
            await self._cache.put(balances)
        except Exception as exc:
            log.warning("balance cache write failed", error=repr(exc))

    async def _apply(
        self, requests: list[Request], callers: list[str]
    ) -> tuple[list[Outcome], dict[tuple[str, str], AccountState]]:
        """Post the batch in one transaction; the outcomes, and each moved account's
        balances for the display cache, once committed."""
        outcomes: list[Outcome | None] = [None] * len(requests)
        entries: list[Entry] = []
        try:
            async with db.pipelined_transaction(self._one_statement) as pipeline:
                await self._decide_and_write(pipeline, requests, callers, outcomes, entries)
        except IntegrityError as exc:
            if db.violated_constraint(exc) == store.KEY_CONSTRAINT:
                # A key expected to be new exists: a concurrent request under another
                # account's lock (same player, other currency) took it first.
                raise _KeyRaced from exc
            raise
        # Committed. Only now are the results true, and only now may anything see them.
        failpoints.reached("wallet.after_commit")
        assert all(o is not None for o in outcomes)
        balances = {(e.player_id, e.currency): _after(e) for e in entries}
        return outcomes, balances  # type: ignore[return-value]

    async def _decide_and_write(
        self,
        pipeline: db.Pipeline,
        requests: list[Request],
        callers: list[str],
        outcomes: list[Outcome | None],
        entries: list[Entry],
    ) -> None:
        """Inside the batch's transaction: lock, read, decide each request (filling
        `outcomes` and `entries`) and queue the write. Two round trips: the lock and the
        read go out together (the read, queued behind the lock, sees what was committed
        before the lock was granted), and the write goes out with the COMMIT."""
        fresh: list[StoredTransaction] = []
        # Rounds a win of this batch settled: the facts were read before the batch was
        # decided, so a later rollback in the round learns of the win here (a rollback need
        # not name its round, so the scheduler cannot keep the two apart).
        settled: set[tuple[str, str]] = set()
        locked = await store.lock_accounts(
            pipeline, sorted({(r.player_id, r.currency) for r in requests})
        )
        reading = await store.read_known(pipeline, requests)
        accounts = await locked.result()
        # Taken under the accounts' locks: a batch that waited for another replica's on
        # the same account is stamped after the one it followed.
        batch_time = dt.datetime.now(dt.UTC)
        known = await reading.result()
        for i, (r, facts) in enumerate(zip(requests, known.facts, strict=True)):
            # Each request a microsecond after the one decided before it: the history,
            # newest first by time, lists a batch in the order it was decided.
            now = batch_time + dt.timedelta(microseconds=i)
            account = accounts.get((r.player_id, r.currency))
            if account is None:
                outcomes[i] = AccountNotFound(r.player_id, r.currency)
                continue
            if (found := known.existing.get((r.player_id, r.request_id))) is not None:
                outcomes[i] = _replay(r, found)
                continue
            if facts.bet is not None and (r.player_id, facts.bet.round_id) in settled:
                facts = dataclasses.replace(facts, round_settled=True)
            decision = decide(r, account, facts)
            if r.kind is Kind.WIN and isinstance(decision, Effect):
                settled.add((r.player_id, r.round_id))
            if isinstance(decision, ReplayOf):
                original = known.related[(r.player_id, decision.request_id)]
                outcomes[i] = PostingResult(original, replayed=True)
                continue
            refusal = decision if isinstance(decision, Refusal) else None
            effect = decision if isinstance(decision, Effect) else Effect(0)
            entry = next_entry(r, account, effect, now) if effect.writes_entry else None
            after = account
            if entry is not None:
                after = _after(entry)
                entries.append(entry)
                # The player's next request in this batch sees this one's balance.
                accounts[(r.player_id, r.currency)] = after
            tx = store.new_transaction(
                r,
                caller=callers[i],
                effect=effect,
                refusal=refusal,
                sequence=entry.sequence if entry else None,
                after=after,
                create_time=now,
            )
            fresh.append(tx)
            outcomes[i] = refusal.error() if refusal else PostingResult(tx, replayed=False)
        if fresh:
            events = [self._event(tx) for tx in fresh if not tx.refusal]
            await store.write_postings(pipeline, fresh, entries, events)

    def _event(self, tx: StoredTransaction) -> Event:
        event_id = uuid.uuid4()
        return Event(
            routing_key=f"wallet.transaction.{tx.kind.value.lower()}",
            message_type=EVENT_TYPE,
            payload=self._encode_event(PostingResult(tx, replayed=False), event_id),
            shard_key=tx.player_id,
            event_id=event_id,
        )

    # Reads and account opening need no coalescing.

    async def open_account(self, player_id: str, currency: str) -> tuple[AccountState, bool]:
        async with self._engine.begin() as conn:
            created = await store.open_account(conn, player_id, currency)
            account = await store.read_account(conn, player_id, currency)
        assert account is not None
        return account, created

    async def balance(
        self, player_id: str, currency: str, *, allow_cached: bool
    ) -> tuple[AccountState, bool]:
        """A consistent snapshot (one row read, one round trip); from the cache only if the
        caller allows, and a cache miss fills it for the next such caller."""
        if allow_cached:
            cached = await self._cache.get(player_id, currency)
            if cached is not None:
                return cached, True
        account = await store.read_account_alone(self._one_statement, player_id, currency)
        if account is None:
            raise AccountNotFound(player_id, currency)
        if allow_cached:
            # Postings write the cache through; a read that did not ask for it leaves it be.
            await self._cache.put({(player_id, currency): account})
        return account, False


def _references(request: Request) -> set[tuple[str, str, str]]:
    """What a request names, per player: two requests naming one thing may depend on each
    other (a win and its bet, a reservation and its commit, one key retried) and never share
    a batch."""
    player, names = request.player_id, {("key", request.request_id)}
    if request.kind is Kind.BET:
        names.add(("bet", request.request_id))
    if request.bet_request_id:
        names.add(("bet", request.bet_request_id))
    if request.round_id:
        names.add(("round", request.round_id))
    if request.withdrawal_id:
        names.add(("withdrawal", request.withdrawal_id))
    return {(player, kind, name) for kind, name in names}


def _after(entry: Entry) -> AccountState:
    return AccountState(entry.balance_after, entry.reserved_after, entry.sequence, entry.hash)
