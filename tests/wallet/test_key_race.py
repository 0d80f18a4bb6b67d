"""An idempotency key taken between a batch's read and its write.

A batch reads its keys under its accounts' locks, but one player's key is unique across
all of the player's accounts: a request of the same player in another currency, posted by
another replica under that account's lock, can take the key after the read. The journal's
primary key refuses the second insert; the batch commits nothing and is posted again, and
the key is then found, as it would have been had the two come one after the other."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import psycopg
from sqlalchemy import text

from services.runtime import db
from services.runtime.errors import DomainError
from services.wallet import store
from services.wallet.ledger import AccountState, Effect, Kind, Refusal, Request
from services.wallet.postings import Postings
from tests.support.locks import until_waiting_on_a_lock
from tests.wallet.conftest import admin_dsn, new_id


async def test_a_key_taken_by_another_currency_after_the_read_is_found_not_posted_twice(
    postings: Postings,
) -> None:
    player, key = new_id("player"), new_id("bet")
    for currency in ("EUR", "GBP"):
        await postings.open_account(player, currency)
    await postings.post(Request(Kind.DEPOSIT, player, new_id("dep"), "EUR", 100), "payments")
    # The other replica's request under the same key: a GBP bet, refused for want of funds,
    # recorded in a transaction still open when this batch reads and writes.
    gbp_bet = Request(Kind.BET, player, key, "GBP", 30, round_id="r-gbp", game_id="g")
    refused = store.new_transaction(
        gbp_bet,
        caller="games",
        effect=Effect(0),
        refusal=Refusal("INSUFFICIENT_FUNDS", "insufficient funds"),
        sequence=None,
        after=AccountState(0, 0, 0, b""),
        create_time=dt.datetime.now(dt.UTC),
    )
    other_replicas_pool = db.autocommit(postings._engine)
    eur_bet = Request(Kind.BET, player, key, "EUR", 30, round_id="r-eur", game_id="g")
    async with db.pipelined_transaction(other_replicas_pool) as other_replica:
        await store.write_postings(other_replica, [refused], [], [])
        await (await other_replica.queue(text("SELECT 1"), {}, list)).result()  # the key is taken
        racing = asyncio.create_task(postings.post(eur_bet, "games"))
        # The batch read no such key, and its insert now waits for this transaction.
        await until_waiting_on_a_lock(admin_dsn(), "%INSERT INTO wallet.transactions%")
    # The other replica committed: the batch's insert failed, and it was posted again.
    try:
        await asyncio.wait_for(racing, 10)
    except DomainError as exc:
        assert exc.reason == "IDEMPOTENCY_MISMATCH"
    else:
        raise AssertionError("the EUR bet was posted under a key the GBP bet holds")
    balance, _ = await postings.balance(player, "EUR", allow_cached=False)
    assert balance.posted == 100 and balance.sequence == 1  # the deposit alone
    recorded = await _scalar(
        "SELECT string_agg(currency || ':' || outcome, ',') FROM wallet.transactions"
        " WHERE player_id = %s AND request_id = %s",
        player,
        key,
    )
    assert recorded == "GBP:refused"


async def _scalar(sql: str, *params: str) -> Any:
    async with await psycopg.AsyncConnection.connect(admin_dsn(), autocommit=True) as conn:
        row = await (await conn.execute(sql, params)).fetchone()
        assert row is not None
        return row[0]
