"""Pure game math: each module maps draws from a round stream to an outcome and a payout,
and states its exact theoretical RTP. No I/O, no clock, no RNG state of its own: the stream
is the round's deterministic byte stream (services.rng), and every integer is drawn through
``services.rng.sampling.uniform_int`` so the mapping is unbiased and replayable.

Versions: each game mapping has a version string recorded with every round
(``GAME_VERSIONS``); changing how draws map to outcomes or payouts means a new version."""

from __future__ import annotations

from services.games.math import dice, roulette, slot

GAME_VERSIONS: dict[str, str] = {
    "dice": dice.VERSION,
    "roulette": roulette.VERSION,
    "slot": slot.VERSION,
}
