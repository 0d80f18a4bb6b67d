"""NIST SP 800-22 Rev. 1a statistical test suite, vectorised with numpy.

The fifteen tests of the publication (section 2 describes each test and its worked
examples, section 3 the derivations), with the default parameters of the NIST reference
implementation STS 2.1.2, written as pure functions over a numpy ``uint8`` array of 0/1 bits.
Each returns a :class:`Result` with one or more P-values; :func:`run_all` runs the battery and
:func:`summarise` does the second-level analysis of section 4.2 over many sequences (the
proportion of sequences passing at alpha = 0.01, and the uniformity of the P-values).

Parameters and the places where the publication and STS differ, and what is used here:

- Block frequency M = 128.
- Longest run of ones: M = 8 / 128 / 10^4 chosen by n (section 2.4.2), class probabilities
  of STS 2.1.2 (exact for M = 8 and M = 128, the four-decimal ones of section 3.4 for 10^4).
- Binary matrix rank: 32 x 32 matrices over GF(2); the class probabilities are computed
  exactly (section 3.5; STS does the same), 0.2888 / 0.5776 / 0.1336 are their roundings.
- Discrete Fourier transform: the Rev. 1a threshold T = sqrt(ln(1/0.05) n), N0 = 0.95 n / 2
  and d = (N1 - N0) / sqrt(n 0.95 0.05 / 4), as in STS 2.1.2. (The small worked examples of
  section 2.6 are not reproducible with this definition; see the unit tests.)
- Non-overlapping template: m = 9 with all 148 aperiodic templates (generated, in
  lexicographic order as in STS's ``template9`` file), N = 8 blocks.
- Overlapping template: m = 9, the all-ones template, M = 1032, K = 5 and the corrected
  class probabilities of the Rev. 1a errata (STS 2.1.2).
- Maurer's universal test: L and Q = 10 * 2^L from the table of section 2.9.7 by n (L = 7,
  Q = 1280 for n = 10^6); not applicable below n = 387 840.
- Linear complexity: M = 500, K = 6 and the class probabilities of section 3.10 (STS 2.1.2
  has a typo, 0.01047 for pi_0 = 0.010417; the publication's value is used).
- Serial m = 16, approximate entropy m = 10 (both on the cyclically wrapped sequence).
- Random excursions and random excursions variant: not applicable when the number of cycles
  J < max(0.005 sqrt(n), 500) (STS's constraint; 500 for n = 10^6).
- Cumulative sums: forward then backward, with STS's integer (truncating) summation bounds,
  which reproduce the published 0.4116588 of the example of section 2.13.4.

A test whose prerequisite fails (the runs test when the frequency of ones is too far from
1/2) reports P = 0.0, as the publication specifies; a test that cannot be computed at all for
the input (too short, or too few random-walk cycles) has ``applicable=False`` and no P-values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.special import gammaincc, ndtr

Bits = NDArray[np.uint8]

ALPHA = 0.01
MIN_SEQUENCES_FOR_UNIFORMITY = 55
UNIFORMITY_ALPHA = 0.0001


@dataclass(frozen=True)
class Result:
    """One test on one sequence: its P-values (one per sub-test) and whether it applied."""

    name: str
    p_values: tuple[float, ...]
    applicable: bool = True
    labels: tuple[str, ...] = ()  # one per P-value when there are several

    def passed(self, alpha: float = ALPHA) -> bool:
        return self.applicable and all(p >= alpha for p in self.p_values)


def igamc(a: float, x: float) -> float:
    """The regularised upper incomplete gamma function Q(a, x) of the publication."""
    return float(gammaincc(a, x))


def bits_from_bytes(data: bytes) -> Bits:
    """The bits of ``data``, most significant bit of each byte first."""
    return np.unpackbits(np.frombuffer(data, dtype=np.uint8))


def _as_bits(bits: Any) -> Bits:
    array = np.asarray(bits, dtype=np.uint8)
    if array.ndim != 1:
        raise ValueError("bits must be a one-dimensional array")
    return array


def _na(name: str) -> Result:
    return Result(name, (), applicable=False)


def _chi2_p(observed: NDArray[Any], expected: NDArray[Any], dof: float) -> float:
    chi2 = float(np.sum((observed - expected) ** 2 / expected))
    return igamc(dof / 2, chi2 / 2)


# --- 2.1 Frequency (monobit) -------------------------------------------------------------


def frequency(bits: Bits) -> Result:
    bits = _as_bits(bits)
    n = bits.size
    s = 2 * int(np.count_nonzero(bits)) - n
    return Result("Frequency", (math.erfc(abs(s) / math.sqrt(n) / math.sqrt(2)),))


# --- 2.2 Frequency within a block ------------------------------------------------------------


def block_frequency(bits: Bits, m: int = 128) -> Result:
    bits = _as_bits(bits)
    blocks = bits.size // m
    if blocks == 0:
        return _na("BlockFrequency")
    pi = bits[: blocks * m].reshape(blocks, m).sum(axis=1, dtype=np.int64) / m
    chi2 = 4.0 * m * float(np.sum((pi - 0.5) ** 2))
    return Result("BlockFrequency", (igamc(blocks / 2, chi2 / 2),))


# --- 2.3 Runs ----------------------------------------------------------------------------------


def runs(bits: Bits) -> Result:
    bits = _as_bits(bits)
    n = bits.size
    pi = int(np.count_nonzero(bits)) / n
    if abs(pi - 0.5) >= 2 / math.sqrt(n):  # prerequisite frequency test failed
        return Result("Runs", (0.0,))
    v_obs = 1 + int(np.count_nonzero(bits[1:] != bits[:-1]))
    num = abs(v_obs - 2 * n * pi * (1 - pi))
    return Result("Runs", (math.erfc(num / (2 * math.sqrt(2 * n) * pi * (1 - pi))),))


# --- 2.4 Longest run of ones in a block -----------------------------------------------------

# (M, class upper bounds v_0 .. v_K (first <=, last >=), class probabilities) as in STS 2.1.2.
_LONGEST_RUN = (
    (750_000, 10_000, (10, 11, 12, 13, 14, 15, 16),
     (0.0882, 0.2092, 0.2483, 0.1933, 0.1208, 0.0675, 0.0727)),
    (6272, 128, (4, 5, 6, 7, 8, 9),
     (0.1174035788, 0.242955959, 0.249363483, 0.17517706, 0.102701071, 0.112398847)),
    (128, 8, (1, 2, 3, 4), (0.21484375, 0.3671875, 0.23046875, 0.1875)),
)  # fmt: skip


def longest_run_of_ones(bits: Bits) -> Result:
    bits = _as_bits(bits)
    n = bits.size
    chosen = next((row for row in _LONGEST_RUN if n >= row[0]), None)
    if chosen is None:
        return _na("LongestRun")
    _min_n, m, classes, probabilities = chosen
    blocks = n // m
    padded = np.zeros((blocks, m + 2), dtype=np.int8)
    padded[:, 1:-1] = bits[: blocks * m].reshape(blocks, m)
    edges = np.diff(padded.ravel())
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)  # runs never cross a row: each row is zero-padded
    longest = np.zeros(blocks, dtype=np.int64)
    np.maximum.at(longest, starts // (m + 2), ends - starts)
    observed = np.bincount(
        np.clip(longest, classes[0], classes[-1]) - classes[0], minlength=len(classes)
    )
    expected = blocks * np.asarray(probabilities)
    return Result("LongestRun", (_chi2_p(observed, expected, len(classes) - 1),))


# --- 2.5 Binary matrix rank -----------------------------------------------------------------


def _rank_probability(r: int, m: int = 32, q: int = 32) -> float:
    product = 1.0
    for i in range(r):
        product *= (1 - 2.0 ** (i - q)) * (1 - 2.0 ** (i - m)) / (1 - 2.0 ** (i - r))
    return 2.0 ** (r * (q + m - r) - m * q) * product


def gf2_ranks(rows: NDArray[np.uint32], width: int = 32) -> NDArray[np.int64]:
    """GF(2) rank of each matrix in ``rows`` (shape matrices x rows, one row per uint32)."""
    rows = rows.copy()
    count, height = rows.shape
    ranks = np.zeros(count, dtype=np.int64)
    used = np.zeros((count, height), dtype=bool)
    everyone = np.arange(count)
    for bit in range(width):
        has_bit = ((rows >> np.uint32(bit)) & np.uint32(1)).astype(bool)
        candidates = has_bit & ~used
        found: NDArray[np.bool_] = np.any(candidates, axis=1)
        pivot = np.argmax(candidates, axis=1)
        pivot_row = rows[everyone, pivot]
        eliminate = has_bit & found[:, None]
        eliminate[everyone, pivot] = False
        rows ^= np.where(eliminate, pivot_row[:, None], np.uint32(0))
        used[everyone[found], pivot[found]] = True
        ranks += found
    return ranks


def rank(bits: Bits) -> Result:
    bits = _as_bits(bits)
    matrices = bits.size // 1024
    if matrices == 0:
        return _na("Rank")
    rows = np.packbits(bits[: matrices * 1024].reshape(-1, 32), axis=1)
    words = rows.view(">u4").astype(np.uint32).reshape(matrices, 32)
    ranks = gf2_ranks(words)
    p32, p31 = _rank_probability(32), _rank_probability(31)
    observed = np.array(
        [np.count_nonzero(ranks == 32), np.count_nonzero(ranks == 31), 0], dtype=np.float64
    )
    observed[2] = matrices - observed[0] - observed[1]
    expected = matrices * np.array([p32, p31, 1 - p32 - p31])
    chi2 = float(np.sum((observed - expected) ** 2 / expected))
    return Result("Rank", (math.exp(-chi2 / 2),))


# --- 2.6 Discrete Fourier transform (spectral) ----------------------------------------------


def dft(bits: Bits) -> Result:
    bits = _as_bits(bits)
    n = bits.size
    x = 2.0 * bits - 1.0
    moduli = np.abs(np.fft.rfft(x)[: n // 2])
    n1 = int(np.count_nonzero(moduli < dft_threshold(n)))
    return Result("FFT", (dft_p_value(n1, n),))


def dft_threshold(n: int) -> float:
    """Rev. 1a's 95 % peak height threshold T = sqrt(ln(1/0.05) n)."""
    return math.sqrt(math.log(1 / 0.05) * n)


