"""Development stand-in for the operator's SSO: its signing key pair and the back-office
access tokens it would mint.

In production operators sign in at the SSO, which mints their short-lived tokens; the edge
holds only the SSO's public keys (`[edge.operator_auth] public_key_dir`). Here the key pair
is made on first use in `.dev/secrets/operators/jwt/` (`<kid>.key` 0600, `<kid>.pub`), and a
token is minted for whoever is named:

    .venv/bin/python scripts/operator_token.py ops.alice --role finance
    curl -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
         -d '{}' http://127.0.0.1:8082/v1/admin/wallet:reconcile
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge.operators import AUDIENCE, ISSUER  # noqa: E402
from services.identity.tokens import ensure_key_pair  # noqa: E402
from services.runtime.secrets import read_secret_bytes  # noqa: E402

DEV_KEY_DIR = ROOT / ".dev" / "secrets" / "operators" / "jwt"
DEV_KEY_ID = "dev-sso-1"


def ensure_dev_key(directory: Path = DEV_KEY_DIR, kid: str = DEV_KEY_ID) -> Path:
    """The SSO's development key pair, made if missing; returns the directory."""
    ensure_key_pair(directory, kid)
    return directory


def mint(
    operator_id: str,
    roles: Sequence[str],
    *,
    directory: Path = DEV_KEY_DIR,
    kid: str = DEV_KEY_ID,
    lifetime_seconds: int = 900,
    now: int | None = None,
) -> str:
    """An operator access token as the SSO mints it, signed with `<kid>.key`."""
    key = serialization.load_pem_private_key(
        read_secret_bytes(directory / f"{kid}.key"), password=None
    )
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{directory / kid}.key is not an Ed25519 private key")
    issued = int(time.time()) if now is None else now
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": operator_id,
        "roles": list(roles),
        "jti": uuid.uuid4().hex,
        "iat": issued,
        "nbf": issued,
        "exp": issued + lifetime_seconds,
    }
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid, "typ": "JWT"})


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("operator_id", help="the operator's id (the token's sub)")
    parser.add_argument("--role", action="append", default=[], help="a role (repeatable)")
    parser.add_argument("--lifetime", type=int, default=900, help="seconds (default 900)")
    parser.add_argument("--key-dir", type=Path, default=DEV_KEY_DIR)
    parser.add_argument("--kid", default=DEV_KEY_ID)
    args = parser.parse_args(argv)
    ensure_dev_key(args.key_dir, args.kid)
    print(
        mint(
            args.operator_id,
            args.role,
            directory=args.key_dir,
            kid=args.kid,
            lifetime_seconds=args.lifetime,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
