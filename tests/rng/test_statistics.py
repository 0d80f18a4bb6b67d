"""Statistical evidence in bounded size (the larger run is bench/rng_stats.py).

Every sample comes from fixed round seeds, so the suite is reproducible (no flaky failures);
alpha = 0.001 per test. The biased fixture shows the scaled-output test has power: at the
same sample size it rejects a bare ``byte % 37`` mapping.
"""

from __future__ import annotations

import math

import pytest

from services.rng import stats
from services.rng.drbg import ChaChaDrbg, RoundStream
from services.rng.sampling import shuffle, uniform_int

RAW_BYTES = 1 << 20
SCALED_SAMPLES = 200_000


@pytest.fixture(scope="module")
def raw() -> bytes:
    return RoundStream(b"statistics-raw-seed-000000000000", b"raw").read(RAW_BYTES)


def test_raw_bytes_chi_square(raw: bytes) -> None:
    chi2 = stats.chi_square_uniform(stats.byte_counts(raw))
    assert chi2 < stats.chi_square_critical(255)


def test_live_drbg_bytes_chi_square() -> None:
    data = ChaChaDrbg().generate(RAW_BYTES)
    # Fresh OS seed: use the stricter alpha so a correct generator fails 1 run in 10^4.
    assert stats.chi_square_uniform(stats.byte_counts(data)) < stats.chi_square_critical(
        255, stats.Z_0001
    )


def test_raw_bits_runs(raw: bytes) -> None:
    assert abs(stats.runs_z(raw[: 1 << 17])) < stats.Z_001


def test_raw_bytes_serial_correlation(raw: bytes) -> None:
    assert abs(stats.serial_correlation(raw)) < stats.Z_001 / math.sqrt(len(raw))


def test_runs_and_correlation_catch_patterned_streams(raw: bytes) -> None:
    # Each random bit smeared over a whole byte: far too few runs.
    smeared = bytes(0 if b < 128 else 255 for b in raw[:8192])
    assert abs(stats.runs_z(smeared)) > stats.Z_001
    # Each random byte repeated four times: strongly correlated with its neighbour.
    patterned = bytes(raw[i // 4] for i in range(1 << 16))
    assert abs(stats.serial_correlation(patterned)) > stats.Z_001 / math.sqrt(len(patterned))


def scaled_counts(n: int, samples: int) -> list[int]:
    stream = RoundStream(b"statistics-scaled-seed-000000000", f"n={n}".encode())
    counts = [0] * n
    for _ in range(samples):
        counts[uniform_int(stream, n)] += 1
    return counts


@pytest.mark.parametrize("n", [6, 37, 52, 10001])
def test_uniform_int_chi_square_per_range(n: int) -> None:
    counts = scaled_counts(n, SCALED_SAMPLES)
    assert stats.chi_square_uniform(counts) < stats.chi_square_critical(n - 1)


def test_biased_modulo_fixture_is_caught_at_the_same_sample_size() -> None:
    # Test fixture only: a bare modulo of single bytes onto 37 pockets (pockets 0..33 get
    # 7/256, pockets 34..36 get 6/256).
    stream = RoundStream(b"statistics-scaled-seed-000000000", b"n=37")
    counts = [0] * 37
    for b in stream.read(SCALED_SAMPLES):
        counts[b % 37] += 1
    assert stats.chi_square_uniform(counts) > stats.chi_square_critical(36)


def test_shuffled_decks_are_uniform_in_every_position() -> None:
    decks = 2600  # expected 50 per (card, position) cell
    table = [[0] * 52 for _ in range(52)]
    stream = RoundStream(b"statistics-shuffle-seed-00000000", b"deck")
    for _ in range(decks):
        for position, card in enumerate(shuffle(stream, range(52))):
            table[card][position] += 1
    chi2 = stats.positional_chi_square(table)
    # Each card's row sums to `decks`; rows are independent-ish -> df = 52 * 51.
    assert chi2 < stats.chi_square_critical(52 * 51)
    # And no single card is stuck near a position (per-row check).
    assert all(stats.chi_square_uniform(row) < stats.chi_square_critical(51, 4.5) for row in table)


def test_biased_shuffle_fixture_is_caught() -> None:
    # The classic naive shuffle (swap each position with any position) is biased.
    decks = 2600
    table = [[0] * 52 for _ in range(52)]
    stream = RoundStream(b"statistics-shuffle-seed-00000000", b"naive")
    for _ in range(decks):
        deck = list(range(52))
        for i in range(52):
            j = uniform_int(stream, 52)
            deck[i], deck[j] = deck[j], deck[i]
        for position, card in enumerate(deck):
            table[card][position] += 1
    assert stats.positional_chi_square(table) > stats.chi_square_critical(52 * 51)
