"""services/rng/sp800_22.py: the worked examples of NIST SP 800-22 Rev. 1a, cross-checks
against direct (slow) implementations of the definitions, a fixed pseudo-random sequence,
clearly non-random sequences, and the second-level summary. Pure and deterministic.

Published values (section numbers of SP 800-22 Rev. 1a) are asserted to the decimals the
publication prints. Two worked examples are deliberately *not* asserted as published:

- Discrete Fourier transform (2.6.4 and 2.6.8): the examples print N1 = 4 for 1001010011
  and N1 = 46 for the 100-bit sequence, but the transforms of those sequences give N1 = 5
  and N1 = 48 under either threshold the publication has used (sqrt(3n) in Rev. 1,
  sqrt(ln(1/0.05) n) in Rev. 1a), so P = 0.468160 / 0.646355 rather than 0.029523 /
  0.168669. What *is* reproducible is the P-value formula: the printed N1 gives the printed
  P only with d = (N1 - N0) / sqrt(n 0.95 0.05 / 4) (the divisor 2 gives 0.123811 / 0.330390),
  which is the formula STS 2.1.2 and this module use; the tests assert that, and that N1
  agrees with a direct O(n^2) DFT.
- Random excursions (2.14.4): not asserted (not sure enough of the printed figure).
"""

from __future__ import annotations

import cmath
import math

import numpy as np
import pytest

from services.rng import sp800_22 as sp
from services.rng.drbg import RoundStream

# The first 100 bits of the binary expansion of pi, the sequence of the examples in
# 2.1.8, 2.2.8, 2.3.8, 2.6.8, 2.12.8 and 2.13.8.
PI_100 = (
    "11001001000011111101101010100010001000010110100011"
    "00001000110100110001001100011001100010100010111000"
)
# The 128-bit sequence of the longest-run example, 2.4.8.
LONGEST_RUN_128 = (
    "11001100000101010110110001001100111000000000001001"
    "00110101010001000100111101011010000000110101111100"
    "1100111001101101100010110010"
)

N = 1_000_000


def bits(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), dtype=np.uint8) - ord("0")


def close(value: float, published: float, decimals: int = 6) -> None:
    assert value == pytest.approx(published, abs=0.5 * 10**-decimals)


# --- published worked examples ----------------------------------------------------------------


def test_example_sequences_have_the_published_lengths() -> None:
    assert bits(PI_100).size == 100
    assert bits(LONGEST_RUN_128).size == 128


def test_frequency_examples() -> None:
    close(sp.frequency(bits("1011010101")).p_values[0], 0.527089)  # 2.1.4
    close(sp.frequency(bits(PI_100)).p_values[0], 0.109599)  # 2.1.8


def test_block_frequency_examples() -> None:
    close(sp.block_frequency(bits("0110011010"), 3).p_values[0], 0.801252)  # 2.2.4
    close(sp.block_frequency(bits(PI_100), 10).p_values[0], 0.706438)  # 2.2.8


def test_runs_examples() -> None:
    close(sp.runs(bits("1001101011")).p_values[0], 0.147232)  # 2.3.4
    close(sp.runs(bits(PI_100)).p_values[0], 0.500798)  # 2.3.8


def test_longest_run_example() -> None:
    # 2.4.8: n = 128 selects M = 8 (nu = 4, 9, 3, 0).
    close(sp.longest_run_of_ones(bits(LONGEST_RUN_128)).p_values[0], 0.180609)


def test_dft_p_value_formula_reproduces_the_published_examples() -> None:
    close(sp.dft_p_value(4, 10), 0.029523)  # 2.6.4 with its printed N1 = 4
    close(sp.dft_p_value(46, 100), 0.168669)  # 2.6.8 with its printed N1 = 46