def dft_p_value(n1: int, n: int) -> float:
    """P-value from N1, the number of the first n/2 moduli below the threshold."""
    n0 = 0.95 * n / 2
    d = (n1 - n0) / math.sqrt(n * 0.95 * 0.05 / 4)
    return math.erfc(abs(d) / math.sqrt(2))


# --- 2.7 Non-overlapping template matching ----------------------------------------------------


def is_aperiodic(template: Sequence[int]) -> bool:
    """True when no proper shift of the template overlaps itself (section 2.7)."""
    m = len(template)
    return all(tuple(template[s:]) != tuple(template[: m - s]) for s in range(1, m))


def aperiodic_templates(m: int) -> tuple[tuple[int, ...], ...]:
    """All aperiodic m-bit templates in lexicographic order (148 for m = 9)."""
    out = []
    for code in range(1 << m):
        template = tuple((code >> (m - 1 - j)) & 1 for j in range(m))
        if is_aperiodic(template):
            out.append(template)
    return tuple(out)


def _window_codes(bits: NDArray[np.uint8], m: int) -> NDArray[np.int64]:
    """Integer value of every m-bit window along the last axis (first bit most significant)."""
    width = bits.shape[-1] - m + 1
    codes = np.zeros((*bits.shape[:-1], width), dtype=np.int64)
    for j in range(m):
        codes <<= 1
        codes |= bits[..., j : j + width]
    return codes


