"""European roulette (single zero): one pocket in 0..36 per spin, any number of bets on it.

Version ``roulette/v1``: the pocket is ``uniform_int(stream, 37)``. Every bet is a kind and
a selection; the valid selections of each kind are data (``COVERS``) built from the standard
table layout (numbers 1..36 in 12 rows of 3, zero above the first row), so validation is a
lookup and the RTP of every bet can be shown by enumerating all 37 pockets: a bet covering
``k`` numbers pays ``36 / k - 1`` to one, so it returns ``k / 37 * 36 / k = 36 / 37``.
A winning bet returns its stake plus ``stake * payout``; a losing one returns nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from services.games.math.outcome import ByteStream, Outcome, draw
from services.runtime.errors import InvalidArgument

VERSION = "roulette/v1"
POCKETS = 37

RED: frozenset[int] = frozenset({1, 3, 5, 7, 9, 12, 14, 16, 18, 19, 21, 23, 25, 27, 30, 32, 34, 36})
BLACK: frozenset[int] = frozenset(range(1, 37)) - RED


class BetKind(enum.StrEnum):
    STRAIGHT = "STRAIGHT"
    SPLIT = "SPLIT"
    STREET = "STREET"
    CORNER = "CORNER"
    LINE = "LINE"  # six line: two adjacent streets
    DOZEN = "DOZEN"
    COLUMN = "COLUMN"
    RED = "RED"
    BLACK = "BLACK"
    ODD = "ODD"
    EVEN = "EVEN"
    LOW = "LOW"  # 1-18
    HIGH = "HIGH"  # 19-36


# Winnings per unit stake (to one), stake returned on top.
PAYOUTS: dict[BetKind, int] = {
    BetKind.STRAIGHT: 35,
    BetKind.SPLIT: 17,
    BetKind.STREET: 11,
    BetKind.CORNER: 8,
    BetKind.LINE: 5,
    BetKind.DOZEN: 2,
    BetKind.COLUMN: 2,
    BetKind.RED: 1,
    BetKind.BLACK: 1,
    BetKind.ODD: 1,
    BetKind.EVEN: 1,
    BetKind.LOW: 1,
    BetKind.HIGH: 1,
}


def _number(row: int, column: int) -> int:
    """The number at a table row (0..11) and column (0..2)."""
    return 3 * row + column + 1


def _covers() -> dict[BetKind, frozenset[frozenset[int]]]:
    rows, columns = range(12), range(3)
    splits = {frozenset({_number(r, c), _number(r, c + 1)}) for r in rows for c in range(2)}
    splits |= {frozenset({_number(r, c), _number(r + 1, c)}) for r in range(11) for c in columns}
    splits |= {frozenset({0, n}) for n in (1, 2, 3)}
    streets = {frozenset(_number(r, c) for c in columns) for r in rows}
    streets |= {frozenset({0, 1, 2}), frozenset({0, 2, 3})}  # the two zero "trios"
    corners = {
        frozenset({_number(r, c), _number(r, c + 1), _number(r + 1, c), _number(r + 1, c + 1)})
        for r in range(11)
        for c in range(2)
    }
    corners.add(frozenset({0, 1, 2, 3}))  # "first four"
    lines = {frozenset(_number(r + d, c) for d in (0, 1) for c in columns) for r in range(11)}
    return {
        BetKind.STRAIGHT: frozenset(frozenset({n}) for n in range(POCKETS)),
        BetKind.SPLIT: frozenset(splits),
        BetKind.STREET: frozenset(streets),
        BetKind.CORNER: frozenset(corners),
        BetKind.LINE: frozenset(lines),
        BetKind.DOZEN: frozenset(frozenset(range(12 * d + 1, 12 * d + 13)) for d in range(3)),
        BetKind.COLUMN: frozenset(frozenset(range(c + 1, 37, 3)) for c in columns),
        BetKind.RED: frozenset({RED}),
        BetKind.BLACK: frozenset({BLACK}),
        BetKind.ODD: frozenset({frozenset(range(1, 37, 2))}),
        BetKind.EVEN: frozenset({frozenset(range(2, 37, 2))}),
        BetKind.LOW: frozenset({frozenset(range(1, 19))}),
        BetKind.HIGH: frozenset({frozenset(range(19, 37))}),
    }


# Every valid selection of every bet kind, as the set of numbers it covers.
COVERS: dict[BetKind, frozenset[frozenset[int]]] = _covers()

# Even-money bets and dozens/columns need no numbers from the player: their single selection
# (even-money) or an index 1..3 (dozen, column) says it all.
_OUTSIDE_FIXED = {BetKind.RED, BetKind.BLACK, BetKind.ODD, BetKind.EVEN, BetKind.LOW, BetKind.HIGH}
_OUTSIDE_INDEXED = {BetKind.DOZEN, BetKind.COLUMN}


@dataclass(frozen=True, slots=True)
class RouletteBet:
    """One bet. ``numbers``: the covered numbers for inside bets (STRAIGHT..LINE), the index
    1..3 for DOZEN and COLUMN, empty for the even-money bets."""

    kind: BetKind
    stake: int
    numbers: tuple[int, ...] = ()
    covered: frozenset[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.stake, bool) or not isinstance(self.stake, int) or self.stake <= 0:
            raise InvalidArgument("stake", f"stake must be a positive integer, got {self.stake!r}")
        if not isinstance(self.kind, BetKind):
            raise InvalidArgument("kind", f"unknown bet kind {self.kind!r}")
        if any(isinstance(n, bool) or not isinstance(n, int) for n in self.numbers):
            raise InvalidArgument("numbers", "numbers must be integers")
        # The pockets this bet wins on, resolved once; InvalidArgument if not on the table.
        object.__setattr__(self, "covered", self._resolve_cover())

    def _resolve_cover(self) -> frozenset[int]:
        if self.kind in _OUTSIDE_FIXED:
            if self.numbers:
                raise InvalidArgument("numbers", f"a {self.kind} bet takes no numbers")
            (cover,) = COVERS[self.kind]
            return cover
        if self.kind in _OUTSIDE_INDEXED:
            if len(self.numbers) != 1 or not 1 <= self.numbers[0] <= 3:
                raise InvalidArgument("numbers", f"a {self.kind} bet takes one index in 1..3")
            if self.kind is BetKind.DOZEN:
                return frozenset(range(12 * self.numbers[0] - 11, 12 * self.numbers[0] + 1))
            return frozenset(range(self.numbers[0], 37, 3))
        cover = frozenset(self.numbers)
        if len(cover) != len(self.numbers) or cover not in COVERS[self.kind]:
            raise InvalidArgument(
                "numbers",
                f"{sorted(self.numbers)} is not a {self.kind} on a European table",
            )
        return cover

    def returns(self, pocket: int) -> int:
        """Minor units paid back for this bet when ``pocket`` comes up (stake included)."""
        if pocket in self.covered:
            return self.stake * (PAYOUTS[self.kind] + 1)
        return 0


@dataclass(frozen=True, slots=True)
class RouletteOutcome(Outcome):
    pocket: int
    bet_returns: tuple[int, ...]  # per bet, in the order placed


def validate(bets: Sequence[RouletteBet]) -> None:
    if not bets:
        raise InvalidArgument("bets", "at least one bet is required")


def settle(bets: Sequence[RouletteBet], pocket: int) -> tuple[int, ...]:
    """What each bet returns when ``pocket`` comes up."""
    if not 0 <= pocket < POCKETS:
        raise ValueError(f"pocket out of range: {pocket}")
    return tuple(bet.returns(pocket) for bet in bets)


def ranges(bets: Sequence[RouletteBet]) -> tuple[int, ...]:
    """The range of each integer the spin draws, in draw order: one pocket in [0, POCKETS).
    Refuses an empty table first, so nothing is drawn for a spin that cannot be settled."""
    validate(bets)
    return (POCKETS,)


def resolve(bets: Sequence[RouletteBet], draws: Sequence[int]) -> RouletteOutcome:
    """The outcome of a spin whose integers, drawn in the ranges ``ranges(bets)``, are
    ``draws``: what ``play`` settles when its stream yields them. ValueError if they could
    not have been drawn (wrong count, not an integer, out of range)."""
    validate(bets)
    if len(draws) != 1:
        raise ValueError(f"a roulette spin draws 1 integer, got {len(draws)}")
    pocket = draws[0]
    if isinstance(pocket, bool) or not isinstance(pocket, int) or not 0 <= pocket < POCKETS:
        raise ValueError(f"a pocket is an integer in 0..{POCKETS - 1}, got {pocket!r}")
    returns = settle(bets, pocket)
    return RouletteOutcome(
        version=VERSION,
        stake=sum(bet.stake for bet in bets),
        payout=sum(returns),
        draws=(pocket,),
        pocket=pocket,
        bet_returns=returns,
    )


def play(stream: ByteStream, bets: Sequence[RouletteBet]) -> RouletteOutcome:
    return resolve(bets, tuple(draw(stream, n) for n in ranges(bets)))


def _unit_bet(kind: BetKind, cover: Iterable[int]) -> RouletteBet:
    cover = frozenset(cover)
    if kind in _OUTSIDE_FIXED:
        return RouletteBet(kind, 1)
    if kind is BetKind.DOZEN:
        return RouletteBet(kind, 1, ((min(cover) + 11) // 12,))
    if kind is BetKind.COLUMN:
        return RouletteBet(kind, 1, (min(cover),))
    return RouletteBet(kind, 1, tuple(sorted(cover)))


def moments(bets: Sequence[RouletteBet]) -> tuple[Fraction, Fraction]:
    """(E[R], E[R^2]) of the return per unit stake of a set of bets placed together, by
    enumerating all 37 pockets."""
    validate(bets)
    staked = sum(bet.stake for bet in bets)
    returns = [Fraction(sum(settle(bets, pocket)), staked) for pocket in range(POCKETS)]
    mean = sum(returns, Fraction(0)) / POCKETS
    return mean, sum((r * r for r in returns), Fraction(0)) / POCKETS


def set_variance(bets: Sequence[RouletteBet]) -> Fraction:
    """Exact variance of the return per unit stake of one spin with these bets."""
    mean, second = moments(bets)
    return second - mean * mean


def rtp(kind: BetKind) -> Fraction:
    """Exact RTP of a bet kind, enumerated over every valid selection and every pocket; raises
    if two selections of the same kind disagree (they never do: each pays 36/k - 1 to one)."""
    values = {moments([_unit_bet(kind, cover)])[0] for cover in COVERS[kind]}
    (value,) = values
    return value


def variance(kind: BetKind) -> Fraction:
    """Exact variance of the return per unit stake of one bet of this kind."""
    return set_variance([_unit_bet(kind, next(iter(COVERS[kind])))])
