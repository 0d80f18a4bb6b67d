"""The wallet's rules as pure functions: no database, no network."""

from __future__ import annotations

import datetime as dt

import pytest

from services.runtime.errors import DomainError
from services.wallet.ledger import (
    GENESIS_HASH,
    AccountState,
    Effect,
    Facts,
    Kind,
    Prior,
    Refusal,
    ReplayOf,
    Request,
    chain_hash,
    decide,
    next_entry,
    require_amount,
    require_currency,
)

RICH = AccountState(posted=1000, reserved=200, sequence=7, last_hash=GENESIS_HASH)


def req(kind: Kind, amount: int = 0, **refs: str) -> Request:
    return Request(kind, "p1", "k1", "EUR", amount, **refs)


def bet(outcome: str = "applied", amount: int = -100, round_id: str = "r1") -> Prior:
    return Prior("b1", Kind.BET, outcome, "EUR", amount, 0, round_id)


def test_bet_debits_only_the_available_balance() -> None:
    assert decide(req(Kind.BET, 800), RICH, Facts()) == Effect(-800)
    refused = decide(req(Kind.BET, 801), RICH, Facts())
    assert isinstance(refused, Refusal) and refused.reason == "INSUFFICIENT_FUNDS"
    assert refused.metadata["available_minor"] == "800"


def test_bet_after_its_tombstone_is_refused() -> None:
    tombstone = Prior("rb", Kind.BET_ROLLBACK, "applied", "EUR", 0, 0)
    decision = decide(req(Kind.BET, 1), RICH, Facts(rollback=tombstone))
    assert isinstance(decision, Refusal) and decision.reason == "BET_ROLLED_BACK"


def test_rollback_rules() -> None:
    refs = {"bet_request_id": "b1"}
    assert decide(req(Kind.BET_ROLLBACK, **refs), RICH, Facts()) == Effect(0, nothing_to_undo=True)
    assert decide(req(Kind.BET_ROLLBACK, **refs), RICH, Facts(bet=bet("refused"))) == Effect(
        0, nothing_to_undo=True
    )
    assert decide(req(Kind.BET_ROLLBACK, **refs), RICH, Facts(bet=bet())) == Effect(100)
    settled = decide(req(Kind.BET_ROLLBACK, **refs), RICH, Facts(bet=bet(), round_settled=True))
    assert isinstance(settled, Refusal) and settled.reason == "ALREADY_SETTLED"
    earlier = Prior("rb0", Kind.BET_ROLLBACK, "applied", "EUR", 100, 0)
    assert decide(req(Kind.BET_ROLLBACK, **refs), RICH, Facts(bet=bet(), rollback=earlier)) == (
        ReplayOf("rb0")
    )


@pytest.mark.parametrize(
    ("facts", "reason"),
    [
        (Facts(), "BET_NOT_FOUND"),
        (Facts(bet=bet("refused")), "BET_NOT_FOUND"),
        (Facts(bet=bet(round_id="other")), "BET_NOT_FOUND"),
        (
            Facts(bet=bet(), rollback=Prior("rb", Kind.BET_ROLLBACK, "applied", "EUR", 100, 0)),
            "BET_ROLLED_BACK",
        ),
    ],
)
def test_win_needs_a_live_bet_of_the_same_round(facts: Facts, reason: str) -> None:
    decision = decide(req(Kind.WIN, 50, round_id="r1", bet_request_id="b1"), RICH, facts)
    assert isinstance(decision, Refusal) and decision.reason == reason


def test_win_credits() -> None:
    assert decide(req(Kind.WIN, 50, round_id="r1"), RICH, Facts(bet=bet())) == Effect(50)


