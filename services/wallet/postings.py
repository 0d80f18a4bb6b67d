"""Posting a request to the ledger: the one place a wallet transaction begins and commits.

The order inside the transaction is the invariant: lock the account row, read the facts,
decide (pure), record the outcome under the idempotency key (the primary key decides),
and only if this request is new, append the entry, move the account and enqueue the
event. The answer is built after the commit.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from services.runtime import failpoints
from services.runtime.errors import IdempotencyMismatch
from services.runtime.outbox import Event, enqueue
from services.wallet import store
from services.wallet.cache import BalanceCache
from services.wallet.ledger import (
    AccountNotFound,
    AccountState,
    Effect,
    Refusal,
    ReplayOf,
    Request,
    decide,
    next_entry,
)
from services.wallet.store import StoredTransaction

EVENT_TYPE = "casino.wallet.v1.TransactionPosted"


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


class Postings:
    def __init__(self, engine: AsyncEngine, cache: BalanceCache, encode_event: EncodeEvent):
        self._engine = engine
        self._cache = cache
        self._encode_event = encode_event

    async def post(self, request: Request, caller: str) -> PostingResult:
        """Apply `request` once. Raises the recorded refusal (sticky), IdempotencyMismatch,
        or AccountNotFound; returns the original result for a replay."""
        now = dt.datetime.now(dt.UTC)
        async with self._engine.begin() as conn:
            account = await store.read_account(conn, request.player_id, request.currency, lock=True)
            if account is None:
                raise AccountNotFound(request.player_id, request.currency)
            facts = await store.load_facts(conn, request)
            decision = decide(request, account, facts)

            if isinstance(decision, ReplayOf):
                original = await store.get_transaction(conn, request.player_id, decision.request_id)
                assert original is not None
                return PostingResult(original, replayed=True)

            refusal = decision if isinstance(decision, Refusal) else None
            effect = decision if isinstance(decision, Effect) else Effect(0)
            entry = next_entry(request, account, effect, now) if effect.writes_entry else None
            after = (
                AccountState(entry.balance_after, entry.reserved_after, entry.sequence, entry.hash)
                if entry
                else account
            )
            tx = store.new_transaction(
                request,
                caller=caller,
                effect=effect,
                refusal=refusal,
                sequence=entry.sequence if entry else None,
                after=after,
                create_time=now,
            )
            if not await store.insert_transaction(conn, tx):
                # The key was used before: nothing of this attempt is written.
                existing = await store.get_transaction(conn, request.player_id, request.request_id)
                assert existing is not None
                result = self._replay(request, existing)
            else:
                if entry is not None:
                    await store.append_entry(conn, entry)
                result = PostingResult(tx, replayed=False)
                if refusal is None:
                    event_id = uuid.uuid4()
                    await enqueue(
                        conn,
                        "wallet",
                        Event(
                            routing_key=f"wallet.transaction.{request.kind.value.lower()}",
                            message_type=EVENT_TYPE,
                            payload=self._encode_event(result, event_id),
                            shard_key=request.player_id,
                            event_id=event_id,
                        ),
                    )
        # Committed. Only now is the result true, and only now may anything see it.
        failpoints.reached("wallet.after_commit")
        if not result.replayed and entry is not None:
            await self._cache.put(request.player_id, request.currency, after)
        if result.transaction.refusal is not None:
            raise result.transaction.refusal.error()
        return result

    @staticmethod
    def _replay(request: Request, existing: StoredTransaction) -> PostingResult:
        if existing.fingerprint != request.fingerprint():
            raise IdempotencyMismatch(request.request_id)
        return PostingResult(existing, replayed=True)

    async def open_account(self, player_id: str, currency: str) -> tuple[AccountState, bool]:
        async with self._engine.begin() as conn:
            created = await store.open_account(conn, player_id, currency)
            account = await store.read_account(conn, player_id, currency)
        assert account is not None
        return account, created

    async def balance(
        self, player_id: str, currency: str, *, allow_cached: bool
    ) -> tuple[AccountState, bool]:
        """A consistent snapshot (one row read); from the cache only if the caller allows."""
        if allow_cached:
            cached = await self._cache.get(player_id, currency)
            if cached is not None:
                return cached, True
        async with self._engine.connect() as conn:
            account = await store.read_account(conn, player_id, currency)
        if account is None:
            raise AccountNotFound(player_id, currency)
        await self._cache.put(player_id, currency, account)
        return account, False
