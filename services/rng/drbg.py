"""ChaCha20-based random bit generators (algorithm version ``drbg/chacha20-v1``).

Two generators live here, both pure (no I/O apart from the OS entropy source):

``ChaChaDrbg`` is the service's live generator. It holds a 256-bit key seeded from
``os.urandom`` and produces output with *fast key erasure*: every ``generate(n)`` call runs
the ChaCha20 keystream (cryptography's ``ChaCha20`` cipher, all-zero 128-bit nonce/counter)
for ``32 + n`` bytes, replaces the key with the first 32 bytes and returns the next ``n``.
The key therefore advances on every call, so a state compromise never reveals earlier output,
and two instances never share state because each draws its own key from the OS. It reseeds
itself from ``os.urandom`` after ``reseed_interval`` calls, and ``reseed(entropy)`` mixes
extra entropy in with HMAC-SHA256. A continuous test (the FIPS 140-2 style repetition
test) compares each new key block with the previous one and each OS entropy read with the
previous read; a repeat raises ``DrbgFailure`` and the generator stays failed.

``RoundStream`` is the *deterministic* per-round stream used for every draw of a round:

    key    = HKDF-SHA256(ikm=round_seed, salt=b"casino-rng/round-stream/v1",
                         info=b"drbg/chacha20-v1" || 0x00 || context, length=32)
    stream = ChaCha20(key, nonce=16 zero bytes) keystream, read front to back

``context`` carries the game inputs (game id, bet selections, ...) in a canonical encoding
chosen by the caller, so the same (seed, inputs, version) always re-derives the same bytes
and replay years later reproduces the round exactly.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher
from cryptography.hazmat.primitives.ciphers.algorithms import ChaCha20
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

DRBG_VERSION = "drbg/chacha20-v1"

KEY_BYTES = 32
_ZERO_NONCE = bytes(16)  # cryptography's ChaCha20 nonce = 4-byte LE block counter + 12-byte nonce
_ROUND_SALT = b"casino-rng/round-stream/v1"
_MAX_GENERATE = 1 << 24  # one call never hands out more than 16 MiB


class DrbgFailure(RuntimeError):
    """The generator failed a health test; it refuses to produce output from now on."""


def _keystream(key: bytes, n: int) -> bytes:
    encryptor = Cipher(ChaCha20(key, _ZERO_NONCE), mode=None).encryptor()
    return encryptor.update(bytes(n))


class ChaChaDrbg:
    """Live CSPRNG: ChaCha20 with fast key erasure, seeded and periodically reseeded from the OS."""

    def __init__(
        self,
        *,
        reseed_interval: int = 1 << 16,
        entropy_source: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if reseed_interval < 1:
            raise ValueError("reseed_interval must be at least 1")
        self._entropy_source = entropy_source
        self._reseed_interval = reseed_interval
        self._failed: str | None = None
        self._last_entropy = b""
        self._key = self._read_entropy()
        self._last_key = b""
        self._calls_since_reseed = 0

    @classmethod
    def from_seed(cls, seed: bytes) -> ChaChaDrbg:
        """A generator with a fixed key and no automatic reseed: known-answer tests only."""
        if len(seed) != KEY_BYTES:
            raise ValueError(f"seed must be {KEY_BYTES} bytes")
        drbg = cls(reseed_interval=1 << 62, entropy_source=lambda n: seed[:n])
        return drbg

    @property
    def failed(self) -> str | None:
        """Why the generator failed, or None while healthy."""
        return self._failed

    def _fail(self, reason: str) -> DrbgFailure:
        self._failed = reason
        self._key = bytes(KEY_BYTES)  # erase: nothing may be derived from a failed state
        return DrbgFailure(reason)

    def _read_entropy(self) -> bytes:
        try:
            entropy = self._entropy_source(KEY_BYTES)
        except OSError as exc:
            raise self._fail(f"entropy source unavailable: {exc}") from exc
        if len(entropy) != KEY_BYTES:
            raise self._fail("entropy source returned a short read")
        if hmac.compare_digest(entropy, self._last_entropy):
            raise self._fail("entropy source repeated its previous output")
        self._last_entropy = entropy
        return entropy

    def reseed(self, entropy: bytes = b"") -> None:
        """Mix fresh OS entropy (and the optional caller ``entropy``) into the key."""
        if self._failed is not None:
            raise DrbgFailure(self._failed)
        fresh = self._read_entropy()
        self._key = hmac.new(self._key, b"reseed\x00" + fresh + entropy, hashlib.sha256).digest()
        self._calls_since_reseed = 0

    def generate(self, n: int) -> bytes:
        """Return ``n`` fresh random bytes and advance the key (fast key erasure)."""
        if self._failed is not None:
            raise DrbgFailure(self._failed)
        if not 0 <= n <= _MAX_GENERATE:
            raise ValueError(f"n must be in [0, {_MAX_GENERATE}]")
        if self._calls_since_reseed >= self._reseed_interval:
            self.reseed()
        block = _keystream(self._key, KEY_BYTES + n)
        new_key = block[:KEY_BYTES]
        # Continuous repetition test on the 256-bit key blocks: a repeat means a stuck state.
        if hmac.compare_digest(new_key, self._key) or hmac.compare_digest(new_key, self._last_key):
            raise self._fail("continuous test: key block repeated")
        self._last_key, self._key = self._key, new_key
        self._calls_since_reseed += 1
        return block[KEY_BYTES:]

    def advance(self) -> None:
        """Burn one key step; the service calls this between requests so idle time moves state."""
        self.generate(0)


def derive_round_key(seed: bytes, context: bytes, version: str = DRBG_VERSION) -> bytes:
    """HKDF-SHA256 of the round seed bound to the game inputs and the generator version."""
    if len(seed) < 16:
        raise ValueError("round seed must be at least 16 bytes")
    info = version.encode() + b"\x00" + context
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=_ROUND_SALT, info=info).derive(
        seed
    )


class RoundStream:
    """Deterministic byte stream of one round: ChaCha20 keystream under the derived round key."""

    version = DRBG_VERSION

    def __init__(self, seed: bytes, context: bytes) -> None:
        key = derive_round_key(seed, context, self.version)
        self._encryptor = Cipher(ChaCha20(key, _ZERO_NONCE), mode=None).encryptor()
        self.position = 0  # bytes consumed so far, recorded for audit

    def read(self, n: int) -> bytes:
        if n < 0:
            raise ValueError("n must be non-negative")
        self.position += n
        return self._encryptor.update(bytes(n))