def _template_code(template: Sequence[int]) -> int:
    return int("".join(str(int(b)) for b in template), 2)


_TEMPLATES_9 = aperiodic_templates(9)


def non_overlapping_template(
    bits: Bits, templates: Sequence[Sequence[int]] = _TEMPLATES_9, blocks: int = 8
) -> Result:
    bits = _as_bits(bits)
    m = len(templates[0])
    size = bits.size // blocks
    if size < m:
        return _na("NonOverlappingTemplate")
    codes = _window_codes(bits[: blocks * size].reshape(blocks, size), m)
    per_block = np.stack([np.bincount(row, minlength=1 << m) for row in codes])
    mu = (size - m + 1) / 2**m
    var = size * (1 / 2**m - (2 * m - 1) / 2 ** (2 * m))
    p_values = []
    for template in templates:
        code = _template_code(template)
        if is_aperiodic(template):  # matches of an aperiodic template can never overlap
            w = per_block[:, code].astype(np.float64)
        else:  # after a match the scan resumes m positions later
            w = np.zeros(blocks)
            for j, row in enumerate(codes):
                next_free = 0
                for pos in np.flatnonzero(row == code):
                    if pos >= next_free:
                        w[j] += 1
                        next_free = int(pos) + m
        chi2 = float(np.sum((w - mu) ** 2)) / var
        p_values.append(igamc(blocks / 2, chi2 / 2))
    labels = tuple("".join(map(str, t)) for t in templates)
    return Result("NonOverlappingTemplate", tuple(p_values), labels=labels)


