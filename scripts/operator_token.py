"""Development stand-in for the operator's SSO: its signing key pair and the back-office
access tokens it would mint.

In production operators sign in at the SSO, which mints their short-lived tokens; the edge
holds only the SSO's public keys (`[edge.operator_auth] public_key_dir`). Here the key pair
is made on first use in `.dev/secrets/operators/jwt/` (`<kid>.key` 0600, `<kid>.pub`), and a
token is minted for whoever is named:

    .venv/bin/python scripts/operator_token.py ops.alice --role finance
    curl -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
         -d '{}' http://127.0.0.1:8082/v1/admin/wallet:reconcile

Cutting an operator off before their tokens expire is the back office's write to the edge's
Redis (the `[redis]` of the edge's config): every token of theirs issued before the next
second (Redis's clock) is refused from the next request on; tokens minted from that second
on are accepted:

    .venv/bin/python scripts/operator_token.py revoke ops.alice [--config config/dev/edge.toml]
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import jwt
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge.config import edge_settings  # noqa: E402
from edge.operators import AUDIENCE, ISSUER, OperatorTokenConfig, revocation_key  # noqa: E402
from services.identity.tokens import ensure_key_pair  # noqa: E402
from services.runtime.config import build, load_config  # noqa: E402
from services.runtime.secrets import read_secret, read_secret_bytes  # noqa: E402

DEV_KEY_DIR = ROOT / ".dev" / "secrets" / "operators" / "jwt"
DEV_KEY_ID = "dev-sso-1"
DEV_EDGE_CONFIG = ROOT / "config" / "dev" / "edge.toml"

# KEYS[1]: the operator's revoked-before second. ARGV[1]: its ttl. The cutoff is the next
# second of Redis's clock (every token issued until now has an older iat, whichever host
# minted it); it only moves forward. Returns the cutoff in force.
_REVOKE = """
local now = redis.call('TIME')
local cutoff = tonumber(now[1]) + 1
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if cutoff > current then
  redis.call('SET', KEYS[1], string.format('%d', cutoff), 'EX', ARGV[1])
  return cutoff
end
return current
"""


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


def revoke(operator_id: str, edge_config: Path = DEV_EDGE_CONFIG) -> int:
    """Refuses every token of `operator_id` issued before now, at every edge reading the Redis
    of `edge_config`; returns the cutoff (unix second). The mark outlives every token it
    refuses: the longest lifetime the edge accepts, plus its leeway."""
    config = load_config(edge_config)
    operator_auth = build(
        OperatorTokenConfig,
        edge_settings(config).operator_auth,
        "edge.operator_auth",
        config.config_dir,
    )
    ttl = operator_auth.max_lifetime_seconds + int(operator_auth.leeway_seconds) + 60
    password = read_secret(config.redis.password_file) if config.redis.password_file else None
    client = redis.Redis.from_url(config.redis.url, password=password, socket_timeout=5.0)
    try:
        cutoff = client.eval(_REVOKE, 1, revocation_key(operator_id), ttl)
    finally:
        client.close()
    return int(cutoff)


def _revoke_command(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="operator_token.py revoke",
        description="Refuse every access token of an operator issued before now.",
    )
    parser.add_argument("operator_id", help="the operator's id (their tokens' sub)")
    parser.add_argument(
        "--config", type=Path, default=DEV_EDGE_CONFIG, help="the edge's config (its [redis])"
    )
    args = parser.parse_args(argv)
    cutoff = revoke(args.operator_id, args.config)
    print(f"{args.operator_id}: tokens issued before {cutoff} (unix seconds) are refused")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["revoke"]:
        return _revoke_command(argv[1:])
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="`operator_token.py revoke OPERATOR` refuses the operator's tokens issued so far.",
    )
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
