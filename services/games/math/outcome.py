"""What every game's math shares: the stream it draws from and the outcome it returns."""

from __future__ import annotations

from dataclasses import dataclass

from services.rng.sampling import ByteStream, uniform_int

__all__ = ["ByteStream", "Outcome", "draw"]


def draw(stream: ByteStream, n: int) -> int:
    """One integer in [0, n), unbiased: games never look at the stream's bytes themselves."""
    return uniform_int(stream, n)


@dataclass(frozen=True, slots=True)
class Outcome:
    """The settled result of one round: what was staked and what is paid back (stake included,
    0 on a loss), in minor units, and the integers drawn (in draw order) so a replay can be
    compared draw by draw."""

    version: str
    stake: int
    payout: int
    draws: tuple[int, ...]