def test_a_win_or_rollback_never_touches_another_providers_or_games_bet() -> None:
    # Provider round and transaction ids are theirs: another provider's may be the same.
    theirs = Prior("b1", Kind.BET, "applied", "EUR", -100, 0, "r1", "slot-x", "studio-a")
    for refs in ({"provider": "studio-b"}, {"game_id": "slot-y"}):
        for request in (
            req(Kind.WIN, 50, round_id="r1", bet_request_id="b1", **refs),
            req(Kind.BET_ROLLBACK, bet_request_id="b1", **refs),
        ):
            decision = decide(request, RICH, Facts(bet=theirs))
            assert isinstance(decision, Refusal) and decision.reason == "BET_NOT_FOUND"
    # Named alike, or not named (an in-house game's rollback may carry only the bet's id).
    same = {"provider": "studio-a", "game_id": "slot-x"}
    assert decide(
        req(Kind.WIN, 50, round_id="r1", bet_request_id="b1", **same), RICH, Facts(bet=theirs)
    ) == Effect(50)
    assert decide(req(Kind.BET_ROLLBACK, bet_request_id="b1"), RICH, Facts(bet=theirs)) == Effect(
        100
    )


def test_withdrawal_moves_reserved_then_posted() -> None:
    reserve = decide(req(Kind.WITHDRAWAL_RESERVE, 300, withdrawal_id="w"), RICH, Facts())
    assert reserve == Effect(0, reserved_delta=300)
    held = Prior("k0", Kind.WITHDRAWAL_RESERVE, "applied", "EUR", 0, 300)
    assert decide(
        req(Kind.WITHDRAWAL_COMMIT, withdrawal_id="w"), RICH, Facts(reservation=held)
    ) == Effect(-300, reserved_delta=-300)
    assert decide(
        req(Kind.WITHDRAWAL_RELEASE, withdrawal_id="w"), RICH, Facts(reservation=held)
    ) == Effect(0, reserved_delta=-300)
    done = Prior("k1", Kind.WITHDRAWAL_COMMIT, "applied", "EUR", -300, -300)
    again = decide(
        req(Kind.WITHDRAWAL_RELEASE, withdrawal_id="w"),
        RICH,
        Facts(reservation=held, finalisation=done),
    )
    assert isinstance(again, Refusal) and again.reason == "WITHDRAWAL_ALREADY_FINALISED"


def test_fingerprint_tells_requests_apart_and_ignores_nothing_that_matters() -> None:
    base = req(Kind.BET, 10, round_id="r")
    assert base.fingerprint() == req(Kind.BET, 10, round_id="r").fingerprint()
    for other in (
        req(Kind.BET, 11, round_id="r"),
        req(Kind.DEPOSIT, 10, round_id="r"),
        Request(Kind.BET, "p1", "k1", "GBP", 10, round_id="r"),
        req(Kind.BET, 10, round_id="s"),
    ):
        assert other.fingerprint() != base.fingerprint()


def test_entries_chain_and_any_change_breaks_the_hash() -> None:
    now = dt.datetime(2026, 11, 26, tzinfo=dt.UTC)
    first = next_entry(
        req(Kind.DEPOSIT, 500), AccountState(0, 0, 0, GENESIS_HASH), Effect(500), now
    )
    assert (first.sequence, first.balance_after, first.house_account) == (
        1,
        500,
        "deposits_clearing",
    )
    second = next_entry(req(Kind.BET, 100), AccountState(500, 0, 1, first.hash), Effect(-100), now)
    assert second.prev_hash == first.hash
    assert second.house_amount == 100
    from dataclasses import replace

    assert chain_hash(replace(second, amount=-101)) != second.hash
    assert chain_hash(replace(second, prev_hash=GENESIS_HASH)) != second.hash


def test_input_rules() -> None:
    assert require_amount(5, "a") == 5
    with pytest.raises(DomainError):
        require_amount(0, "a")
    assert require_amount(0, "a", allow_zero=True) == 0
    assert require_amount(-5, "a", signed=True) == -5
    with pytest.raises(DomainError):
        require_amount(0, "a", signed=True)
    with pytest.raises(DomainError) as unsupported:
        require_currency("JPY", frozenset({"EUR"}), "c")
    assert unsupported.value.reason == "CURRENCY_NOT_SUPPORTED"
