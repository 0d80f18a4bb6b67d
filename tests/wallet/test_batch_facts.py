"""Requests decided together in one batch see each other's effects, not only the facts read
before the batch: a rollback queued behind a win of the same round (a rollback need not
name its round) is refused ALREADY_SETTLED exactly as it is when the two come one after
the other; and the history lists a batch in the order it was decided."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from services.runtime.errors import DomainError
from services.wallet import store
from services.wallet.ledger import Kind, Request
from services.wallet.postings import Postings
from services.wallet.server import transaction_message


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def _outcome(postings: Postings, request: Request) -> tuple[str, int]:
    try:
        result = await asyncio.wait_for(postings.post(request, "games"), 10)
    except DomainError as exc:
        return exc.reason, 0
    return "APPLIED", result.transaction.amount


async def _round_with_two_bets(postings: Postings) -> tuple[str, str, str, str]:
    player, round_id, bet_a, bet_b = _id("p"), _id("round"), _id("bet-a"), _id("bet-b")
    await postings.open_account(player, "EUR")
    await postings.post(Request(Kind.DEPOSIT, player, _id("dep"), "EUR", 1000), "payments")
    for bet in (bet_a, bet_b):
        await postings.post(
            Request(Kind.BET, player, bet, "EUR", 100, round_id=round_id, game_id="g"), "games"
        )
    return player, round_id, bet_a, bet_b


@pytest.mark.parametrize("together", [True, False], ids=["one batch", "one after the other"])
async def test_a_rollback_behind_a_win_of_its_round_is_refused(
    postings: Postings, together: bool
) -> None:
    player, round_id, bet_a, bet_b = await _round_with_two_bets(postings)
    win = Request(Kind.WIN, player, _id("win"), "EUR", 50, round_id=round_id, bet_request_id=bet_a)
    # No round named: providers' rollback calls often carry only the bet's id.
    rollback = Request(Kind.BET_ROLLBACK, player, _id("rb"), "EUR", bet_request_id=bet_b)
    if together:
        # Queued in the same loop turn: the worker takes both into one batch.
        outcomes = list(await asyncio.gather(_outcome(postings, win), _outcome(postings, rollback)))
    else:
        outcomes = [await _outcome(postings, win), await _outcome(postings, rollback)]
    assert outcomes == [("APPLIED", 50), ("ALREADY_SETTLED", 0)]
    balance, _ = await postings.balance(player, "EUR", allow_cached=False)
    assert balance.posted == 1000 - 200 + 50  # the settled stake stays staked


async def test_a_rollback_ahead_of_a_win_in_one_batch_still_applies(postings: Postings) -> None:
    player, round_id, bet_a, bet_b = await _round_with_two_bets(postings)
    rollback = Request(Kind.BET_ROLLBACK, player, _id("rb"), "EUR", bet_request_id=bet_b)
    win = Request(Kind.WIN, player, _id("win"), "EUR", 50, round_id=round_id, bet_request_id=bet_a)
    outcomes = list(await asyncio.gather(_outcome(postings, rollback), _outcome(postings, win)))
    assert outcomes == [("APPLIED", 100), ("APPLIED", 50)]
    balance, _ = await postings.balance(player, "EUR", allow_cached=False)
    assert balance.posted == 1000 - 200 + 100 + 50


async def test_history_lists_a_batch_newest_first_with_its_refusals(postings: Postings) -> None:
    player = _id("p")
    await postings.open_account(player, "EUR")
    await postings.post(Request(Kind.DEPOSIT, player, _id("dep"), "EUR", 150), "payments")
    bets = [
        # Keys that sort against the order they are sent in: the order must come from time.
        Request(Kind.BET, player, _id(f"bet-{key}"), "EUR", amount, round_id=_id("r"), game_id="g")
        for key, amount in [("c", 100), ("b", 100), ("a", 50)]
    ]
    # One batch: the second bet finds the first's debit and is refused.
    outcomes = list(await asyncio.gather(*(_outcome(postings, b) for b in bets)))
    assert outcomes == [("APPLIED", -100), ("INSUFFICIENT_FUNDS", 0), ("APPLIED", -50)]
    async with postings._engine.begin() as conn:
        history = await store.list_transactions(
            conn, player, kinds=[], currency=None, start=None, end=None, before=None, limit=10
        )
    assert [t.request_id for t in history[:3]] == [b.request_id for b in reversed(bets)]
    listed = [transaction_message(t) for t in history[:3]]
    assert [t.refusal_reason for t in listed] == ["", "INSUFFICIENT_FUNDS", ""]
