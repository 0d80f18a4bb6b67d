"""Password hashing: argon2id over the password keyed with a server-side pepper.

The pepper is applied as an HMAC-SHA256 key before argon2id (a fixed-length input, no
ambiguity of concatenation, and a stolen database alone cannot be brute-forced without the
pepper file). Hashing costs tens of milliseconds of CPU, so it runs in a worker thread and
never stalls the event loop."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerifyMismatchError

from services.runtime.secrets import read_secret_bytes


@dataclass(frozen=True)
class Argon2Parameters:
    # OWASP's argon2id floor is 19 MiB / 2 passes; we use more. Tests may lower them.
    time_cost: int = 3
    memory_kib: int = 65536
    parallelism: int = 4


def ensure_pepper(path: Path) -> None:
    """A development pepper (32 random bytes, mode 0600) if the file does not exist.
    Production peppers come from the secret store: losing one invalidates every password."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another replica starting beside us wrote it first
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32))


class Passwords:
    def __init__(self, pepper: bytes, parameters: Argon2Parameters) -> None:
        if len(pepper) < 16:
            raise ValueError("the password pepper must be at least 16 bytes")
        self._pepper = pepper
        self._hasher = PasswordHasher(
            time_cost=parameters.time_cost,
            memory_cost=parameters.memory_kib,
            parallelism=parameters.parallelism,
            type=Type.ID,
        )
        # Verified against when the email is unknown, so that an unknown email costs the
        # same time as a wrong password and timing tells an attacker nothing.
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))

    @classmethod
    def from_file(cls, pepper_file: Path, parameters: Argon2Parameters) -> Passwords:
        return cls(read_secret_bytes(pepper_file).strip(), parameters)

    def _peppered(self, password: str) -> bytes:
        digest = hmac.new(self._pepper, password.encode(), hashlib.sha256).digest()
        return base64.b64encode(digest)

    def hash_now(self, password: str) -> str:
        return self._hasher.hash(self._peppered(password))

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self.hash_now, password)

    def verify_now(self, stored_hash: str | None, password: str) -> bool:
        try:
            matched = self._hasher.verify(stored_hash or self._dummy, self._peppered(password))
        except (VerifyMismatchError, InvalidHashError):
            return False
        # Any other VerificationError (argon2 could not run, e.g. out of memory) propagates:
        # a server fault must not count as the player's failed login.
        return matched and stored_hash is not None

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        """True when `password` matches; with no stored hash (unknown account) the dummy is
        checked and the answer is False, in about the same time."""
        return await asyncio.to_thread(self.verify_now, stored_hash, password)

    def needs_rehash(self, stored_hash: str) -> bool:
        return self._hasher.check_needs_rehash(stored_hash)
