"""The wallet semantics providers and PSPs rely on, one rule per test."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from redis.asyncio import Redis

from casino.common.v1.money_pb2 import Money
from casino.wallet.v1 import wallet_pb2 as w
from services.runtime.status import error_info
from tests.wallet.conftest import eur, new_id


def bet(player: str, amount: int, request_id: str | None = None, round_id: str | None = None):
    return w.PlaceBetRequest(
        request_id=request_id or new_id("bet"),
        player_id=player,
        amount=eur(amount),
        round_id=round_id or new_id("round"),
        game_id="dice",
        provider="inhouse",
    )


def win(player: str, amount: int, placed: w.PlaceBetRequest, request_id: str | None = None):
    return w.SettleWinRequest(
        request_id=request_id or new_id("win"),
        player_id=player,
        amount=eur(amount),
        round_id=placed.round_id,
        bet_request_id=placed.request_id,
    )


def rollback(player: str, bet_request_id: str, request_id: str | None = None):
    return w.RollbackBetRequest(
        request_id=request_id or new_id("rb"),
        player_id=player,
        currency_code="EUR",
        bet_request_id=bet_request_id,
    )


async def balance(clients, player: str) -> w.Balance:
    reply = await clients.games.GetBalance(
        w.GetBalanceRequest(player_id=player, currency_code="EUR")
    )
    return reply.balance


async def refused(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call
    return failure.value


def reason(error: grpc.aio.AioRpcError) -> str:
    info = error_info(error)
    assert info is not None, error
    return info.reason


# Idempotency


async def test_same_key_same_request_returns_the_original_marked_replay(clients, player) -> None:
    p = await player(1000)
    placed = bet(p, 300)
    first = await clients.games.PlaceBet(placed)
    again = await clients.games.PlaceBet(placed)
    assert not first.posting.replayed and again.posting.replayed
    assert again.posting.transaction == first.posting.transaction
    assert again.posting.balance == first.posting.balance
    assert (await balance(clients, p)).posted_minor == 700


async def test_refusal_is_sticky_even_after_funds_arrive(clients, player) -> None:
    p = await player(100)
    placed = bet(p, 500)
    assert reason(await refused(clients.games.PlaceBet(placed))) == "INSUFFICIENT_FUNDS"
    await clients.payments.Deposit(
        w.DepositRequest(request_id=new_id("d"), player_id=p, amount=eur(10_000))
    )
    again = await refused(clients.games.PlaceBet(placed))
    assert reason(again) == "INSUFFICIENT_FUNDS"
    assert error_info(again).metadata["available_minor"] == "100"  # the balance back then
    assert (await balance(clients, p)).posted_minor == 10_100


@pytest.mark.parametrize("change", ["amount", "currency", "kind", "round"])
async def test_same_key_different_request_is_a_mismatch_and_changes_nothing(
    clients, player, change
) -> None:
    p = await player(1000)
    await clients.identity.OpenAccount(w.OpenAccountRequest(player_id=p, currency_code="GBP"))
    await clients.payments.Deposit(
        w.DepositRequest(
            request_id=new_id("d"),
            player_id=p,
            amount=Money(amount_minor=1000, currency_code="GBP"),
        )
    )
    placed = bet(p, 100)
    await clients.games.PlaceBet(placed)
    before = await balance(clients, p)
    if change == "amount":
        call = clients.games.PlaceBet(bet(p, 101, placed.request_id, placed.round_id))
    elif change == "currency":
        other = bet(p, 100, placed.request_id, placed.round_id)
        other.amount.currency_code = "GBP"
        call = clients.games.PlaceBet(other)
    elif change == "kind":
        call = clients.payments.Deposit(
            w.DepositRequest(request_id=placed.request_id, player_id=p, amount=eur(100))
        )
    else:
        call = clients.games.PlaceBet(bet(p, 100, placed.request_id, "another-round"))
    error = await refused(call)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason(error) == "IDEMPOTENCY_MISMATCH"
    assert await balance(clients, p) == before
    gbp = await clients.games.GetBalance(w.GetBalanceRequest(player_id=p, currency_code="GBP"))
    assert gbp.balance.posted_minor == 1000


# Funds


async def test_insufficient_funds_carries_the_balance_and_applies_nothing(clients, player) -> None:
    p = await player(250)
    error = await refused(clients.games.PlaceBet(bet(p, 251)))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(error)
    assert info.reason == "INSUFFICIENT_FUNDS"
    assert dict(info.metadata) == {
        "available_minor": "250",
        "posted_minor": "250",
        "reserved_minor": "0",
        "currency_code": "EUR",
    }
    after = await balance(clients, p)
    assert (after.posted_minor, after.sequence) == (250, 1)


async def test_reserved_money_cannot_be_bet(clients, player) -> None:
    p = await player(1000)
    await clients.payments.ReserveWithdrawal(
        w.ReserveWithdrawalRequest(
            request_id=new_id("res"), player_id=p, amount=eur(800), withdrawal_id=new_id("wd")
        )
    )
    b = await balance(clients, p)
    assert (b.posted_minor, b.reserved_minor, b.available_minor) == (1000, 800, 200)
    assert reason(await refused(clients.games.PlaceBet(bet(p, 201)))) == "INSUFFICIENT_FUNDS"
    await clients.games.PlaceBet(bet(p, 200))
    b = await balance(clients, p)
    assert (b.posted_minor, b.reserved_minor, b.available_minor) == (800, 800, 0)


# Withdrawals


async def test_withdrawal_commit_takes_the_money_release_returns_it(clients, player) -> None:
    p = await player(1000)
    wd1, wd2 = new_id("wd"), new_id("wd")
    for wd, amount in ((wd1, 300), (wd2, 200)):
        await clients.payments.ReserveWithdrawal(
            w.ReserveWithdrawalRequest(
                request_id=new_id("res"), player_id=p, amount=eur(amount), withdrawal_id=wd
            )
        )
    committed = await clients.payments.CommitWithdrawal(
        w.CommitWithdrawalRequest(
            request_id=new_id("c"), player_id=p, currency_code="EUR", withdrawal_id=wd1
        )
    )
    assert committed.posting.transaction.amount.amount_minor == -300
    released = await clients.payments.ReleaseWithdrawal(
        w.ReleaseWithdrawalRequest(
            request_id=new_id("r"), player_id=p, currency_code="EUR", withdrawal_id=wd2
        )
    )
    assert released.posting.transaction.reserved_delta_minor == -200
    b = await balance(clients, p)
    assert (b.posted_minor, b.reserved_minor, b.available_minor) == (700, 0, 700)

    # Finalised once: a second commit or release under a new key is refused.
    again = await refused(
        clients.payments.ReleaseWithdrawal(
            w.ReleaseWithdrawalRequest(
                request_id=new_id("r"), player_id=p, currency_code="EUR", withdrawal_id=wd1
            )
        )
    )
    assert reason(again) == "WITHDRAWAL_ALREADY_FINALISED"
    missing = await refused(
        clients.payments.CommitWithdrawal(
            w.CommitWithdrawalRequest(
                request_id=new_id("c"), player_id=p, currency_code="EUR", withdrawal_id="nope"
            )
        )
    )
    assert reason(missing) == "WITHDRAWAL_NOT_FOUND"
    reused = await refused(
        clients.payments.ReserveWithdrawal(
            w.ReserveWithdrawalRequest(
                request_id=new_id("res"), player_id=p, amount=eur(1), withdrawal_id=wd1
            )
        )
    )
    assert reason(reused) == "WITHDRAWAL_ID_IN_USE"
    assert (await balance(clients, p)).posted_minor == 700


# Bets, wins, rollbacks


async def test_rollback_of_an_unseen_bet_leaves_a_tombstone_that_refuses_the_bet(
    clients, player
) -> None:
    p = await player(1000)
    late = bet(p, 100)
    undone = await clients.games.RollbackBet(rollback(p, late.request_id))
    assert undone.posting.nothing_to_undo
    assert undone.posting.balance.posted_minor == 1000
    error = await refused(clients.games.PlaceBet(late))
    assert reason(error) == "BET_ROLLED_BACK"
    assert (await balance(clients, p)).posted_minor == 1000


async def test_rollback_returns_the_stake_and_twice_returns_the_first_result(
    clients, player
) -> None:
    p = await player(1000)
    placed = bet(p, 400)
    await clients.games.PlaceBet(placed)
    first_request = rollback(p, placed.request_id)
    first = await clients.games.RollbackBet(first_request)
    assert first.posting.balance.posted_minor == 1000
    assert first.posting.transaction.amount.amount_minor == 400
    same_key = await clients.games.RollbackBet(first_request)
    other_key = await clients.games.RollbackBet(rollback(p, placed.request_id))
    for again in (same_key, other_key):
        assert again.posting.replayed
        assert again.posting.transaction == first.posting.transaction
    assert (await balance(clients, p)).posted_minor == 1000


async def test_rollback_of_a_bet_whose_round_has_a_win_is_refused(clients, player) -> None:
    p = await player(1000)
    placed = bet(p, 100)
    await clients.games.PlaceBet(placed)
    await clients.games.SettleWin(win(p, 250, placed))
    error = await refused(clients.games.RollbackBet(rollback(p, placed.request_id)))
    assert reason(error) == "ALREADY_SETTLED"
    assert (await balance(clients, p)).posted_minor == 1150


async def test_zero_win_settles_the_round_against_rollback(clients, player) -> None:
    p = await player(1000)
    placed = bet(p, 100)
    await clients.games.PlaceBet(placed)
    settled = await clients.games.SettleWin(win(p, 0, placed))
    assert settled.posting.transaction.sequence == 0  # no entry: nothing moved
    assert reason(await refused(clients.games.RollbackBet(rollback(p, placed.request_id)))) == (
        "ALREADY_SETTLED"
    )


async def test_win_for_an_unknown_or_rolled_back_bet_is_refused_for_good(clients, player) -> None:
    p = await player(1000)
    ghost = bet(p, 100)
    assert reason(await refused(clients.games.SettleWin(win(p, 500, ghost)))) == "BET_NOT_FOUND"

    placed = bet(p, 100)
    await clients.games.PlaceBet(placed)
    await clients.games.RollbackBet(rollback(p, placed.request_id))
    late_win = win(p, 500, placed)
    assert reason(await refused(clients.games.SettleWin(late_win))) == "BET_ROLLED_BACK"
    # Final: the same win retried stays refused.
    assert reason(await refused(clients.games.SettleWin(late_win))) == "BET_ROLLED_BACK"
    assert (await balance(clients, p)).posted_minor == 1000


async def test_win_credits_without_any_player_session(clients, player) -> None:
    # The wallet knows no sessions: a provider settling hours after the player left is paid.
    p = await player(100)
    placed = bet(p, 100)
    await clients.providers.PlaceBet(placed)
    paid = await clients.providers.SettleWin(win(p, 1_000, placed))
    assert paid.posting.balance.available_minor == 1_000


# Adjustments, access, validation


async def test_adjustment_needs_backoffice_a_reason_and_an_operator(clients, player) -> None:
    p = await player(500)
    request = w.AdjustBalanceRequest(
        request_id=new_id("adj"),
        player_id=p,
        amount=eur(-200),
        # A reason may say why at length (up to 500 characters; ids are at most 128).
        reason="duplicate deposit reversed: " + "ticket 4711 " * 30,
        operator_id="op-17",
    )
    denied = await refused(clients.games.AdjustBalance(request))
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    done = await clients.backoffice.AdjustBalance(request)
    assert done.posting.transaction.reason == request.reason
    assert done.posting.transaction.operator_id == "op-17"
    assert done.posting.balance.posted_minor == 300

    no_reason = await refused(
        clients.backoffice.AdjustBalance(
            w.AdjustBalanceRequest(
                request_id=new_id("adj"), player_id=p, amount=eur(5), reason=" ", operator_id="op"
            )
        )
    )
    assert no_reason.code() == grpc.StatusCode.INVALID_ARGUMENT
    overdraw = await refused(
        clients.backoffice.AdjustBalance(
            w.AdjustBalanceRequest(
                request_id=new_id("adj"),
                player_id=p,
                amount=eur(-301),
                reason="r",
                operator_id="op",
            )
        )
    )
    assert reason(overdraw) == "INSUFFICIENT_FUNDS"


@pytest.mark.parametrize(
    ("money", "field"),
    [
        (Money(amount_minor=-5, currency_code="EUR"), "amount.amount_minor"),
        (Money(amount_minor=0, currency_code="EUR"), "amount.amount_minor"),
        (Money(amount_minor=5, currency_code="eur"), "amount.currency_code"),
        (Money(amount_minor=10**18, currency_code="EUR"), "amount.amount_minor"),
    ],
)
async def test_bad_input_is_invalid_argument_naming_the_field(clients, player, money, field):
    p = await player(1000)
    request = bet(p, 1)
    request.amount.CopyFrom(money)
    error = await refused(clients.games.PlaceBet(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(error).metadata["field"] == field
    assert (await balance(clients, p)).sequence == 1


async def test_unknown_currency_and_unknown_account(clients, player) -> None:
    p = await player(0)
    unsupported = bet(p, 1)
    unsupported.amount.currency_code = "XXX"
    assert reason(await refused(clients.games.PlaceBet(unsupported))) == "CURRENCY_NOT_SUPPORTED"
    missing = await refused(clients.games.PlaceBet(bet("nobody-" + new_id("p"), 1)))
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    assert reason(missing) == "ACCOUNT_NOT_FOUND"


async def test_missing_request_id_is_refused(clients, player) -> None:
    p = await player(10)
    request = bet(p, 1)
    request.request_id = ""
    error = await refused(clients.games.PlaceBet(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason(error) == "IDEMPOTENCY_KEY_REQUIRED"
    assert error_info(error).metadata["field"] == "request_id"


@pytest.mark.parametrize("field", ["request_id", "round_id", "game_id"])
async def test_text_the_database_cannot_hold_is_invalid_argument(clients, player, field) -> None:
    p = await player(10)
    request = bet(p, 1)
    setattr(request, field, "abc\x00def")  # PostgreSQL text cannot hold NUL
    error = await refused(clients.games.PlaceBet(request))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(error).metadata["field"] == field
    assert (await balance(clients, p)).sequence == 1


async def test_optional_references_are_checked_too(clients, player) -> None:
    p = await player(10)
    placed = bet(p, 1)
    await clients.games.PlaceBet(placed)
    rollback = w.RollbackBetRequest(
        player_id=p,
        request_id=new_id("rb"),
        bet_request_id=placed.request_id,
        currency_code="EUR",
        provider="x" * 129,
    )
    error = await refused(clients.games.RollbackBet(rollback))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(error).metadata["field"] == "provider"
    assert (await balance(clients, p)).posted_minor == 9  # the bet stands


# Reads


async def test_balance_is_one_snapshot_and_every_write_returns_it(clients, player) -> None:
    p = await player(1000)
    await clients.payments.ReserveWithdrawal(
        w.ReserveWithdrawalRequest(
            request_id=new_id("res"), player_id=p, amount=eur(100), withdrawal_id=new_id("wd")
        )
    )
    placed = await clients.games.PlaceBet(bet(p, 50))
    assert placed.posting.balance == w.Balance(
        player_id=p,
        currency_code="EUR",
        posted_minor=950,
        reserved_minor=100,
        available_minor=850,
        sequence=3,
    )
    assert await balance(clients, p) == placed.posting.balance


async def cached_balance(clients, player: str, *, sequence: int) -> w.Balance:
    """The cached balance once it shows `sequence`: the cache is written right after the
    answer, so a read that accepts it may trail a posting by that moment (and no more)."""
    deadline = time.monotonic() + 5
    while True:
        shown = await clients.edge.GetBalance(
            w.GetBalanceRequest(player_id=player, currency_code="EUR", allow_cached=True)
        )
        assert shown.balance.cached
        if shown.balance.sequence >= sequence or time.monotonic() > deadline:
            return shown.balance
        await asyncio.sleep(0.01)


async def test_cached_balance_is_served_only_when_asked_and_follows_writes(clients, player):
    p = await player(1000)
    fresh = await clients.edge.GetBalance(w.GetBalanceRequest(player_id=p, currency_code="EUR"))
    assert not fresh.balance.cached
    await clients.games.PlaceBet(bet(p, 10))
    cached = await cached_balance(clients, p, sequence=2)
    assert (cached.posted_minor, cached.sequence) == (990, 2)


async def test_cached_balance_follows_writes_after_redis_forgot_its_scripts(clients, player):
    # A Redis restart (or SCRIPT FLUSH) empties its script cache: the write-through loads
    # the script again instead of leaving the older balance on display.
    p = await player(1000)
    await clients.games.PlaceBet(bet(p, 10))
    redis = Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        await redis.script_flush()
    finally:
        await redis.aclose()
    await clients.games.PlaceBet(bet(p, 20))
    cached = await cached_balance(clients, p, sequence=3)
    assert (cached.posted_minor, cached.sequence) == (970, 3)


async def test_history_is_newest_first_paged_and_filtered(clients, player) -> None:
    p = await player(10_000)  # one deposit
    placed = [bet(p, 10 + i) for i in range(5)]
    for b in placed:
        await clients.games.PlaceBet(b)
    await clients.games.SettleWin(win(p, 99, placed[0]))

    seen, token = [], ""
    while True:
        page = await clients.edge.ListTransactions(
            w.ListTransactionsRequest(player_id=p, page_size=2, page_token=token)
        )
        assert len(page.transactions) <= 2
        seen += list(page.transactions)
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == 7
    times = [t.create_time.ToDatetime() for t in seen]
    assert times == sorted(times, reverse=True)
    assert seen[0].kind == w.TRANSACTION_KIND_WIN
    assert seen[-1].kind == w.TRANSACTION_KIND_DEPOSIT

    bets_only = await clients.edge.ListTransactions(
        w.ListTransactionsRequest(player_id=p, kinds=[w.TRANSACTION_KIND_BET])
    )
    assert [t.request_id for t in bets_only.transactions] == [
        b.request_id for b in reversed(placed)
    ]
    window = await clients.edge.ListTransactions(
        w.ListTransactionsRequest(
            player_id=p, start_time=seen[1].create_time, end_time=seen[0].create_time
        )
    )
    assert [t.request_id for t in window.transactions] == [seen[1].request_id]


async def test_payment_instrument_is_stored_validated_and_part_of_the_idempotent_request(
    clients, player
) -> None:
    player_id = await player()
    request = w.DepositRequest(
        request_id=new_id("dep"),
        player_id=player_id,
        amount=eur(1_000),
        payment_instrument="card:fp_9f2c.01-x",
    )
    posted = (await clients.payments.Deposit(request)).posting
    assert posted.transaction.payment_instrument == "card:fp_9f2c.01-x"
    history = await clients.backoffice.ListTransactions(
        w.ListTransactionsRequest(player_id=player_id)
    )
    assert history.transactions[0].payment_instrument == "card:fp_9f2c.01-x"
    # Same key, another instrument: a different request, refused, nothing applied.
    other = w.DepositRequest()
    other.CopyFrom(request)
    other.payment_instrument = "card:another"
    with pytest.raises(grpc.aio.AioRpcError) as mismatch:
        await clients.payments.Deposit(other)
    assert error_info(mismatch.value).reason == "IDEMPOTENCY_MISMATCH"
    assert (await clients.payments.Deposit(request)).posting.replayed
    # Never a card number or free text: a short token of plain characters.
    for bad in ("4111 1111 1111 1111", "x" * 65, "card/fp"):
        with pytest.raises(grpc.aio.AioRpcError) as invalid:
            await clients.payments.Deposit(
                w.DepositRequest(
                    request_id=new_id("dep"),
                    player_id=player_id,
                    amount=eur(1_000),
                    payment_instrument=bad,
                )
            )
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    balance = await clients.payments.GetBalance(
        w.GetBalanceRequest(player_id=player_id, currency_code="EUR")
    )
    assert balance.balance.posted_minor == 1_000