@pytest.mark.parametrize("text", ["1001010011", PI_100])
def test_dft_counts_peaks_as_a_direct_transform_does(text: str) -> None:
    x = [2 * int(c) - 1 for c in text]
    n = len(x)
    moduli = [
        abs(sum(x[k] * cmath.exp(-2j * math.pi * j * k / n) for k in range(n)))
        for j in range(n // 2)
    ]
    n1 = sum(1 for m in moduli if m < math.sqrt(math.log(20) * n))
    assert sp.dft(bits(text)).p_values[0] == pytest.approx(sp.dft_p_value(n1, n), abs=1e-12)


def test_non_overlapping_template_example() -> None:
    # 2.7.4: template 001, N = 2 blocks of M = 10; W = 2, 1; chi^2 = 2.133333.
    result = sp.non_overlapping_template(bits("10100100101110010110"), [(0, 0, 1)], blocks=2)
    close(result.p_values[0], 0.344154)


def test_universal_statistic_example() -> None:
    # 2.9.4: L = 2, Q = 4, K = 6, sum = 7.169925, f_n = 1.1949875. (The example's P-value
    # 0.767189 uses sigma = sqrt(variance) without the c(L, K) factor of the real test.)
    f_n, k = sp.universal_statistic(bits("01011010011101010111"), 2, 4)
    assert k == 6
    close(f_n, 1.1949875, 7)


def test_serial_example() -> None:
    result = sp.serial(bits("0011011101"), 3)  # 2.11.4
    close(result.p_values[0], 0.808792)
    close(result.p_values[1], 0.670320)


def test_approximate_entropy_examples() -> None:
    close(sp.approximate_entropy(bits("0100110101"), 3).p_values[0], 0.261961)  # 2.12.4
    close(sp.approximate_entropy(bits(PI_100), 2).p_values[0], 0.235301)  # 2.12.8


def test_cumulative_sums_examples() -> None:
    # 2.13.4 prints 0.4116588; the exact value is 0.41165862 (same to 6 decimals). These
    # need STS's truncating integer summation bounds: floor division gives 0.41158.
    close(sp.cumulative_sums(bits("1011010111")).p_values[0], 0.411659)
    forward, backward = sp.cumulative_sums(bits(PI_100)).p_values  # 2.13.8
    close(forward, 0.219194)
    close(backward, 0.114866)


# --- hand-computed from the definitions -------------------------------------------------------


def test_random_excursions_variant_small_walk() -> None:
    # 0110110101: S = -1 0 1 0 1 2 1 2 1 2, J = 3 cycles, state +1 visited 4 times.
    result = sp.random_excursions_variant(bits("0110110101"), min_cycles=0)
    assert result.labels[9] == "x=+1"
    close(result.p_values[9], math.erfc(1 / math.sqrt(2 * 3 * 2)))


def test_aperiodic_templates() -> None:
    templates = sp.aperiodic_templates(9)
    assert len(templates) == 148
    assert templates[0] == (0, 0, 0, 0, 0, 0, 0, 0, 1)
    assert templates[-1] == (1, 1, 1, 1, 1, 1, 1, 1, 0)
    assert (1, 1, 1, 1, 1, 1, 1, 1, 1) not in templates
    assert (0, 1, 0, 1, 0, 1, 0, 1, 0) not in templates
    assert sp.aperiodic_templates(2) == ((0, 1), (1, 0))


def test_rank_class_probabilities() -> None:
    # Section 3.5: 0.2888, 0.5776, 0.1336 are these, rounded.
    assert sp._rank_probability(32) == pytest.approx(0.2888, abs=5e-5)
    assert sp._rank_probability(31) == pytest.approx(0.5776, abs=5e-5)


# --- cross-checks against direct implementations ------------------------------------------------


def berlekamp_massey(s: list[int]) -> int:
    """Textbook Berlekamp-Massey (as in STS's linearComplexity.c)."""
    m_len = len(s)
    c, b = [1] + [0] * m_len, [1] + [0] * m_len
    lc, m = 0, -1
    for n in range(m_len):
        d = s[n]
        for i in range(1, lc + 1):
            d ^= c[i] & s[n - i]
        if d:
            t = c[:]
            for j in range(m_len + 1 - (n - m)):
                c[j + n - m] ^= b[j]
            if 2 * lc <= n:
                lc, m, b = n + 1 - lc, n, t
    return lc


def test_linear_complexity_matches_textbook_berlekamp_massey() -> None:
    rng = np.random.default_rng(7)
    blocks = rng.integers(0, 2, (24, 500)).astype(np.uint8)
    blocks[0] = 0
    blocks[1] = 1
    blocks[2, :-1] = 0
    blocks[2, -1] = 1
    blocks[3] = np.tile([0, 1], 250)
    blocks[4, :450] = 0
    expected = [berlekamp_massey([int(v) for v in row]) for row in blocks]
    assert expected[:4] == [0, 1, 500, 2]
    assert sp.linear_complexities(blocks).tolist() == expected


def gf2_rank(matrix: np.ndarray) -> int:
    rows = [int("".join(map(str, r)), 2) for r in matrix]
    rank = 0
    for bit in reversed(range(32)):
        pivot = next((i for i in range(rank, 32) if rows[i] >> bit & 1), None)
        if pivot is None:
            continue
        rows[rank], rows[pivot] = rows[pivot], rows[rank]
        for i in range(32):
            if i != rank and rows[i] >> bit & 1:
                rows[i] ^= rows[rank]
        rank += 1
    return rank


def test_gf2_ranks_match_gaussian_elimination() -> None:
    rng = np.random.default_rng(11)
    matrices = rng.integers(0, 2, (40, 32, 32)).astype(np.uint8)
    for k in range(20):  # low-rank products
        matrices[k] = (rng.integers(0, 2, (32, k + 1)) @ rng.integers(0, 2, (k + 1, 32))) % 2
    words = np.packbits(matrices.reshape(-1, 32), axis=1).view(">u4").astype(np.uint32)
    got = sp.gf2_ranks(words.reshape(40, 32)).tolist()
    assert got == [gf2_rank(m) for m in matrices]
    assert min(got) < 30


def test_non_overlapping_count_skips_after_a_match() -> None:
    # A periodic template takes the scanning path: 0101 in 0101010100 matches at 0 and 4
    # only (after a match the scan resumes m positions later).
    one_block = bits("0101010100")
    result = sp.non_overlapping_template(one_block, [(0, 1, 0, 1)], blocks=1)
    mu = (10 - 4 + 1) / 16
    var = 10 * (1 / 16 - 7 / 256)
    assert result.p_values[0] == pytest.approx(sp.igamc(0.5, (2 - mu) ** 2 / var / 2))


def excursion_counts_direct(walk: list[int]) -> list[list[int]]:
    """visits[cycle][state index] by walking the cycles one at a time."""
    cycles: list[list[int]] = [[0] * 8]
    states = (-4, -3, -2, -1, 1, 2, 3, 4)
    for s in walk:
        if s == 0:
            cycles.append([0] * 8)
        elif s in states:
            cycles[-1][states.index(s)] += 1
    if walk[-1] == 0:
        cycles.pop()
    return cycles


def test_random_excursions_match_direct_cycle_walk() -> None:
    data = sp.bits_from_bytes(RoundStream(bytes(32), b"sp800-22/walk").read(2500))
    walk = np.cumsum(2 * data.astype(np.int64) - 1).tolist()
    cycles = excursion_counts_direct(walk)
    p_values = []
    for i, x in enumerate((-4, -3, -2, -1, 1, 2, 3, 4)):
        observed = np.bincount([min(c[i], 5) for c in cycles], minlength=6)
        expected = len(cycles) * sp._excursion_pi(x)
        chi2 = float(np.sum((observed - expected) ** 2 / expected))
        p_values.append(sp.igamc(2.5, chi2 / 2))
    result = sp.random_excursions(data, min_cycles=0)
    assert result.p_values == pytest.approx(p_values)


# --- whole battery ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fixed_results() -> list[sp.Result]:
    # A fixed ChaCha20 stream, chosen so that the walk has J >= 500 cycles (the random
    # excursion tests apply). Deterministic: the assertions below can never flake.
    data = RoundStream(bytes(32), b"sp800-22/excursions/0").read(N // 8)
    return sp.run_all(sp.bits_from_bytes(data))


def test_battery_has_every_test_and_sub_test(fixed_results: list[sp.Result]) -> None:
    widths = {r.name: len(r.p_values) for r in fixed_results}
    assert widths == {
        "Frequency": 1,
        "BlockFrequency": 1,
        "CumulativeSums": 2,
        "Runs": 1,
        "LongestRun": 1,
        "Rank": 1,
        "FFT": 1,
        "NonOverlappingTemplate": 148,
        "OverlappingTemplate": 1,
        "Universal": 1,
        "ApproximateEntropy": 1,
        "RandomExcursions": 8,
        "RandomExcursionsVariant": 18,
        "Serial": 2,
        "LinearComplexity": 1,
    }


def test_fixed_pseudo_random_sequence_passes(fixed_results: list[sp.Result]) -> None:
    for result in fixed_results:
        assert result.applicable, result.name
        assert all(0.0 <= p <= 1.0 for p in result.p_values), result.name
        failed = sum(1 for p in result.p_values if p < sp.ALPHA)
        if len(result.p_values) <= 2:
            assert failed == 0, (result.name, result.p_values)
        else:  # ~1 % of many sub-tests fail at alpha = 0.01 by design
            assert failed <= max(2, len(result.p_values) // 20), (result.name, failed)


def failing(data: np.ndarray) -> set[str]:
    return {r.name for r in sp.run_all(data) if r.applicable and not r.passed()}


def test_all_zeros_fail() -> None:
    failed = failing(np.zeros(N, dtype=np.uint8))
    assert failed == {r.name for r in sp.run_all(np.zeros(N, dtype=np.uint8)) if r.applicable}
    assert {"Frequency", "Runs", "Rank", "LinearComplexity", "Universal"} <= failed


def test_alternating_sequence_fails() -> None:
    failed = failing(np.tile(np.array([0, 1], dtype=np.uint8), N // 2))
    assert {"Runs", "FFT", "Serial", "ApproximateEntropy", "LinearComplexity"} <= failed
    assert "Frequency" not in failed  # exactly balanced


def test_biased_sequence_fails() -> None:
    words = np.frombuffer(RoundStream(bytes(32), b"sp800-22/bias").read(2 * N), dtype="<u2")
    biased = (words < round(0.52 * 65536)).astype(np.uint8)
    assert 0.515 < biased.mean() < 0.525
    failed = failing(biased)
    assert {"Frequency", "BlockFrequency", "CumulativeSums", "Runs"} <= failed


def test_short_input_marks_tests_not_applicable() -> None:
    results = {r.name: r for r in sp.run_all(bits(PI_100 * 10))}
    assert not results["Universal"].applicable
    assert not results["RandomExcursions"].applicable
    assert results["Universal"].p_values == ()
    assert not results["Universal"].passed()
    assert results["Frequency"].applicable


# --- second-level analysis ----------------------------------------------------------------------


def result_set(p: float, excursions: bool) -> list[sp.Result]:
    return [
        sp.Result("Frequency", (p,)),
        sp.Result("Serial", (p, 1 - p), labels=("P1", "P2")),
        sp.Result("RandomExcursions", (p,) * 8 if excursions else (), applicable=excursions),
    ]


def test_summary_proportions_and_uniformity() -> None:
    # 100 sequences: P-values spread evenly over the ten bins, one of them below 0.01.
    ps = [(i + 0.5) / 100 for i in range(100)]
    summary = sp.summarise([result_set(p, excursions=i % 2 == 0) for i, p in enumerate(ps)])
    by_key = {(s.name, s.index): s for s in summary}
    assert len(summary) == 1 + 2 + 8
    freq = by_key[("Frequency", 0)]
    assert (freq.sequences, freq.passed) == (100, 99)
    assert freq.proportion_range == pytest.approx((0.960150, 1.019850), abs=1e-6)
    assert freq.proportion_ok
    assert freq.uniformity == pytest.approx(1.0)
    assert freq.ok
    assert by_key[("Serial", 1)].label == "P2"
    # 4 or more of 100 failing at alpha = 0.01 is outside the range: P = 0.0184.
    assert sp.chance_outside_range(100) == pytest.approx(0.018374, abs=1e-6)
    # Random excursions counts only the sequences it applied to; 50 < 55: no uniformity.
    excursion = by_key[("RandomExcursions", 7)]
    assert excursion.sequences == 50
    assert excursion.uniformity is None
    assert excursion.uniformity_ok is None


def test_summary_flags_failures() -> None:
    low = [0.005 if i % 10 == 0 else 0.5 + i / 1000 for i in range(100)]
    summary = sp.summarise([[sp.Result("Frequency", (p,))] for p in low])[0]
    assert summary.passed == 90
    assert not summary.proportion_ok
    assert summary.uniformity is not None
    assert summary.uniformity < sp.UNIFORMITY_ALPHA
    assert summary.uniformity_ok is False
    assert not summary.ok
