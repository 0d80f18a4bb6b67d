"""Access tokens: EdDSA (Ed25519) JWTs signed with the current key of a key directory.

The directory holds `<kid>.key` (PKCS8 PEM, private, 0600, identity only) and `<kid>.pub`
(SPKI PEM). The edge loads every `*.pub` there and verifies tokens itself. Rotation: add a
new kid, point identity at it, retire the old `.pub` once the access-token lifetime passed.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.runtime.secrets import read_secret_bytes

ISSUER = "casino-identity"
AUDIENCE = "casino-edge"
_KID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def ensure_key_pair(directory: Path, kid: str) -> None:
    """A development key pair `<kid>.key`/`<kid>.pub` if the private key does not exist."""
    private_path = directory / f"{kid}.key"
    if private_path.exists():
        return
    directory.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    try:
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another replica starting beside us wrote it first
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    public_path = directory / f"{kid}.pub"
    tmp = public_path.with_suffix(".pub.tmp")
    tmp.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    tmp.chmod(0o644)
    tmp.replace(public_path)


@dataclass(frozen=True)
class AccessToken:
    token: str
    jti: str
    issued_at: int
    expires_at: int


class TokenSigner:
    def __init__(self, directory: Path, kid: str, lifetime_seconds: int) -> None:
        if not _KID.match(kid):
            raise ValueError(f"key id {kid!r}: letters, digits, '.', '_' or '-' only")
        if lifetime_seconds <= 0:
            raise ValueError("the access token lifetime must be positive")
        private = serialization.load_pem_private_key(
            read_secret_bytes(directory / f"{kid}.key"), password=None
        )
        if not isinstance(private, Ed25519PrivateKey):
            raise ValueError(f"{directory / kid}.key is not an Ed25519 private key")
        self._key = private
        self.kid = kid
        self.lifetime_seconds = lifetime_seconds

    def issue(self, player_id: str, session_id: str, now: int) -> AccessToken:
        """`now` in whole unix seconds: the edge compares `iat` with the player's
        revoked-before second (see sessions.py)."""
        jti = uuid.uuid4().hex
        expires = now + self.lifetime_seconds
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": player_id,
            "sid": session_id,
            "jti": jti,
            "iat": now,
            "nbf": now,
            "exp": expires,
        }
        token = jwt.encode(
            claims, self._key, algorithm="EdDSA", headers={"kid": self.kid, "typ": "JWT"}
        )
        return AccessToken(token, jti, now, expires)
