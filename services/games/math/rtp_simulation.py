"""Monte Carlo check of each game's exact RTP through the real RNG path.

Each round's stream is a ``services.rng.drbg.RoundStream`` keyed by a fresh 32-byte round seed
from a ``ChaChaDrbg`` (exactly how the service draws), and every integer goes through
``uniform_int``. ``rounds_per_stream`` > 1 lets several consecutive rounds read one stream
(the seed and a batch counter in the context) to save the ~10 us of key derivation per
round: the bytes are still ChaCha20 output mapped by the same sampling code, only fewer
keys are derived. The benchmark runs with 1 (the real per-round path).

The simulated mean return per unit stake over N rounds has standard deviation
``sqrt(variance / N)``; ``z`` says how many of those the simulation lands from the exact RTP.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

from services.games.math import dice, roulette, slot
from services.games.math.outcome import ByteStream, Outcome
from services.rng.drbg import ChaChaDrbg, RoundStream


@dataclass(frozen=True)
class GameCase:
    """One game with one fixed bet: its exact moments and how to play a round."""

    name: str
    version: str
    rtp: Fraction
    variance: Fraction
    play: Callable[[ByteStream], Outcome]


@dataclass(frozen=True)
class SimulationResult:
    case: GameCase
    rounds: int
    staked: int
    returned: int
    seconds: float

    @property
    def simulated_rtp(self) -> float:
        return self.returned / self.staked

    @property
    def sigma(self) -> float:
        return math.sqrt(float(self.case.variance) / self.rounds)

    @property
    def z(self) -> float:
        return (self.simulated_rtp - float(self.case.rtp)) / self.sigma

    @property
    def rounds_per_second(self) -> float:
        return self.rounds / self.seconds


def dice_case() -> GameCase:
    bet = dice.DiceBet(stake=100, target=2500, direction=dice.Direction.UNDER)
    return GameCase(
        "dice", dice.VERSION, dice.rtp(bet), dice.variance(bet), lambda s: dice.play(s, bet)
    )


# One bet of every kind on the same spin, so every payout rule is exercised.
ROULETTE_TABLE: tuple[roulette.RouletteBet, ...] = (
    roulette.RouletteBet(roulette.BetKind.STRAIGHT, 10, (17,)),
    roulette.RouletteBet(roulette.BetKind.SPLIT, 10, (0, 2)),
    roulette.RouletteBet(roulette.BetKind.STREET, 10, (19, 20, 21)),
    roulette.RouletteBet(roulette.BetKind.CORNER, 10, (26, 27, 29, 30)),
    roulette.RouletteBet(roulette.BetKind.LINE, 10, (31, 32, 33, 34, 35, 36)),
    roulette.RouletteBet(roulette.BetKind.DOZEN, 10, (2,)),
    roulette.RouletteBet(roulette.BetKind.COLUMN, 10, (3,)),
    roulette.RouletteBet(roulette.BetKind.RED, 10),
    roulette.RouletteBet(roulette.BetKind.BLACK, 10),
    roulette.RouletteBet(roulette.BetKind.ODD, 10),
    roulette.RouletteBet(roulette.BetKind.EVEN, 10),
    roulette.RouletteBet(roulette.BetKind.LOW, 10),
    roulette.RouletteBet(roulette.BetKind.HIGH, 10),
)


def roulette_case() -> GameCase:
    mean, second = roulette.moments(ROULETTE_TABLE)
    return GameCase(
        "roulette",
        roulette.VERSION,
        mean,
        second - mean * mean,
        lambda s: roulette.play(s, ROULETTE_TABLE),
    )


def slot_case() -> GameCase:
    bet = slot.SlotBet(line_bet=1)
    return GameCase("slot", slot.VERSION, slot.rtp(), slot.variance(), lambda s: slot.play(s, bet))


def cases() -> list[GameCase]:
    return [dice_case(), roulette_case(), slot_case()]


def simulate(
    case: GameCase, rounds: int, drbg: ChaChaDrbg, *, rounds_per_stream: int = 1
) -> SimulationResult:
    if rounds < 1 or rounds_per_stream < 1:
        raise ValueError("rounds and rounds_per_stream must be positive")
    context = case.version.encode()
    play = case.play
    staked = returned = 0
    started = time.perf_counter()
    played = 0
    while played < rounds:
        stream = RoundStream(drbg.generate(32), context)
        for _ in range(min(rounds_per_stream, rounds - played)):
            outcome = play(stream)
            staked += outcome.stake
            returned += outcome.payout
            played += 1
    return SimulationResult(case, played, staked, returned, time.perf_counter() - started)
