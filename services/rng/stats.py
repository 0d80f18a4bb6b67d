"""Statistical checks of random output (shared by the test suite and bench/rng_stats.py).

Pure arithmetic, no SciPy: chi-square critical values use the Wilson-Hilferty normal
approximation, accurate to well under 1% for the degrees of freedom used here (>= 5).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

# Upper-tail standard normal quantiles.
Z_001 = 3.090232  # alpha = 0.001
Z_0001 = 3.719016  # alpha = 0.0001


def chi_square_critical(df: int, z: float = Z_001) -> float:
    """Approximate upper critical value of chi-square with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError("df must be positive")
    h = 2.0 / (9.0 * df)
    return df * (1.0 - h + z * math.sqrt(h)) ** 3


def chi_square_uniform(counts: Sequence[int]) -> float:
    """Pearson's statistic of observed counts against equal expected counts."""
    total = sum(counts)
    expected = total / len(counts)
    return sum((c - expected) ** 2 for c in counts) / expected


def byte_counts(data: bytes) -> list[int]:
    counts = [0] * 256
    for b in data:
        counts[b] += 1
    return counts


def runs_z(data: bytes) -> float:
    """Wald-Wolfowitz runs test on the bit sequence: z-score of the number of runs."""
    bits = "".join(format(b, "08b") for b in data)
    n = len(bits)
    ones = bits.count("1")
    zeros = n - ones
    if ones == 0 or zeros == 0:
        return math.inf
    runs = 1 + sum(1 for i in range(1, n) if bits[i] != bits[i - 1])
    mean = 2.0 * ones * zeros / n + 1.0
    var = (mean - 1.0) * (mean - 2.0) / (n - 1)
    return (runs - mean) / math.sqrt(var)


def serial_correlation(data: bytes) -> float:
    """Lag-1 serial correlation coefficient of the byte values (Knuth's serial test form)."""
    n = len(data)
    if n < 2:
        raise ValueError("need at least two bytes")
    sum_x = sum(data)
    sum_x2 = sum(b * b for b in data)
    sum_xy = sum(data[i] * data[(i + 1) % n] for i in range(n))
    num = n * sum_xy - sum_x * sum_x
    den = n * sum_x2 - sum_x * sum_x
    return num / den if den else 1.0


def positional_chi_square(positions: Sequence[Sequence[int]]) -> float:
    """Chi-square over a cards x positions count table (every row has equal expectation)."""
    return sum(chi_square_uniform(row) for row in positions)