# --- 2.8 Overlapping template matching -----------------------------------------------------

# Rev. 1a errata / STS 2.1.2 class probabilities for m = 9, M = 1032, K = 5.
OVERLAPPING_PI = (0.364091, 0.185659, 0.139381, 0.100571, 0.0704323, 0.139865)


def overlapping_template(
    bits: Bits, m: int = 9, block_size: int = 1032, pi: Sequence[float] = OVERLAPPING_PI
) -> Result:
    bits = _as_bits(bits)
    blocks = bits.size // block_size
    if blocks == 0:
        return _na("OverlappingTemplate")
    codes = _window_codes(bits[: blocks * block_size].reshape(blocks, block_size), m)
    matches = np.count_nonzero(codes == (1 << m) - 1, axis=1)
    k = len(pi) - 1
    observed = np.bincount(np.minimum(matches, k), minlength=k + 1)
    expected = blocks * np.asarray(pi)
    return Result("OverlappingTemplate", (_chi2_p(observed, expected, k),))


# --- 2.9 Maurer's universal statistical test ------------------------------------------------

_UNIVERSAL_MIN_N = (
    387_840, 904_960, 2_068_480, 4_654_080, 10_342_400, 22_753_280, 49_643_520,
    107_560_960, 231_669_760, 496_435_200, 1_059_061_760,
)  # fmt: skip  # smallest n for L = 6 .. 16
_UNIVERSAL_EXPECTED = (
    0.0, 0.7326495, 1.5374383, 2.4016068, 3.3112247, 4.2534266, 5.2177052, 6.1962507,
    7.1836656, 8.1764248, 9.1723243, 10.170032, 11.168765, 12.168070, 13.167693,
    14.167488, 15.167379,
)  # fmt: skip
_UNIVERSAL_VARIANCE = (
    0.0, 0.690, 1.338, 1.901, 2.358, 2.705, 2.954, 3.125, 3.238, 3.311, 3.356, 3.384,
    3.401, 3.410, 3.416, 3.419, 3.421,
)  # fmt: skip


