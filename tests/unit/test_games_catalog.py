"""The games catalog as a specification: settling from drawn integers is exactly play(), bets
and outcomes have one canonical JSON form, malformed bets are refused field by field, and
unknown games and math versions fail with their catalogued reasons."""

from __future__ import annotations

import json
from fractions import Fraction
from typing import Any

import pytest

from services.games import catalog
from services.games.math import GAME_VERSIONS, dice, roulette, slot
from services.games.math.outcome import draw
from services.rng.drbg import RoundStream
from services.runtime.errors import Code, InvalidArgument, NotFound

DICE_BET = dice.DiceBet(stake=100, target=2500, direction=dice.Direction.UNDER)
ROULETTE_BET = (
    roulette.RouletteBet(roulette.BetKind.STRAIGHT, 10, (17,)),
    roulette.RouletteBet(roulette.BetKind.RED, 10),
    roulette.RouletteBet(roulette.BetKind.SPLIT, 5, (20, 17)),
    roulette.RouletteBet(roulette.BetKind.DOZEN, 7, (2,)),
)
SLOT_BET = slot.SlotBet(line_bet=5)

BETS: dict[str, Any] = {"dice": DICE_BET, "roulette": ROULETTE_BET, "slot": SLOT_BET}
PLAY: dict[str, Any] = {"dice": dice.play, "roulette": roulette.play, "slot": slot.play}

ROUNDS = 300  # consecutive rounds on one stream: enough to see wins, losses and rejections


# --- draws and settlement -------------------------------------------------------------------


@pytest.mark.parametrize("game_id", ["dice", "roulette", "slot"])
def test_resolve_matches_play_on_the_same_stream(game_id: str) -> None:
    math, bet, play = catalog.current(game_id), BETS[game_id], PLAY[game_id]
    drawn_by_rng = RoundStream(bytes(32), b"ctx")
    played_by_math = RoundStream(bytes(32), b"ctx")
    payouts = set()
    for _ in range(ROUNDS):
        draws = tuple(draw(drawn_by_rng, n) for n in math.ranges(bet))
        resolved = math.resolve(bet, draws)
        assert resolved == play(played_by_math, bet)
        assert resolved.draws == draws and resolved.version == math.version
        payouts.add(resolved.payout)
    assert 0 in payouts and len(payouts) > 1  # both losing and winning rounds were compared


def test_ranges_give_the_range_of_each_draw_in_draw_order() -> None:
    assert catalog.current("dice").ranges(DICE_BET) == (dice.ROLLS,) == (10_000,)
    assert catalog.current("roulette").ranges(ROULETTE_BET) == (roulette.POCKETS,) == (37,)
    assert catalog.current("slot").ranges(SLOT_BET) == (30, 30, 30, 30, 30)
    assert slot.ranges(SLOT_BET) == tuple(len(strip) for strip in slot.MACHINE.strips)


def test_an_empty_roulette_table_is_refused_before_anything_is_drawn() -> None:
    with pytest.raises(InvalidArgument):
        roulette.ranges([])


@pytest.mark.parametrize("game_id", ["dice", "roulette", "slot"])
def test_resolve_refuses_the_wrong_number_of_draws(game_id: str) -> None:
    math, bet = catalog.current(game_id), BETS[game_id]
    count = len(math.ranges(bet))
    for draws in ((), (0,) * (count + 1)):
        with pytest.raises(ValueError, match="draws"):
            math.resolve(bet, draws)


@pytest.mark.parametrize("game_id", ["dice", "roulette", "slot"])
@pytest.mark.parametrize("bad", [-1, "top", "non-integer", "bool"])
def test_resolve_refuses_draws_outside_their_range(game_id: str, bad: str | int) -> None:
    math, bet = catalog.current(game_id), BETS[game_id]
    ranges = math.ranges(bet)
    draws: list[Any] = [0] * len(ranges)
    draws[-1] = {-1: -1, "top": ranges[-1], "non-integer": 1.0, "bool": True}[bad]
    with pytest.raises(ValueError):
        math.resolve(bet, draws)


