"""Unbiased scaling of random bytes to integers and shuffles (version ``sampling/rejection-v1``).

The exact algorithm, which replay and the test lab depend on:

``uniform_int(stream, n)`` returns an integer uniformly distributed in ``[0, n)``:

1. ``n`` must be an int with ``1 <= n <= 2**64``. For ``n == 1`` the result is 0 and no
   bytes are read.
2. ``k`` = the smallest number of whole bytes that can represent ``n - 1``
   (``k = ceil(bit_length(n - 1) / 8)``); ``R = 256**k``.
3. ``limit = R - (R mod n)``, the largest multiple of ``n`` not above ``R``.
4. Read ``k`` bytes, interpret them as an unsigned big-endian integer ``x``.
   If ``x < limit`` return ``x mod n`` (every residue then has exactly ``limit / n``
   preimages, so the result is exactly uniform); otherwise discard those ``k`` bytes and
   repeat step 4. The rejection probability is below 1/2 per attempt.

No floating point is used anywhere and a modulo is only ever applied to an accepted value.

``shuffle(stream, items)`` is the Fisher-Yates (Durstenfeld) shuffle: copy the items to a
list ``a``; for ``i`` from ``len(a) - 1`` down to 1, ``j = uniform_int(stream, i + 1)`` and
swap ``a[i]`` and ``a[j]``. Returns the new list; the input is not modified.

``stream`` is any object with ``read(n: int) -> bytes`` returning exactly ``n`` bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

SAMPLING_VERSION = "sampling/rejection-v1"

MAX_RANGE = 1 << 64
T = TypeVar("T")


class ByteStream(Protocol):
    def read(self, n: int, /) -> bytes: ...


def _width(n: int) -> tuple[int, int]:
    """(bytes per attempt, acceptance limit) for a range of size n."""
    k = ((n - 1).bit_length() + 7) // 8
    span = 1 << (8 * k)
    return k, span - span % n


def uniform_int(stream: ByteStream, n: int) -> int:
    """Uniform integer in [0, n) by rejection sampling on whole bytes (see module docstring)."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_RANGE:
        raise ValueError(f"range size must be an int in [1, 2**64], got {n!r}")
    if n == 1:
        return 0
    k, limit = _width(n)
    while True:
        chunk = stream.read(k)
        if len(chunk) != k:
            raise ValueError("byte stream returned a short read")
        x = int.from_bytes(chunk, "big")
        if x < limit:
            return x % n


def uniform_range(stream: ByteStream, low: int, high: int) -> int:
    """Uniform integer in the closed range [low, high]."""
    if high < low:
        raise ValueError(f"empty range [{low}, {high}]")
    return low + uniform_int(stream, high - low + 1)


def shuffle(stream: ByteStream, items: Sequence[T]) -> list[T]:
    """Fisher-Yates shuffle driven by uniform_int; returns a new list."""
    a = list(items)
    for i in range(len(a) - 1, 0, -1):
        j = uniform_int(stream, i + 1)
        a[i], a[j] = a[j], a[i]
    return a
