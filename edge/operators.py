"""Operator access tokens: who may use the admin listener.

Back-office staff sign in at the operator's SSO, which mints short-lived EdDSA (Ed25519) JWTs
for the back office under a key id: issuer `casino-operator-sso`, audience `casino-admin`,
`sub` the operator id, `roles` a list of role names. They are not players' tokens: another
issuer and audience, and their public keys in a directory of their own (`<kid>.pub`, re-read
as the players' are), so a key that signs players' tokens can never sign an operator's, and
the other way round. The admin listener accepts these tokens only; a player's token there is
refused with OPERATOR_TOKEN_REQUIRED.

An operator token lives at most `max_lifetime_seconds` (a token whose exp - iat is longer is
refused, whatever the SSO minted). An operator can be cut off before that: the back office
sets their revoked-before second in Redis (`revocation_key`; in development
`scripts/operator_token.py revoke OPERATOR`), and a token issued before it is refused. The
edge reads it in the operator's ADMIN rate-limit call (one Redis round trip per request);
when Redis cannot answer, admin requests are refused (DEPENDENCY_UNAVAILABLE), as players'
money requests are.

Use: `operator = verifier.decode(request.headers.get("authorization"))` raises
Unauthenticated (-> 401 with its reason); `check_not_revoked(operator, lookup)` on the
looked-up `revocation_key(operator.operator_id)`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jwt

from edge.auth import KeyRing, Unauthenticated, bearer_token, key_id, verified_claims
from edge.ratelimit import Lookup
from services.runtime.config import ConfigError
from services.runtime.errors import DependencyUnavailable

ISSUER = "casino-operator-sso"
AUDIENCE = "casino-admin"
# Operator ids and role names travel in gRPC metadata (roles comma-separated) and in logs.
_NAME = re.compile(r"^[A-Za-z0-9._:@-]{1,64}$")
_MAX_ROLES = 32
# The unix second before which an operator's tokens are void: written by the back office
# (the revocation must outlive every token issued before it), read by the edge per request.
REVOKED_BEFORE_KEY = "edge:operator-revoked-before:{operator_id}"


@dataclass(frozen=True)
class OperatorPrincipal:
    operator_id: str  # sub
    roles: frozenset[str]
    iat: int
    exp: int
    token_id: str = ""  # jti
    key_id: str = ""  # kid


@dataclass(frozen=True)
class OperatorTokenConfig:
    # `<kid>.pub` files of the SSO's signing keys. Not set: the admin listener refuses every
    # operation (no operator can be authenticated).
    public_key_dir: Path | None = None
    issuer: str = ISSUER
    audience: str = AUDIENCE
    leeway_seconds: float = 30.0
    reload_seconds: float = 30.0
    # Longest exp - iat accepted: operator tokens are short-lived by rule, not by trust.
    max_lifetime_seconds: int = 900
    # Roles an operation needs, by its gRPC method ("casino.wallet.v1.WalletService/
    # AdjustBalance" = ["wallet-adjuster"]): the operator needs one of them. An operation not
    # listed is open to any authenticated operator.
    required_roles: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_lifetime_seconds <= 0:
            raise ConfigError("edge.operator_auth.max_lifetime_seconds must be positive")
        for method, roles in self.required_roles.items():
            if not roles or not all(_NAME.match(r) for r in roles):
                raise ConfigError(
                    f"edge.operator_auth.required_roles.{method}: a non-empty list of role names"
                )


class OperatorTokenVerifier:
    def __init__(
        self,
        public_key_dir: Path | str | None,
        *,
        issuer: str = ISSUER,
        audience: str = AUDIENCE,
        leeway_seconds: float = 30.0,
        reload_seconds: float = 30.0,
        max_lifetime_seconds: int = 900,
        player_issuer: str = "casino-identity",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = KeyRing(
            Path(public_key_dir) if public_key_dir is not None else None,
            reload_seconds,
            "operator token",
        )
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_seconds
        self._max_lifetime = max_lifetime_seconds
        # Tokens of this issuer are players': refused with a reason that says so.
        self._player_issuer = player_issuer
        self._clock = clock

    @classmethod
    def from_config(cls, config: OperatorTokenConfig, player_issuer: str) -> OperatorTokenVerifier:
        return cls(
            config.public_key_dir,
            issuer=config.issuer,
            audience=config.audience,
            leeway_seconds=config.leeway_seconds,
            reload_seconds=config.reload_seconds,
            max_lifetime_seconds=config.max_lifetime_seconds,
            player_issuer=player_issuer,
        )

    @property
    def key_ids(self) -> frozenset[str]:
        return self._keys.key_ids

    def decode(self, authorization: str | None) -> OperatorPrincipal:
        """Check the `Authorization: Bearer <jwt>` header's operator token: algorithm, key
        id, signature, issuer, audience, time claims and lifetime, operator id and roles."""
        token = bearer_token(authorization)
        if self._is_players(token):
            raise Unauthenticated(
                "OPERATOR_TOKEN_REQUIRED",
                "the admin listener accepts operator tokens only; this is a player's token",
            )
        kid = key_id(token)
        key, _ = self._keys.get(kid)
        if key is None:
            raise Unauthenticated("UNKNOWN_KEY_ID", "access token is signed with an unknown key")
        claims = verified_claims(
            token,
            key,
            issuer=self._issuer,
            audience=self._audience,
            leeway=self._leeway,
            required=("exp", "iat", "sub", "iss", "aud", "roles"),
        )
        sub, iat, exp, roles = claims["sub"], claims["iat"], claims["exp"], claims["roles"]
        if not (isinstance(sub, str) and _NAME.match(sub)):
            raise Unauthenticated("TOKEN_INVALID", "operator token names no valid operator")
        if not (
            isinstance(roles, list)
            and len(roles) <= _MAX_ROLES
            and all(isinstance(r, str) and _NAME.match(r) for r in roles)
        ):
            raise Unauthenticated("TOKEN_INVALID", "operator token roles are malformed")
        if not isinstance(iat, int) or iat > self._clock() + self._leeway:
            raise Unauthenticated("TOKEN_INVALID", "access token is invalid")
        if int(exp) - iat > self._max_lifetime:
            raise Unauthenticated(
                "TOKEN_INVALID",
                f"operator tokens live at most {self._max_lifetime} seconds",
            )
        return OperatorPrincipal(
            operator_id=sub,
            roles=frozenset(roles),
            iat=iat,
            exp=int(exp),
            token_id=str(claims.get("jti", "")),
            key_id=kid,
        )

    def _is_players(self, token: str) -> bool:
        """Whether the token says it was issued to a player (unverified: it only picks the
        refusal's reason; such a token is refused whatever it is)."""
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return False
        return isinstance(claims, dict) and claims.get("iss") == self._player_issuer


def missing_role(
    required_roles: dict[str, list[str]], grpc_method: str, operator: OperatorPrincipal
) -> list[str] | None:
    """The roles an operation needs when the operator holds none of them, else None.
    `grpc_method` is "package.Service/Method"."""
    needed = required_roles.get(grpc_method)
    if needed and not operator.roles.intersection(needed):
        return needed
    return None


def revocation_key(operator_id: str) -> str:
    """Where the back office keeps the second before which this operator's tokens are void."""
    return REVOKED_BEFORE_KEY.format(operator_id=operator_id)


def check_not_revoked(operator: OperatorPrincipal, lookup: Lookup) -> None:
    """The revocation rule on a looked-up `revocation_key` value (read by the rate limiter's
    call): issued before the second -> TOKEN_REVOKED; not knowable -> refused
    (DEPENDENCY_UNAVAILABLE): the back office moves money, so it fails closed."""
    if not lookup.available:
        raise DependencyUnavailable("redis")
    if lookup.value is not None and operator.iat < int(lookup.value):
        raise Unauthenticated(
            "TOKEN_REVOKED", "this operator's access was revoked; sign in at the SSO again"
        )
