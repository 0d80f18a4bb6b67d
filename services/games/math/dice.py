"""Dice: a roll in 0..9999; the player wins if it lands over or under a chosen target.

Payout rule (version ``dice/v1``): with ``w`` winning rolls out of 10000 the win probability
is ``p = w / 10000`` and the multiplier is ``m = (1 - house_edge) / p`` as an exact Fraction.
A win pays ``floor(stake * m)`` minor units (stake included); rounding is always DOWN, per
bet, so the platform never pays a fraction of a minor unit it does not have. The exact RTP of
a bet is therefore ``p * floor(stake * m) / stake``: it equals ``1 - house_edge`` when
``stake * m`` is a whole number and is below it by less than ``p / stake`` otherwise (for a
1.00 stake in cents at 1% edge, at most 0.01 percentage points). ``rtp(bet)`` includes that
rounding, ``nominal_rtp`` is ``1 - house_edge``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from services.games.math.outcome import ByteStream, Outcome, draw
from services.runtime.errors import InvalidArgument

VERSION = "dice/v1"
ROLLS = 10_000  # a roll is uniform_int(stream, ROLLS): 0..9999
DEFAULT_HOUSE_EDGE = Fraction(1, 100)


class Direction(enum.StrEnum):
    UNDER = "UNDER"  # wins when roll < target
    OVER = "OVER"  # wins when roll > target


@dataclass(frozen=True, slots=True)
class DiceBet:
    stake: int  # minor units
    target: int
    direction: Direction
    house_edge: Fraction = DEFAULT_HOUSE_EDGE

    def __post_init__(self) -> None:
        if isinstance(self.stake, bool) or not isinstance(self.stake, int) or self.stake <= 0:
            raise InvalidArgument("stake", f"stake must be a positive integer, got {self.stake!r}")
        if not isinstance(self.house_edge, Fraction) or not 0 <= self.house_edge < 1:
            raise InvalidArgument("house_edge", "house edge must be a Fraction in [0, 1)")
        if not isinstance(self.direction, Direction):
            raise InvalidArgument(
                "direction", f"direction must be UNDER or OVER, got {self.direction!r}"
            )
        if isinstance(self.target, bool) or not isinstance(self.target, int):
            raise InvalidArgument("target", f"target must be an integer, got {self.target!r}")
        if not 0 <= self.target < ROLLS:
            raise InvalidArgument("target", f"target must be in 0..{ROLLS - 1}, got {self.target}")
        if self.winning_rolls == 0:
            raise InvalidArgument("target", "this target and direction can never win")
        # A win must pay more than the stake back, or the bet is a certain loss dressed up.
        if self.multiplier <= 1:
            raise InvalidArgument(
                "target",
                f"win probability {self.winning_rolls}/{ROLLS} is too high for a house edge of "
                f"{self.house_edge}: the payout would not exceed the stake",
            )

    @property
    def winning_rolls(self) -> int:
        if self.direction is Direction.UNDER:
            return self.target
        return ROLLS - 1 - self.target

    @property
    def win_probability(self) -> Fraction:
        return Fraction(self.winning_rolls, ROLLS)

    @property
    def multiplier(self) -> Fraction:
        """Exact payout multiplier (stake included) before rounding to minor units."""
        return (1 - self.house_edge) / self.win_probability

    @property
    def win_payout(self) -> int:
        """Minor units paid on a win, stake included: floor(stake * multiplier)."""
        m = self.multiplier
        return self.stake * m.numerator // m.denominator

    def wins(self, roll: int) -> bool:
        if self.direction is Direction.UNDER:
            return roll < self.target
        return roll > self.target


def settle(bet: DiceBet, roll: int) -> int:
    """Minor units paid for ``roll`` (0 on a loss)."""
    if not 0 <= roll < ROLLS:
        raise ValueError(f"roll out of range: {roll}")
    return bet.win_payout if bet.wins(roll) else 0


def ranges(bet: DiceBet) -> tuple[int, ...]:
    """The range of each integer the round draws, in draw order: one roll in [0, ROLLS)."""
    return (ROLLS,)


def resolve(bet: DiceBet, draws: Sequence[int]) -> Outcome:
    """The outcome of a round whose integers, drawn in the ranges ``ranges(bet)``, are
    ``draws``: what ``play`` settles when its stream yields them. ValueError if they could
    not have been drawn (wrong count, not an integer, out of range)."""
    if len(draws) != 1:
        raise ValueError(f"a dice round draws 1 integer, got {len(draws)}")
    roll = draws[0]
    if isinstance(roll, bool) or not isinstance(roll, int) or not 0 <= roll < ROLLS:
        raise ValueError(f"a roll is an integer in 0..{ROLLS - 1}, got {roll!r}")
    return Outcome(version=VERSION, stake=bet.stake, payout=settle(bet, roll), draws=(roll,))


def play(stream: ByteStream, bet: DiceBet) -> Outcome:
    return resolve(bet, tuple(draw(stream, n) for n in ranges(bet)))


def nominal_rtp(house_edge: Fraction = DEFAULT_HOUSE_EDGE) -> Fraction:
    return 1 - house_edge


def rtp(bet: DiceBet) -> Fraction:
    """Exact expected return per unit stake of this bet, rounding of the payout included."""
    return bet.win_probability * Fraction(bet.win_payout, bet.stake)


def variance(bet: DiceBet) -> Fraction:
    """Exact variance of the return per unit stake of one round."""
    win_return = Fraction(bet.win_payout, bet.stake)
    return bet.win_probability * win_return**2 - rtp(bet) ** 2
