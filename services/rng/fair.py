"""Provably-fair byte stream (Stake-style scheme, version ``fair/hmac-sha256-v1``).

Before play the operator shows ``commitment = SHA-256(server_seed)`` (hex). The player
chooses ``client_seed``; each bet under the pair uses the next ``nonce`` (0, 1, 2, ...). The
bytes of one bet are the concatenation of

    HMAC-SHA256(key=server_seed, msg=f"{client_seed}:{nonce}:{block}".encode())

for block = 0, 1, 2, ... read front to back; the draws map those bytes with
``sampling.uniform_int`` / ``shuffle`` (rejection sampling, never a bare modulo). After the
server seed is rotated it is revealed, and anyone can check ``SHA-256(server_seed)`` against
the commitment and recompute every outcome (``python -m services.rng.verify_fair``). The
commitment is a hash: it does not let a player predict an outcome.
"""

from __future__ import annotations

import hashlib
import hmac

FAIR_VERSION = "fair/hmac-sha256-v1"
SERVER_SEED_BYTES = 32


def commitment(server_seed: bytes) -> str:
    return hashlib.sha256(server_seed).hexdigest()


class FairStream:
    """The bytes of one provably-fair bet."""

    version = FAIR_VERSION

    def __init__(self, server_seed: bytes, client_seed: str, nonce: int) -> None:
        if len(server_seed) != SERVER_SEED_BYTES:
            raise ValueError(f"server seed must be {SERVER_SEED_BYTES} bytes")
        if nonce < 0:
            raise ValueError("nonce must be non-negative")
        self._key = server_seed
        self._prefix = f"{client_seed}:{nonce}:".encode()
        self._block = 0
        self._buffer = b""
        self.position = 0  # bytes consumed so far (a round's draws read on from here)

    def read(self, n: int) -> bytes:
        if n < 0:
            raise ValueError("n must be non-negative")
        while len(self._buffer) < n:
            msg = self._prefix + str(self._block).encode()
            self._buffer += hmac.new(self._key, msg, hashlib.sha256).digest()
            self._block += 1
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        self.position += n
        return out
