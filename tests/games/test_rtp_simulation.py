"""Each game's exact RTP, checked by simulation through the real RNG path: one million rounds
per game, drawn from ChaCha20 round streams keyed by a ChaChaDrbg, mapped by uniform_int and
settled by the game's own play(). The simulated return per unit stake must land within 3
standard deviations (sigma = sqrt(variance / N)) of the exact RTP.

To fit the test budget, 16 consecutive rounds share one RoundStream (a fresh 32-byte DRBG seed
per stream); ``bench/games_rtp.py`` runs the unbatched one-stream-per-round path. The DRBG is
keyed with a fixed seed so the run is reproducible: a failure is a real discrepancy, not the
0.27% chance of a 3-sigma excursion showing up on some CI run.
"""

from __future__ import annotations

import hashlib

import pytest

from services.games.math import rtp_simulation
from services.rng.drbg import ChaChaDrbg

ROUNDS = 1_000_000
ROUNDS_PER_STREAM = 16


@pytest.mark.parametrize("case", rtp_simulation.cases(), ids=lambda case: case.name)
def test_simulated_rtp_lands_within_three_sigma_of_exact(case: rtp_simulation.GameCase) -> None:
    drbg = ChaChaDrbg.from_seed(
        hashlib.sha256(b"games-rtp-simulation/" + case.name.encode()).digest()
    )
    result = rtp_simulation.simulate(case, ROUNDS, drbg, rounds_per_stream=ROUNDS_PER_STREAM)
    print(
        f"{case.name}: exact RTP {float(case.rtp):.6f}, simulated {result.simulated_rtp:.6f}, "
        f"sigma {result.sigma:.6f}, z {result.z:+.2f}, {result.rounds_per_second:,.0f} rounds/s"
    )
    assert result.rounds == ROUNDS
    assert abs(result.z) <= 3
