"""Sealing round seeds and server seeds: AES-256-GCM under a key held in a secret file
(outside the database; never in the environment).

    sealed = nonce (12 random bytes) || AES-256-GCM(key, nonce, seed, aad)
    aad    = b"casino-rng/seal/v1|" + purpose + b"|" + record id (16 bytes)

Binding the record id means a sealed seed copied onto another round does not open. The key
file holds 64 hex characters; a development key is generated at start if none exists.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import uuid
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.runtime.secrets import read_secret

ROUND_SEED = b"round-seed"
SERVER_SEED = b"server-seed"


class SealError(ValueError):
    """The sealed value does not open under this key (wrong key, or altered)."""


def ensure_seal_key(path: Path) -> None:
    """Create a development seal key (mode 0600) if the file does not exist."""
    path = Path(path)
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")


class Sealer:
    def __init__(self, key_file: Path) -> None:
        text = read_secret(key_file)
        try:
            key = bytes.fromhex(text)
        except ValueError:
            raise ValueError(f"{key_file} must hold 64 hex characters") from None
        if len(key) != 32:
            raise ValueError(f"{key_file} must hold a 256-bit key (64 hex characters)")
        self._aead = AESGCM(key)
        # Identifies the key a seed was sealed under (for rotation), reveals nothing of it.
        self.key_id = hashlib.sha256(b"casino-rng/seal-key-id|" + key).hexdigest()[:16]

    @staticmethod
    def _aad(purpose: bytes, record_id: uuid.UUID) -> bytes:
        return b"casino-rng/seal/v1|" + purpose + b"|" + record_id.bytes

    def seal(self, purpose: bytes, record_id: uuid.UUID, seed: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, seed, self._aad(purpose, record_id))

    def open(self, purpose: bytes, record_id: uuid.UUID, sealed: bytes) -> bytes:
        if len(sealed) < 12 + 16:
            raise SealError("sealed value is too short")
        try:
            return self._aead.decrypt(sealed[:12], sealed[12:], self._aad(purpose, record_id))
        except InvalidTag:
            raise SealError("sealed value does not open under this key") from None
