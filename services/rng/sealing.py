"""Sealing round seeds and server seeds: AES-256-GCM under a key held in a secret file
(outside the database; never in the environment).

    sealed = nonce (12 random bytes) || AES-256-GCM(key, nonce, seed, aad)
    aad    = b"casino-rng/seal/v1|" + purpose + b"|" + record id (16 bytes)

Binding the record id means a sealed seed copied onto another round does not open. A key
file holds 64 hex characters; a development key is generated at start if none exists.

Keys rotate: the current key seals, and each earlier key still configured (its own file)
opens what it sealed. A sealed value is stored with the id of the key that sealed it, so it
is opened with that key; a value sealed under a key no longer held does not open.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import uuid
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.runtime.secrets import read_secret

ROUND_SEED = b"round-seed"
SERVER_SEED = b"server-seed"


class SealError(ValueError):
    """The sealed value does not open under this key (wrong key, or altered)."""


class SealKeyUnknown(SealError):
    """The value was sealed under a key this keyring does not hold (retired and removed)."""

    def __init__(self, key_id: str) -> None:
        super().__init__(f"sealed under key {key_id}, which is not held")
        self.key_id = key_id


def ensure_seal_key(path: Path) -> None:
    """Create a development seal key (mode 0600) if the file does not exist."""
    path = Path(path)
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")


def _read_key(key_file: Path) -> bytes:
    text = read_secret(key_file)
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{key_file} must hold 64 hex characters") from None
    if len(key) != 32:
        raise ValueError(f"{key_file} must hold a 256-bit key (64 hex characters)")
    return key


def seal_key_id(key: bytes) -> str:
    """Identifies the key a seed was sealed under (for rotation), reveals nothing of it."""
    return hashlib.sha256(b"casino-rng/seal-key-id|" + key).hexdigest()[:16]


class Sealer:
    def __init__(self, key_file: Path, retired_key_files: Sequence[Path] = ()) -> None:
        current = _read_key(key_file)
        self.key_id = seal_key_id(current)
        self._keys = {self.key_id: AESGCM(current)}
        for retired in retired_key_files:
            key = _read_key(retired)
            self._keys.setdefault(seal_key_id(key), AESGCM(key))

    @property
    def key_ids(self) -> tuple[str, ...]:
        """The ids of every key held, the current one first."""
        return tuple(self._keys)

    @staticmethod
    def _aad(purpose: bytes, record_id: uuid.UUID) -> bytes:
        return b"casino-rng/seal/v1|" + purpose + b"|" + record_id.bytes

    def seal(self, purpose: bytes, record_id: uuid.UUID, seed: bytes) -> bytes:
        """Sealed under the current key (`key_id`)."""
        nonce = os.urandom(12)
        return nonce + self._keys[self.key_id].encrypt(nonce, seed, self._aad(purpose, record_id))

    def open(
        self, purpose: bytes, record_id: uuid.UUID, sealed: bytes, key_id: str | None = None
    ) -> bytes:
        """Open a value sealed under `key_id` (the current key when not named)."""
        aead = self._keys.get(key_id or self.key_id)
        if aead is None:
            raise SealKeyUnknown(str(key_id))
        if len(sealed) < 12 + 16:
            raise SealError("sealed value is too short")
        try:
            return aead.decrypt(sealed[:12], sealed[12:], self._aad(purpose, record_id))
        except InvalidTag:
            raise SealError("sealed value does not open under its key") from None