def test_the_highest_value_of_each_range_resolves() -> None:
    for game in catalog.GAMES:
        bet = BETS[game.game_id]
        top = tuple(n - 1 for n in game.ranges(bet))
        assert game.resolve(bet, top).draws == top


def test_stake_is_what_the_round_puts_at_risk() -> None:
    assert catalog.current("dice").stake(DICE_BET) == 100
    assert catalog.current("roulette").stake(ROULETTE_BET) == 32
    assert catalog.current("slot").stake(SLOT_BET) == 5 * len(slot.MACHINE.paylines) == 50
    for game in catalog.GAMES:
        bet = BETS[game.game_id]
        assert game.stake(bet) == game.resolve(bet, (0,) * len(game.ranges(bet))).stake


# --- bets as JSON ---------------------------------------------------------------------------


def test_bet_json_has_the_documented_shapes() -> None:
    assert catalog.current("dice").bet_json(DICE_BET) == {
        "stake": 100,
        "target": 2500,
        "direction": "UNDER",
    }
    assert catalog.current("roulette").bet_json(ROULETTE_BET) == {
        "bets": [
            {"kind": "STRAIGHT", "stake": 10, "numbers": [17]},
            {"kind": "RED", "stake": 10, "numbers": []},
            {"kind": "SPLIT", "stake": 5, "numbers": [20, 17]},
            {"kind": "DOZEN", "stake": 7, "numbers": [2]},
        ]
    }
    assert catalog.current("slot").bet_json(SLOT_BET) == {"line_bet": 5}


@pytest.mark.parametrize(
    ("game_id", "bet"),
    [
        ("dice", DICE_BET),
        ("dice", dice.DiceBet(stake=1, target=9000, direction=dice.Direction.OVER)),
        ("roulette", ROULETTE_BET),
        ("roulette", (roulette.RouletteBet(roulette.BetKind.CORNER, 3, (0, 1, 2, 3)),)),
        ("slot", SLOT_BET),
    ],
)
def test_bet_json_round_trips_through_parse_bet(game_id: str, bet: Any) -> None:
    math = catalog.current(game_id)
    data = math.bet_json(bet)
    assert math.parse_bet(data) == bet
    # Through bytes too: what is stored is what parses back.
    assert math.parse_bet(json.loads(catalog.canonical_json(data))) == bet


def test_roulette_numbers_may_be_omitted_for_bets_that_take_none() -> None:
    parsed = catalog.current("roulette").parse_bet({"bets": [{"kind": "RED", "stake": 10}]})
    assert parsed == (roulette.RouletteBet(roulette.BetKind.RED, 10),)


def test_a_dice_bet_off_the_versions_house_edge_has_no_json_form() -> None:
    bet = dice.DiceBet(
        stake=100, target=2500, direction=dice.Direction.UNDER, house_edge=Fraction(3, 100)
    )
    with pytest.raises(ValueError):
        catalog.current("dice").bet_json(bet)


def _roulette(*bets: dict[str, Any]) -> dict[str, Any]:
    return {"bets": list(bets)}


_RED = {"kind": "RED", "stake": 10}


