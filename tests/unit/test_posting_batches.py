"""Which queued wallet requests share a transaction: one player's requests may, unless one
names what another names; nothing overtakes an earlier request it could depend on."""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import create_async_engine

from services.wallet.ledger import Kind, Request
from services.wallet.postings import Postings, _Pending


def _bet(player: str, key: str, round_id: str) -> Request:
    return Request(Kind.BET, player, key, "EUR", 100, round_id=round_id, game_id="g")


def _win(player: str, key: str, bet: str, round_id: str) -> Request:
    return Request(Kind.WIN, player, key, "EUR", 50, round_id=round_id, bet_request_id=bet)


async def _batches(requests: list[Request], max_batch: int = 64) -> list[list[str]]:
    # An engine that never connects: only the scheduling is exercised.
    engine = create_async_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    postings = Postings(engine, None, lambda *_: b"", max_batch=max_batch)  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    for r in requests:
        postings._queue.append(_Pending(r, "games", loop.create_future()))
    taken = []
    while batch := postings._take():
        taken.append([p.request.request_id for p in batch])
        postings._busy_players.clear()  # the batch committed
    return taken


async def test_one_players_independent_bets_share_a_batch() -> None:
    batches = await _batches([_bet("p", "b1", "r1"), _bet("p", "b2", "r2"), _bet("q", "b3", "r3")])
    assert batches == [["b1", "b2", "b3"]]


async def test_a_win_waits_for_the_batch_after_its_bet() -> None:
    batches = await _batches(
        [_bet("p", "b1", "r1"), _win("p", "w1", "b1", "r1"), _bet("p", "b2", "r2")]
    )
    assert batches == [["b1", "b2"], ["w1"]]


async def test_a_retried_key_waits_and_nothing_overtakes_what_it_names() -> None:
    # b1 twice: the second waits; a win naming b1, queued after it, waits behind it too.
    batches = await _batches(
        [_bet("p", "b1", "r1"), _bet("p", "b1", "r1"), _win("p", "w1", "b1", "r1")]
    )
    assert batches == [["b1"], ["b1"], ["w1"]]


async def test_requests_of_one_round_or_withdrawal_do_not_share_a_batch() -> None:
    reserve = Request(Kind.WITHDRAWAL_RESERVE, "p", "res", "EUR", 10, withdrawal_id="wd")
    commit = Request(Kind.WITHDRAWAL_COMMIT, "p", "com", "EUR", withdrawal_id="wd")
    batches = await _batches([reserve, commit, _bet("p", "b1", "r1"), _win("p", "w9", "b0", "r1")])
    assert batches == [["res", "b1"], ["com", "w9"]]


async def test_a_full_batch_keeps_the_rest_in_order() -> None:
    batches = await _batches([_bet("p", f"b{i}", f"r{i}") for i in range(5)], max_batch=2)
    assert batches == [["b0", "b1"], ["b2", "b3"], ["b4"]]