def universal_statistic(bits: Bits, l: int, q: int) -> tuple[float, int]:  # noqa: E741
    """Maurer's f_n = mean log2 distance to the previous occurrence, and the K used."""
    bits = _as_bits(bits)
    total = bits.size // l
    k = total - q
    codes = _window_codes(bits[: total * l].reshape(total, l), l)[:, 0]
    order = np.argsort(codes, kind="stable")
    index = order + 1  # 1-based block numbers in code order
    previous = np.zeros(total, dtype=np.int64)
    same = codes[order][1:] == codes[order][:-1]
    previous[order[1:][same]] = index[:-1][same]
    tested = np.arange(q, total)
    distances = (tested + 1) - previous[tested]
    return float(np.sum(np.log2(distances))) / k, k


def universal(bits: Bits, l: int | None = None, q: int | None = None) -> Result:  # noqa: E741
    bits = _as_bits(bits)
    n = bits.size
    if l is None:
        l = 5 + sum(1 for threshold in _UNIVERSAL_MIN_N if n >= threshold)  # noqa: E741
        if l < 6:  # n < 387 840: the test needs more bits (section 2.9.7)
            return _na("Universal")
    if q is None:
        q = 10 * 2**l
    if not 1 <= l <= 16 or n // l <= q:
        return _na("Universal")
    f_n, k = universal_statistic(bits, l, q)
    c = 0.7 - 0.8 / l + (4 + 32 / l) * k ** (-3 / l) / 15
    sigma = c * math.sqrt(_UNIVERSAL_VARIANCE[l] / k)
    arg = abs(f_n - _UNIVERSAL_EXPECTED[l]) / (math.sqrt(2) * sigma)
    return Result("Universal", (math.erfc(arg),))


# --- 2.10 Linear complexity -----------------------------------------------------------------

LINEAR_COMPLEXITY_PI = (0.010417, 0.03125, 0.125, 0.5, 0.25, 0.0625, 0.020833)