@pytest.mark.parametrize(
    ("game_id", "data", "field"),
    [
        ("dice", ["stake", 100], "bet"),
        ("dice", {"stake": True, "target": 2500, "direction": "UNDER"}, "bet.stake"),
        ("dice", {"stake": -100, "target": 2500, "direction": "UNDER"}, "bet.stake"),
        ("dice", {"stake": 0, "target": 2500, "direction": "UNDER"}, "bet.stake"),
        ("dice", {"stake": 1.5, "target": 2500, "direction": "UNDER"}, "bet.stake"),
        ("dice", {"stake": 100, "target": "2500", "direction": "UNDER"}, "bet.target"),
        ("dice", {"stake": 100, "target": 10_000, "direction": "UNDER"}, "bet.target"),
        ("dice", {"stake": 100, "target": 0, "direction": "UNDER"}, "bet.target"),
        ("dice", {"stake": 100, "target": 2500, "direction": "SIDEWAYS"}, "bet.direction"),
        ("dice", {"stake": 100, "target": 2500, "direction": "under"}, "bet.direction"),
        ("dice", {"stake": 100, "target": 2500, "direction": 1}, "bet.direction"),
        ("dice", {"stake": 100, "direction": "UNDER"}, "bet.target"),
        ("dice", {"stake": 100, "target": 2500, "direction": "UNDER", "edge": 0}, "bet.edge"),
        ("roulette", {}, "bet.bets"),
        ("roulette", {"bets": "RED"}, "bet.bets"),
        ("roulette", {"bets": []}, "bet.bets"),
        ("roulette", {"bets": [_RED] * 51}, "bet.bets"),
        ("roulette", {"bets": [_RED], "spins": 2}, "bet.spins"),
        (
            "roulette",
            _roulette({"kind": "SPLIT", "stake": 5, "numbers": [1, 5]}),
            "bet.bets[0].numbers",
        ),
        (
            "roulette",
            _roulette({"kind": "STRAIGHT", "stake": 5, "numbers": [37]}),
            "bet.bets[0].numbers",
        ),
        ("roulette", _roulette({"kind": "RED", "stake": 5, "numbers": [1]}), "bet.bets[0].numbers"),
        (
            "roulette",
            _roulette({"kind": "STRAIGHT", "stake": 5, "numbers": [True]}),
            "bet.bets[0].numbers",
        ),
        (
            "roulette",
            _roulette({"kind": "STRAIGHT", "stake": 5, "numbers": 17}),
            "bet.bets[0].numbers",
        ),
        ("roulette", _roulette({"kind": "STRAIGHT", "stake": 5}), "bet.bets[0].numbers"),
        ("roulette", _roulette({"kind": "BASKET", "stake": 5}), "bet.bets[0].kind"),
        ("roulette", _roulette({"kind": "red", "stake": 5}), "bet.bets[0].kind"),
        ("roulette", _roulette({"stake": 5}), "bet.bets[0].kind"),
        ("roulette", _roulette(_RED, {"kind": "BLACK", "stake": False}), "bet.bets[1].stake"),
        ("roulette", _roulette(_RED, {"kind": "BLACK", "stake": -1}), "bet.bets[1].stake"),
        ("roulette", _roulette({**_RED, "colour": "RED"}), "bet.bets[0].colour"),
        ("roulette", {"bets": ["RED"]}, "bet.bets[0]"),
        ("slot", {"line_bet": 0}, "bet.line_bet"),
        ("slot", {"line_bet": True}, "bet.line_bet"),
        ("slot", {"line_bet": "5"}, "bet.line_bet"),
        ("slot", {}, "bet.line_bet"),
        ("slot", {"line_bet": 5, "lines": 10}, "bet.lines"),
    ],
)
def test_parse_bet_refuses_malformed_input_naming_the_field(
    game_id: str, data: Any, field: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        catalog.current(game_id).parse_bet(data)
    assert refused.value.field == field
    assert refused.value.metadata == {"field": field}


def test_fifty_roulette_bets_are_accepted() -> None:
    parsed = catalog.current("roulette").parse_bet({"bets": [_RED] * 50})
    assert len(parsed) == catalog.MAX_ROULETTE_BETS == 50


# --- outcomes as JSON -----------------------------------------------------------------------


def test_dice_outcome_json_is_the_roll_and_whether_it_won() -> None:
    math = catalog.current("dice")
    assert math.outcome_json(math.resolve(DICE_BET, (1234,))) == {"roll": 1234, "won": True}
    assert math.outcome_json(math.resolve(DICE_BET, (2500,))) == {"roll": 2500, "won": False}


def test_roulette_outcome_json_is_the_pocket_and_each_bets_return() -> None:
    math = catalog.current("roulette")
    bet = math.parse_bet(
        {"bets": [{"kind": "STRAIGHT", "stake": 10, "numbers": [17]}, {"kind": "RED", "stake": 10}]}
    )
    assert math.outcome_json(math.resolve(bet, (17,))) == {"pocket": 17, "bet_returns": [360, 0]}


def test_slot_outcome_json_shows_rows_top_first_and_line_wins() -> None:
    # Stops 0, 2, 3, 4, 3 put a 7 on the top row of every reel (see test_games_math).
    math = catalog.current("slot")
    outcome = math.resolve(slot.SlotBet(line_bet=2), (0, 2, 3, 4, 3))
    assert math.outcome_json(outcome) == {
        "stops": [0, 2, 3, 4, 3],
        "rows": ["7 7 7 7 7", "C O P C P", "M P M O C"],
        "line_wins": [[1, 1000]],
        "scatters": 0,
        "scatter_win": 0,
    }
    assert outcome.payout == 2000


def test_outcome_json_is_plain_json() -> None:
    for game in catalog.GAMES:
        bet = BETS[game.game_id]
        data = game.outcome_json(game.resolve(bet, (3,) * len(game.ranges(bet))))
        assert json.loads(catalog.canonical_json(data)) == data


def test_outcome_json_refuses_another_games_outcome() -> None:
    roulette_outcome = catalog.current("roulette").resolve(ROULETTE_BET, (0,))
    with pytest.raises(TypeError):
        catalog.current("slot").outcome_json(roulette_outcome)
    with pytest.raises(TypeError):
        catalog.current("dice").outcome_json(roulette_outcome)


# --- the catalog ----------------------------------------------------------------------------


def test_the_catalog_serves_each_game_at_its_current_version() -> None:
    assert [game.game_id for game in catalog.GAMES] == ["dice", "roulette", "slot"]
    assert {game.game_id: game.version for game in catalog.GAMES} == GAME_VERSIONS
    for game in catalog.GAMES:
        assert catalog.current(game.game_id) is game
        assert catalog.by_version(game.version) is game
    assert set(catalog.MATH) >= set(GAME_VERSIONS.values())


def test_each_game_states_its_compliance_facts() -> None:
    facts = {
        game.game_id: (
            game.display_name,
            game.product,
            game.provably_fair,
            game.min_round_interval_ms,
        )
        for game in catalog.GAMES
    }
    assert facts == {
        "dice": ("Dice", "TABLE", True, 0),
        "roulette": ("European Roulette", "TABLE", False, 0),
        "slot": ("Five-Reel Slot", "SLOTS", False, 2500),
    }


def test_reference_rtp_is_the_exact_rtp_of_the_reference_bet() -> None:
    assert catalog.current("dice").reference_rtp == Fraction(99, 100) == dice.nominal_rtp()
    assert catalog.current("roulette").reference_rtp == Fraction(36, 37)
    assert catalog.current("slot").reference_rtp == slot.rtp() == Fraction(11633, 12150)


def test_an_unknown_game_is_not_found() -> None:
    with pytest.raises(NotFound) as refused:
        catalog.current("blackjack")
    assert refused.value.reason == "GAME_NOT_FOUND"
    assert refused.value.code is Code.NOT_FOUND
    assert refused.value.metadata == {"game_id": "blackjack"}


def test_an_unknown_math_version_is_an_internal_error() -> None:
    with pytest.raises(catalog.UnknownMathVersion) as refused:
        catalog.by_version("dice/v0")
    assert refused.value.reason == "UNKNOWN_ALGORITHM_VERSION"
    assert refused.value.code is Code.INTERNAL
    assert refused.value.metadata == {"version": "dice/v0"}


# --- formatting -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rtp", "percent"),
    [
        (Fraction(99, 100), "99.0000"),
        (Fraction(36, 37), "97.2973"),
        (Fraction(11633, 12150), "95.7449"),
        (Fraction(1), "100.0000"),
        (Fraction(0), "0.0000"),
        (Fraction(2 * 972972 + 1, 2 * 10**6), "97.2972"),  # exactly half: to the even digit
        (Fraction(2 * 972973 + 1, 2 * 10**6), "97.2974"),
    ],
)
def test_rtp_percent_rounds_exactly_half_to_even(rtp: Fraction, percent: str) -> None:
    assert catalog.rtp_percent(rtp) == percent


def test_canonical_json_is_independent_of_key_order() -> None:
    first = {"b": 1, "a": [1, {"d": 2, "c": "é"}]}
    second = {"a": [1, {"c": "é", "d": 2}], "b": 1}
    assert catalog.canonical_json(first) == catalog.canonical_json(second)
    assert catalog.canonical_json(first) == b'{"a":[1,{"c":"\\u00e9","d":2}],"b":1}'
