"""Bitmask rejection sampling (version ``sampling/rejection-v2``).

Same contract as ``sampling`` (v1) with a different acceptance rule, registered so that
rounds opened under v1 provably keep completing under v1 once v2 is current:

``uniform_int(stream, n)``: for ``n == 1`` return 0 reading nothing. Otherwise
``k = ceil(bit_length(n - 1) / 8)`` whole bytes are read per attempt, big-endian, and masked
to the low ``bit_length(n - 1)`` bits giving ``x``; accept and return ``x`` if ``x < n``,
else read again. No modulo and no floats at all. ``shuffle`` is Fisher-Yates exactly as v1,
driven by this ``uniform_int``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from services.rng.sampling import MAX_RANGE, ByteStream

SAMPLING_V2_VERSION = "sampling/rejection-v2"

T = TypeVar("T")


def uniform_int(stream: ByteStream, n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_RANGE:
        raise ValueError(f"range size must be an int in [1, 2**64], got {n!r}")
    if n == 1:
        return 0
    bits = (n - 1).bit_length()
    k = (bits + 7) // 8
    mask = (1 << bits) - 1
    while True:
        chunk = stream.read(k)
        if len(chunk) != k:
            raise ValueError("byte stream returned a short read")
        x = int.from_bytes(chunk, "big") & mask
        if x < n:
            return x


def shuffle(stream: ByteStream, items: Sequence[T]) -> list[T]:
    a = list(items)
    for i in range(len(a) - 1, 0, -1):
        j = uniform_int(stream, i + 1)
        a[i], a[j] = a[j], a[i]
    return a
