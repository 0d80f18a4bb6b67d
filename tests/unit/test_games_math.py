"""Game math as a specification: payout tables, bet validation, rounding, exact RTP, and known
outcomes from fixed streams (the mapping from draws to outcomes is versioned and must not
drift)."""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
from fractions import Fraction

import pytest

from services.games.math import GAME_VERSIONS, dice, roulette, slot
from services.games.math.dice import DiceBet, Direction
from services.games.math.roulette import BetKind, RouletteBet
from services.rng.drbg import RoundStream
from services.runtime.errors import InvalidArgument


class ScriptedStream:
    """A byte stream that hands out exactly the bytes given, then fails loudly."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def read(self, n: int) -> bytes:
        if n > len(self._data):
            raise AssertionError("the game read more bytes than the test scripted")
        chunk, self._data = self._data[:n], self._data[n:]
        return chunk

    @property
    def unread(self) -> int:
        return len(self._data)


def test_every_game_mapping_has_a_version() -> None:
    assert GAME_VERSIONS == {"dice": "dice/v1", "roulette": "roulette/v1", "slot": "slot/v1"}


# --- dice -------------------------------------------------------------------------------


def test_dice_multiplier_is_one_minus_house_edge_over_win_probability() -> None:
    bet = DiceBet(stake=100, target=5000, direction=Direction.UNDER)
    assert bet.win_probability == Fraction(1, 2)
    assert bet.multiplier == Fraction(198, 100)
    assert bet.win_payout == 198
    assert dice.rtp(bet) == Fraction(99, 100)


def test_dice_house_edge_is_configurable() -> None:
    bet = DiceBet(stake=100, target=5000, direction=Direction.UNDER, house_edge=Fraction(3, 100))
    assert bet.win_payout == 194
    assert dice.rtp(bet) == dice.nominal_rtp(Fraction(3, 100)) == Fraction(97, 100)


def test_dice_payout_rounds_down_per_bet_and_the_rtp_includes_it() -> None:
    # p = 0.3 -> multiplier 3.3: a 1-unit stake gets 3 back, not 3.3.
    small = DiceBet(stake=1, target=3000, direction=Direction.UNDER)
    assert small.multiplier == Fraction(33, 10)
    assert small.win_payout == 3
    assert dice.rtp(small) == Fraction(9, 10)
    # A 10-unit stake hits the multiplier exactly: the RTP is the nominal 99%.
    assert DiceBet(stake=10, target=3000, direction=Direction.UNDER).win_payout == 33
    # 7 winning rolls: 9900/7 = 1414.28...; 100 units pay floor(141428.57...) = 141428.
    long_shot = DiceBet(stake=100, target=7, direction=Direction.UNDER)
    assert long_shot.win_payout == 141428
    assert dice.rtp(long_shot) == Fraction(7, 10000) * Fraction(141428, 100)


@pytest.mark.parametrize("stake", [1, 7, 100, 12345])
@pytest.mark.parametrize(
    ("target", "direction"),
    [
        (1, Direction.UNDER),
        (4950, Direction.UNDER),
        (9000, Direction.UNDER),
        (9998, Direction.OVER),
        (5000, Direction.OVER),
        (200, Direction.OVER),
    ],
)
def test_dice_exact_rtp_equals_enumeration_of_every_roll(
    stake: int, target: int, direction: Direction
) -> None:
    bet = DiceBet(stake=stake, target=target, direction=direction)
    paid = [dice.settle(bet, roll) for roll in range(dice.ROLLS)]
    enumerated = Fraction(sum(paid), dice.ROLLS * stake)
    assert dice.rtp(bet) == enumerated
    # Rounding down only ever costs the player, and less than one minor unit per win.
    assert enumerated <= dice.nominal_rtp()
    assert dice.nominal_rtp() - enumerated < bet.win_probability / stake
    second = Fraction(sum(p * p for p in paid), dice.ROLLS * stake * stake)
    assert dice.variance(bet) == second - enumerated**2


def test_dice_win_boundaries() -> None:
    under = DiceBet(stake=10, target=5000, direction=Direction.UNDER)
    assert under.wins(4999) and not under.wins(5000)
    over = DiceBet(stake=10, target=4999, direction=Direction.OVER)
    assert over.wins(5000) and not over.wins(4999)
    assert under.winning_rolls == over.winning_rolls == 5000


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"stake": 0, "target": 5000, "direction": Direction.UNDER}, "stake"),
        ({"stake": -5, "target": 5000, "direction": Direction.UNDER}, "stake"),
        ({"stake": True, "target": 5000, "direction": Direction.UNDER}, "stake"),
        ({"stake": 10, "target": 10000, "direction": Direction.UNDER}, "target"),
        ({"stake": 10, "target": -1, "direction": Direction.OVER}, "target"),
        ({"stake": 10, "target": 0, "direction": Direction.UNDER}, "target"),  # never wins
        ({"stake": 10, "target": 9999, "direction": Direction.OVER}, "target"),  # never wins
        ({"stake": 10, "target": 9900, "direction": Direction.UNDER}, "target"),  # pays 1x
        ({"stake": 10, "target": 5000, "direction": "SIDEWAYS"}, "direction"),
        (
            {"stake": 10, "target": 50, "direction": Direction.UNDER, "house_edge": Fraction(1)},
            "house_edge",
        ),
    ],
)
def test_dice_refuses_invalid_bets(fields: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        DiceBet(**fields)  # type: ignore[arg-type]
    assert refused.value.field == field


def test_dice_roll_is_drawn_by_rejection_not_modulo() -> None:
    # uniform_int(10000) reads 2 bytes and rejects values >= 60000: 0xFFFF is discarded and
    # the next two bytes (0x1388 = 5000) are the roll.
    stream = ScriptedStream(bytes([0xFF, 0xFF, 0x13, 0x88]))
    outcome = dice.play(stream, DiceBet(stake=100, target=5001, direction=Direction.UNDER))
    assert outcome.draws == (5000,)
    assert outcome.payout == DiceBet(100, 5001, Direction.UNDER).win_payout
    assert stream.unread == 0


def test_dice_round_is_reproducible_from_its_seed_and_inputs() -> None:
    seed = bytes(range(32))
    bet = DiceBet(stake=100, target=5000, direction=Direction.UNDER)
    first = dice.play(RoundStream(seed, b"dice/v1"), bet)
    assert first == dice.play(RoundStream(seed, b"dice/v1"), bet)
    # Pinned known answer for dice/v1 under drbg/chacha20-v1 + sampling/rejection-v1.
    assert first.draws == (9394,) and first.payout == 0


# --- roulette ---------------------------------------------------------------------------


def test_roulette_payouts_are_the_standard_table() -> None:
    assert [roulette.PAYOUTS[kind] for kind in BetKind] == [
        35,
        17,
        11,
        8,
        5,
        2,
        2,
        1,
        1,
        1,
        1,
        1,
        1,
    ]


def test_roulette_table_has_the_standard_number_of_each_inside_bet() -> None:
    counts = {kind: len(roulette.COVERS[kind]) for kind in BetKind}
    # 57 splits on the grid + 3 with zero; 12 streets + 2 zero trios; 22 corners + first four.
    assert counts[BetKind.STRAIGHT] == 37
    assert counts[BetKind.SPLIT] == 60
    assert counts[BetKind.STREET] == 14
    assert counts[BetKind.CORNER] == 23
    assert counts[BetKind.LINE] == 11
    assert counts[BetKind.DOZEN] == counts[BetKind.COLUMN] == 3
    assert len(roulette.RED) == len(roulette.BLACK) == 18


@pytest.mark.parametrize("kind", list(BetKind))
def test_roulette_every_selection_of_every_bet_returns_36_of_37(kind: BetKind) -> None:
    for cover in roulette.COVERS[kind]:
        assert (roulette.PAYOUTS[kind] + 1) * len(cover) == 36
    assert roulette.rtp(kind) == Fraction(36, 37)
    k = 36 // (roulette.PAYOUTS[kind] + 1)
    win = Fraction(36, k)
    assert roulette.variance(kind) == Fraction(k, 37) * win**2 - Fraction(36, 37) ** 2


@pytest.mark.parametrize(
    ("kind", "numbers"),
    [
        (BetKind.STRAIGHT, (0,)),
        (BetKind.STRAIGHT, (36,)),
        (BetKind.SPLIT, (1, 2)),
        (BetKind.SPLIT, (1, 4)),
        (BetKind.SPLIT, (0, 3)),
        (BetKind.STREET, (34, 35, 36)),
        (BetKind.STREET, (0, 1, 2)),
        (BetKind.CORNER, (2, 3, 5, 6)),
        (BetKind.CORNER, (0, 1, 2, 3)),
        (BetKind.LINE, (31, 32, 33, 34, 35, 36)),
        (BetKind.DOZEN, (3,)),
        (BetKind.COLUMN, (1,)),
        (BetKind.RED, ()),
    ],
)
def test_roulette_accepts_selections_on_the_table(kind: BetKind, numbers: tuple[int, ...]) -> None:
    assert RouletteBet(kind, 1, numbers).covered


@pytest.mark.parametrize(
    ("kind", "numbers", "field"),
    [
        (BetKind.STRAIGHT, (37,), "numbers"),
        (BetKind.SPLIT, (1, 3), "numbers"),  # same row, not adjacent
        (BetKind.SPLIT, (3, 4), "numbers"),  # end of one row, start of the next
        (BetKind.SPLIT, (0, 4), "numbers"),
        (BetKind.SPLIT, (5, 5), "numbers"),
        (BetKind.STREET, (2, 3, 4), "numbers"),
        (BetKind.CORNER, (3, 4, 6, 7), "numbers"),
        (BetKind.CORNER, (1, 2, 3, 4), "numbers"),
        (BetKind.LINE, (2, 3, 4, 5, 6, 7), "numbers"),
        (BetKind.DOZEN, (4,), "numbers"),
        (BetKind.COLUMN, (), "numbers"),
        (BetKind.RED, (1,), "numbers"),
    ],
)
def test_roulette_refuses_selections_not_on_the_table(
    kind: BetKind, numbers: tuple[int, ...], field: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        RouletteBet(kind, 1, numbers)
    assert refused.value.field == field


def test_roulette_refuses_a_non_positive_stake_and_an_empty_table() -> None:
    with pytest.raises(InvalidArgument):
        RouletteBet(BetKind.RED, 0)
    with pytest.raises(InvalidArgument):
        roulette.play(ScriptedStream(b"\x00"), [])


def test_roulette_settles_a_set_of_bets_against_a_pocket() -> None:
    bets = [
        RouletteBet(BetKind.STRAIGHT, 10, (17,)),
        RouletteBet(BetKind.SPLIT, 10, (17, 20)),
        RouletteBet(BetKind.CORNER, 10, (0, 1, 2, 3)),
        RouletteBet(BetKind.BLACK, 10),
        RouletteBet(BetKind.ODD, 10),
        RouletteBet(BetKind.HIGH, 10),
        RouletteBet(BetKind.DOZEN, 10, (2,)),
        RouletteBet(BetKind.COLUMN, 10, (2,)),
    ]
    assert roulette.settle(bets, 17) == (360, 180, 0, 20, 20, 0, 30, 30)
    # Zero: only the bet that covers it wins; every even-money bet loses.
    assert roulette.settle(bets, 0) == (0, 0, 90, 0, 0, 0, 0, 0)


def test_roulette_set_of_bets_has_rtp_36_of_37_by_enumeration() -> None:
    bets = [RouletteBet(BetKind.STRAIGHT, 3, (7,)), RouletteBet(BetKind.RED, 11)]
    mean, second = roulette.moments(bets)
    assert mean == Fraction(36, 37)
    assert roulette.set_variance(bets) == second - mean**2


def test_roulette_pocket_is_drawn_by_rejection() -> None:
    # uniform_int(37) reads single bytes and rejects >= 222; 0x11 = 17 is the pocket.
    stream = ScriptedStream(bytes([0xDE, 0x11]))
    outcome = roulette.play(stream, [RouletteBet(BetKind.STRAIGHT, 5, (17,))])
    assert outcome.pocket == 17 and outcome.draws == (17,)
    assert outcome.stake == 5 and outcome.payout == 180 and outcome.bet_returns == (180,)


def test_roulette_round_is_reproducible_from_its_seed_and_inputs() -> None:
    seed = bytes(range(32))
    bets = [RouletteBet(BetKind.RED, 10)]
    first = roulette.play(RoundStream(seed, b"roulette/v1"), bets)
    assert first == roulette.play(RoundStream(seed, b"roulette/v1"), bets)
    assert first.pocket == 4 and first.payout == 0  # pinned known answer


# --- slot -------------------------------------------------------------------------------


M = slot.MACHINE


def test_slot_machine_shape() -> None:
    assert len(M.strips) == 5 and all(20 <= len(strip) <= 32 for strip in M.strips)
    assert len(M.paylines) >= 10
    assert M.combinations == 30**5


def test_slot_exact_rtp_is_in_the_target_band() -> None:
    rtp = slot.rtp()
    print(f"slot/v1 exact RTP = {rtp} = {float(rtp):.6%}, variance = {float(slot.variance()):.4f}")
    assert rtp == Fraction(11633, 12150)
    assert Fraction(94, 100) <= rtp <= Fraction(97, 100)


@pytest.mark.parametrize(
    ("symbols", "line_bets"),
    [
        ("7 7 7 C C", 50),
        ("C C C C C", 30),
        ("C C C M C", 5),
        ("C C M C C", 0),
        ("W C C C C", 30),  # wild substitutes
        ("C W W M M", 5),
        ("W W W C C", 50),  # three wilds alone pay as 7s, better than five cherries
        ("W W W W W", 1000),
        ("W W S C C", 0),  # the scatter never pays on a line and breaks the run
        ("S S S S S", 0),
        ("M C C C C", 0),  # pays left to right only
    ],
)
def test_slot_line_pays(symbols: str, line_bets: int) -> None:
    assert slot.line_pay(M, symbols.split()) == line_bets


def test_slot_scatter_pays_anywhere_times_the_stake() -> None:
    assert [slot.scatter_pay(M, n) for n in range(7)] == [0, 0, 0, 2, 10, 50, 50]


def test_slot_known_spin_from_a_fixed_stream() -> None:
    # Stops 0, 2, 3, 4, 3 put a 7 on the top row of every reel (one byte per reel: < 240).
    outcome = slot.play(ScriptedStream(bytes([0, 2, 3, 4, 3])), slot.SlotBet(line_bet=2))
    assert outcome.stops == (0, 2, 3, 4, 3)
    assert [column[0] for column in outcome.window] == ["7"] * 5
    assert outcome.line_wins == (slot.LineWin(line=1, line_bets=1000),)
    assert outcome.stake == 20 and outcome.payout == 2000


def test_slot_spin_is_reproducible_from_its_seed_and_inputs() -> None:
    seed = bytes(range(32))
    first = slot.play(RoundStream(seed, b"slot/v1"), slot.SlotBet(1))
    assert first == slot.play(RoundStream(seed, b"slot/v1"), slot.SlotBet(1))
    assert first.stops == (26, 26, 5, 12, 6) and first.payout == 0  # pinned known answer


def _brute_force_distribution(machine: slot.SlotMachine) -> dict[Fraction, int]:
    lines = len(machine.paylines)
    counts: Counter[Fraction] = Counter()
    for stops in itertools.product(*(range(len(strip)) for strip in machine.strips)):
        window = [machine.windows[reel][stop] for reel, stop in enumerate(stops)]
        units, scatters = slot.spin_units(machine, window)
        counts[Fraction(units + lines * slot.scatter_pay(machine, scatters), lines)] += 1
    return dict(counts)


@pytest.mark.parametrize(
    "strips",
    [
        ("7 W S C", "C W M S 7", "W 7 C S", "M C W 7 S", "7 C S W"),
        ("W W C S M", "W C C S", "C W W M S", "W C M S", "C W S W"),
        ("S S S C", "S C W S", "W S S C", "C S S W", "S W S S"),  # many scatters, wilds
    ],
)
def test_slot_counted_enumeration_equals_brute_force(strips: tuple[str, ...]) -> None:
    machine = dataclasses.replace(M, strips=tuple(tuple(s.split()) for s in strips))
    distribution = slot.return_distribution(machine)
    assert sum(distribution.values()) == machine.combinations
    assert distribution == _brute_force_distribution(machine)


def test_slot_refuses_a_non_positive_line_bet() -> None:
    with pytest.raises(InvalidArgument) as refused:
        slot.SlotBet(line_bet=0)
    assert refused.value.field == "line_bet"