def _shift_up(words: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """Multiply each row's GF(2) polynomial (64-bit words, low word first) by x."""
    out = words << np.uint64(1)
    out[:, 1:] |= words[:, :-1] >> np.uint64(63)
    return out


def linear_complexities(sequences: NDArray[np.uint8]) -> NDArray[np.int64]:
    """Berlekamp-Massey over GF(2), run on every row of ``sequences`` at once.

    Polynomials are bit-packed into uint64 words. ``shifted_b`` holds x^(N - m) B(x) for the
    next step N, so the connection polynomial update C <- C + x^(N - m) B is a plain XOR and
    ``window`` holds s_N, s_(N-1), ..., s_0 as bits 0, 1, ..., N (the discrepancy is the
    parity of C & window).
    """
    rows, length = sequences.shape
    words = (length + 1 + 63) // 64
    c = np.zeros((rows, words), dtype=np.uint64)
    c[:, 0] = 1
    shifted_b = np.zeros((rows, words), dtype=np.uint64)
    shifted_b[:, 0] = 2  # x^(0 - (-1)) * 1
    window = np.zeros((rows, words), dtype=np.uint64)
    complexity = np.zeros(rows, dtype=np.int64)
    columns = sequences.astype(np.uint64)
    for n in range(length):
        window = _shift_up(window)
        window[:, 0] |= columns[:, n]
        d = (np.bitwise_count(c & window).sum(axis=1) & 1).astype(bool)
        swap = d & (2 * complexity <= n)
        old_c = c.copy()
        c ^= shifted_b & (np.uint64(0) - d.astype(np.uint64))[:, None]
        shifted_b = _shift_up(np.where(swap[:, None], old_c, shifted_b))
        complexity = np.where(swap, n + 1 - complexity, complexity)
    return complexity


def linear_complexity(bits: Bits, block_size: int = 500) -> Result:
    bits = _as_bits(bits)
    blocks = bits.size // block_size
    if blocks == 0:
        return _na("LinearComplexity")
    m = block_size
    lengths = linear_complexities(bits[: blocks * m].reshape(blocks, m))
    mu = m / 2 + (9 + (-1) ** (m + 1)) / 36 - (m / 3 + 2 / 9) / 2**m
    t = (-1) ** m * (lengths - mu) + 2 / 9
    classes = np.digitize(t, [-2.5, -1.5, -0.5, 0.5, 1.5, 2.5], right=True)
    observed = np.bincount(classes, minlength=7)
    expected = blocks * np.asarray(LINEAR_COMPLEXITY_PI)
    return Result("LinearComplexity", (_chi2_p(observed, expected, 6),))


# --- 2.11 Serial and 2.12 approximate entropy -----------------------------------------------


def pattern_counts(bits: Bits, m: int) -> NDArray[np.int64]:
    """Counts of the n overlapping m-bit patterns of the cyclically wrapped sequence."""
    bits = _as_bits(bits)
    if m == 0:
        return np.array([bits.size], dtype=np.int64)
    wrapped = np.concatenate([bits, bits[: m - 1]])
    return np.bincount(_window_codes(wrapped, m), minlength=1 << m)


def _fold(counts: NDArray[np.int64]) -> NDArray[np.int64]:
    """(m-1)-bit pattern counts from m-bit counts: drop the last bit of each pattern."""
    return counts[0::2] + counts[1::2]


def _psi2(counts: NDArray[np.int64], n: int) -> float:
    m = counts.size.bit_length() - 1
    if m == 0:
        return 0.0
    square_sum = int(np.sum(counts.astype(object) ** 2))
    return ((square_sum << m) - n * n) / n


def serial(bits: Bits, m: int = 16) -> Result:
    bits = _as_bits(bits)
    n = bits.size
    if m < 2 or n < m:
        return _na("Serial")
    counts = pattern_counts(bits, m)
    psi_m = _psi2(counts, n)
    psi_m1 = _psi2(_fold(counts), n)
    psi_m2 = _psi2(_fold(_fold(counts)), n)
    nabla = psi_m - psi_m1
    nabla2 = psi_m - 2 * psi_m1 + psi_m2
    p1 = igamc(2 ** (m - 2), nabla / 2)
    p2 = igamc(2 ** (m - 3), nabla2 / 2)
    return Result("Serial", (p1, p2), labels=("P1", "P2"))


def _phi(counts: NDArray[np.int64], n: int) -> float:
    c = counts[counts > 0] / n
    return float(np.sum(c * np.log(c)))


def approximate_entropy(bits: Bits, m: int = 10) -> Result:
    bits = _as_bits(bits)
    n = bits.size
    if n < m + 1:
        return _na("ApproximateEntropy")
    counts = pattern_counts(bits, m + 1)
    apen = _phi(_fold(counts), n) - _phi(counts, n)
    chi2 = 2.0 * n * (math.log(2) - apen)
    return Result("ApproximateEntropy", (igamc(2 ** (m - 1), chi2 / 2),))


# --- 2.13 Cumulative sums -------------------------------------------------------------------


def _cdiv(a: int, b: int) -> int:
    """C integer division (truncates toward zero), as STS computes the summation bounds."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def _cusum_p(z: int, n: int) -> float:
    root = math.sqrt(n)
    k1 = np.arange(_cdiv(_cdiv(-n, z) + 1, 4), _cdiv(_cdiv(n, z) - 1, 4) + 1)
    k2 = np.arange(_cdiv(_cdiv(-n, z) - 3, 4), _cdiv(_cdiv(n, z) - 1, 4) + 1)
    sum1 = np.sum(ndtr((4 * k1 + 1) * z / root) - ndtr((4 * k1 - 1) * z / root))
    sum2 = np.sum(ndtr((4 * k2 + 3) * z / root) - ndtr((4 * k2 + 1) * z / root))
    return float(1.0 - sum1 + sum2)


def cumulative_sums(bits: Bits) -> Result:
    bits = _as_bits(bits)
    n = bits.size
    walk = np.cumsum(2 * bits.astype(np.int64) - 1)
    forward = int(np.max(np.abs(walk)))
    # Backward sums S'_k = x_n + ... + x_(n-k+1) = S_n - S_(n-k); S_0 = 0.
    backward = int(np.max(np.abs(walk[-1] - np.concatenate([[0], walk[:-1]]))))
    return Result(
        "CumulativeSums",
        (_cusum_p(forward, n), _cusum_p(backward, n)),
        labels=("forward", "backward"),
    )


# --- 2.14 Random excursions and 2.15 random excursions variant ------------------------------


def _walk_cycles(bits: Bits) -> tuple[NDArray[np.int64], NDArray[np.int64], int]:
    """The walk S_1..S_n, each position's cycle number, and the number of cycles J."""
    walk = np.cumsum(2 * bits.astype(np.int64) - 1)
    zero = walk == 0
    cycle = np.cumsum(zero) - zero  # zeros strictly before each position
    cycles = int(np.count_nonzero(zero)) + int(walk[-1] != 0)
    return walk, cycle, cycles


def _min_cycles(n: int) -> float:
    return max(0.005 * math.sqrt(n), 500.0)


def _excursion_pi(x: int) -> NDArray[np.float64]:
    a = 1 / (2 * abs(x))
    pi = [1 - a] + [a * a * (1 - a) ** (k - 1) for k in range(1, 5)] + [a * (1 - a) ** 4]
    return np.asarray(pi)


_EXCURSION_STATES = (-4, -3, -2, -1, 1, 2, 3, 4)
_VARIANT_STATES = tuple(x for x in range(-9, 10) if x != 0)


def random_excursions(bits: Bits, min_cycles: float | None = None) -> Result:
    bits = _as_bits(bits)
    walk, cycle, cycles = _walk_cycles(bits)
    if cycles < (_min_cycles(bits.size) if min_cycles is None else min_cycles):
        return _na("RandomExcursions")
    near = (np.abs(walk) <= 4) & (walk != 0)
    visits = np.bincount(cycle[near] * 9 + walk[near] + 4, minlength=cycles * 9)
    visits = visits.reshape(cycles, 9)
    p_values = []
    for x in _EXCURSION_STATES:
        observed = np.bincount(np.minimum(visits[:, x + 4], 5), minlength=6)
        p_values.append(_chi2_p(observed, cycles * _excursion_pi(x), 5))
    labels = tuple(f"x={x:+d}" for x in _EXCURSION_STATES)
    return Result("RandomExcursions", tuple(p_values), labels=labels)


def random_excursions_variant(bits: Bits, min_cycles: float | None = None) -> Result:
    bits = _as_bits(bits)
    walk, _cycle, cycles = _walk_cycles(bits)
    if cycles < (_min_cycles(bits.size) if min_cycles is None else min_cycles):
        return _na("RandomExcursionsVariant")
    near = np.abs(walk) <= 9
    totals = np.bincount(walk[near] + 9, minlength=19)
    p_values = tuple(
        math.erfc(abs(int(totals[x + 9]) - cycles) / math.sqrt(2 * cycles * (4 * abs(x) - 2)))
        for x in _VARIANT_STATES
    )
    labels = tuple(f"x={x:+d}" for x in _VARIANT_STATES)
    return Result("RandomExcursionsVariant", p_values, labels=labels)


# --- the battery and the second-level analysis ------------------------------------------------

TESTS = (
    frequency,
    block_frequency,
    cumulative_sums,
    runs,
    longest_run_of_ones,
    rank,
    dft,
    non_overlapping_template,
    overlapping_template,
    universal,
    approximate_entropy,
    random_excursions,
    random_excursions_variant,
    serial,
    linear_complexity,
)  # in the order of STS's finalAnalysisReport


def run_all(bits: Bits) -> list[Result]:
    """All fifteen tests with their default parameters, in STS's report order."""
    bits = _as_bits(bits)
    return [test(bits) for test in TESTS]


@dataclass(frozen=True)
class Summary:
    """Second-level result of one (test, P-value index) over many sequences (section 4.2)."""

    name: str
    index: int
    label: str
    sequences: int  # sequences the test applied to
    passed: int  # of those, P-value >= ALPHA
    proportion_range: tuple[float, float]
    uniformity: float | None  # None below MIN_SEQUENCES_FOR_UNIFORMITY sequences

    @property
    def proportion(self) -> float:
        return self.passed / self.sequences if self.sequences else math.nan

    @property
    def proportion_ok(self) -> bool:
        low, high = self.proportion_range
        return self.sequences > 0 and low <= self.proportion <= high

    @property
    def uniformity_ok(self) -> bool | None:
        return None if self.uniformity is None else self.uniformity >= UNIFORMITY_ALPHA

    @property
    def ok(self) -> bool:
        return self.proportion_ok and self.uniformity_ok is not False


def proportion_range(sequences: int, alpha: float = ALPHA) -> tuple[float, float]:
    """p_hat -/+ 3 sqrt(p_hat (1 - p_hat) / k) with p_hat = 1 - alpha (section 4.2.1)."""
    p_hat = 1 - alpha
    spread = 3 * math.sqrt(p_hat * (1 - p_hat) / sequences) if sequences else math.inf
    return p_hat - spread, p_hat + spread


def chance_outside_range(sequences: int, alpha: float = ALPHA) -> float:
    """Probability that a test of a perfect generator fails the proportion check (binomial).

    About 0.018 at 100 sequences (4 or more of 100 below alpha = 0.01): across the 188
    sub-tests of the battery a few such failures per run are expected by chance.
    """
    low, high = proportion_range(sequences, alpha)
    inside = sum(
        math.comb(sequences, failed) * alpha**failed * (1 - alpha) ** (sequences - failed)
        for failed in range(sequences + 1)
        if low <= (sequences - failed) / sequences <= high
    )
    return max(0.0, 1.0 - inside)


def uniformity(p_values: Sequence[float]) -> float:
    """P-value of the chi-square test of P-value uniformity over ten bins (section 4.2.2)."""
    bins = np.minimum((np.asarray(p_values, dtype=np.float64) * 10).astype(np.int64), 9)
    observed = np.bincount(bins, minlength=10)
    expected = len(p_values) / 10
    chi2 = float(np.sum((observed - expected) ** 2)) / expected
    return igamc(9 / 2, chi2 / 2)


def summarise(
    results_per_sequence: Sequence[Sequence[Result]], alpha: float = ALPHA
) -> list[Summary]:
    """Per test and per P-value index: pass proportion, its acceptable range, uniformity."""
    grouped: dict[str, list[Result]] = {}
    for results in results_per_sequence:
        for result in results:
            grouped.setdefault(result.name, []).append(result)
    summaries = []
    for name, results in grouped.items():
        applied = [r for r in results if r.applicable]
        width = max((len(r.p_values) for r in applied), default=1)
        labels = next((r.labels for r in applied if r.labels), ())
        for index in range(width):
            p_values = [r.p_values[index] for r in applied]
            summaries.append(
                Summary(
                    name=name,
                    index=index,
                    label=labels[index] if index < len(labels) else "",
                    sequences=len(p_values),
                    passed=sum(1 for p in p_values if p >= alpha),
                    proportion_range=proportion_range(len(p_values), alpha),
                    uniformity=(
                        uniformity(p_values)
                        if len(p_values) >= MIN_SEQUENCES_FOR_UNIFORMITY
                        else None
                    ),
                )
            )
    return summaries
