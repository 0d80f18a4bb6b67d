"""Access-token verification at the edge: no call to identity per request.

Identity signs short-lived JWTs with Ed25519 (alg EdDSA) under a key id (kid); the public
keys are files `<kid>.pub` (SPKI PEM) in a directory the edge re-reads periodically, so a
rotation is: identity adds a new key pair and switches to it, the edge picks the new `.pub`
up within `reload_seconds` (or at once, the first time a token names a kid it does not know),
the old `.pub` is removed after the access-token lifetime.

The algorithm is pinned: only EdDSA with an Ed25519 key is ever verified, whatever the token
header says ("none", HS256 signed with the public key as an HMAC secret, RS256 ... are refused
before any signature check).

Revocation: identity keeps `identity:revoked-before:<player_id>` (unix seconds) in Redis on
logout, refresh-token reuse and self-exclusion; a token issued before that instant
(iat < value) is refused. The edge reads it in its rate-limit call (one Redis round trip per
request) and applies `check_not_revoked` to what it read. If Redis cannot answer,
money-moving classes fail closed (503 DEPENDENCY_UNAVAILABLE, the client retries) and
CATALOG fails open (a revoked token can at most read the lobby until it expires).

Use: `principal = verifier.decode(request.headers.get("authorization"))` (the signature and
the claims, no Redis) raises Unauthenticated (-> 401 with its reason); `check_not_revoked`
raises Unauthenticated or DependencyUnavailable (-> 503).
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from edge.ratelimit import Lookup, class_name
from services.runtime.errors import Code, DependencyUnavailable, DomainError
from services.runtime.logs import get_logger

log = get_logger()

ALGORITHM = "EdDSA"
REVOKED_BEFORE_KEY = "identity:revoked-before:{player_id}"
# Classes that move or reveal money: a token whose revocation cannot be checked is refused.
FAIL_OPEN_CLASSES = frozenset({"CATALOG"})
_MAX_TOKEN_LENGTH = 4096
# Verified tokens kept (about 1 KiB each).
_VERIFIED_CACHE_SIZE = 50_000
# A token naming an unknown kid re-reads the key directory at most this often.
_UNKNOWN_KID_RELOAD_SECONDS = 1.0


class Unauthenticated(DomainError):
    """401: no usable access token. Reasons: TOKEN_MISSING, TOKEN_INVALID, TOKEN_EXPIRED,
    TOKEN_NOT_YET_VALID, UNKNOWN_KEY_ID, TOKEN_REVOKED."""

    code = Code.UNAUTHENTICATED

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(reason, message)


class KeyRing:
    """The Ed25519 public keys of a directory of `<kid>.pub` files (SPKI PEM), re-read every
    `reload_seconds`, and at once (at most once a second) when a token names a kid not held.
    No directory (None): no key, every token names an unknown kid."""

    def __init__(self, directory: Path | None, reload_seconds: float, what: str) -> None:
        self._dir = directory
        self._reload_seconds = reload_seconds
        self._what = what
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._loaded_at = -float("inf")
        self.reload()

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def reload(self) -> bool:
        """Re-read every `<kid>.pub` (a removed file retires its key); True if keys changed."""
        keys: dict[str, Ed25519PublicKey] = {}
        for path in sorted(self._dir.glob("*.pub")) if self._dir is not None else ():
            try:
                key = load_pem_public_key(path.read_bytes())
            except (OSError, ValueError) as exc:
                log.warning(
                    f"unreadable {self._what} public key skipped", file=str(path), error=str(exc)
                )
                continue
            if not isinstance(key, Ed25519PublicKey):
                log.warning(f"{self._what} public key is not Ed25519; skipped", file=str(path))
                continue
            keys[path.stem] = key
        changed = keys.keys() != self._keys.keys() or any(
            keys[k].public_bytes_raw() != self._keys[k].public_bytes_raw() for k in keys
        )
        if changed:
            log.info(f"{self._what} public keys loaded", key_ids=sorted(keys))
        self._keys = keys
        self._loaded_at = time.monotonic()
        return changed

    def get(self, kid: str) -> tuple[Ed25519PublicKey | None, bool]:
        """The key of `kid` (None: not held), and whether the directory was re-read with a
        change on the way."""
        since = time.monotonic() - self._loaded_at
        changed = False
        if since > self._reload_seconds or (
            kid not in self._keys and since > _UNKNOWN_KID_RELOAD_SECONDS
        ):
            changed = self.reload()
        return self._keys.get(kid), changed


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header."""
    if not authorization or not authorization.strip():
        raise Unauthenticated("TOKEN_MISSING", "an access token is required")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("TOKEN_INVALID", "expected 'Authorization: Bearer <token>'")
    if len(token) > _MAX_TOKEN_LENGTH:
        raise Unauthenticated("TOKEN_INVALID", "access token is too long")
    return token


def key_id(token: str) -> str:
    """The kid in a token's header, once the header pins the algorithm to EdDSA (nothing is
    verified yet)."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise Unauthenticated("TOKEN_INVALID", "access token is malformed") from None
    if header.get("alg") != ALGORITHM:
        raise Unauthenticated("TOKEN_INVALID", f"access token algorithm must be {ALGORITHM}")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise Unauthenticated("TOKEN_INVALID", "access token has no key id")
    return kid


def verified_claims(
    token: str,
    key: Ed25519PublicKey,
    *,
    issuer: str,
    audience: str,
    leeway: float,
    required: tuple[str, ...],
) -> dict[str, Any]:
    """The claims of a token signed with `key`, for `issuer` and `audience`, within its time
    claims, with every `required` claim present."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            audience=audience,
            issuer=issuer,
            leeway=leeway,
            options={"require": list(required)},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("TOKEN_EXPIRED", "access token has expired") from None
    except jwt.ImmatureSignatureError:
        raise Unauthenticated("TOKEN_NOT_YET_VALID", "access token is not valid yet") from None
    except jwt.PyJWTError as exc:
        # Bad signature, wrong issuer or audience, missing or malformed claims: the
        # client learns only that the token is unusable; the log has which check failed.
        log.info("access token refused", reason=type(exc).__name__, issuer=issuer)
        raise Unauthenticated("TOKEN_INVALID", "access token is invalid") from None
    return claims


@dataclass(frozen=True)
class Principal:
    player_id: str  # sub
    session_id: str  # sid: the refresh-token family this access token was issued from
    iat: int
    exp: int
    token_id: str = ""  # jti
    key_id: str = ""  # kid


@dataclass(frozen=True)
class TokenVerifierConfig:
    public_key_dir: Path
    issuer: str = "casino-identity"
    audience: str = "casino-edge"
    # Tolerated clock difference between identity and the edge, for exp/nbf/iat.
    leeway_seconds: float = 30.0
    # How often the key directory is re-read.
    reload_seconds: float = 30.0


class TokenVerifier:
    def __init__(
        self,
        public_key_dir: Path | str,
        *,
        issuer: str = "casino-identity",
        audience: str = "casino-edge",
        leeway_seconds: float = 30.0,
        reload_seconds: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = issuer
        self._audience = audience
        self._leeway = leeway_seconds
        self._clock = clock
        self._keys = KeyRing(Path(public_key_dir), reload_seconds, "token")
        # Tokens whose signature and claims were checked, by their text: an app sends the
        # same token for up to 15 minutes, and the signature check is most of decode's cost.
        # Times are still checked on every use; a change of keys empties it. Held as plain
        # tuples of strings and ints, which the cyclic collector stops walking: 50,000
        # Principal objects cost 5 ms of every full collection (the tuples 1 ms), every
        # request in flight waiting.
        self._verified: OrderedDict[str, tuple[Any, ...]] = OrderedDict()

    @classmethod
    def from_config(cls, config: TokenVerifierConfig) -> TokenVerifier:
        return cls(
            config.public_key_dir,
            issuer=config.issuer,
            audience=config.audience,
            leeway_seconds=config.leeway_seconds,
            reload_seconds=config.reload_seconds,
        )

    @property
    def key_ids(self) -> frozenset[str]:
        return self._keys.key_ids

    def reload(self) -> None:
        """Re-read every `<kid>.pub`; a removed file retires its key."""
        if self._keys.reload():
            self._verified.clear()

    def _key(self, kid: str) -> Ed25519PublicKey | None:
        key, changed = self._keys.get(kid)
        if changed:
            self._verified.clear()
        return key

    def decode(self, authorization: str | None) -> Principal:
        """Check the `Authorization: Bearer <jwt>` header's token: algorithm, key id,
        signature, issuer, audience, time claims. No Redis."""
        token = bearer_token(authorization)
        cached = self._verified.get(token)
        known = Principal(*cached) if cached is not None else None
        if known is not None and self._key(known.key_id) is not None:
            now = self._clock()
            if now > known.exp + self._leeway:
                del self._verified[token]
                raise Unauthenticated("TOKEN_EXPIRED", "access token has expired")
            self._verified.move_to_end(token)
            return known
        principal = self._check(token)
        self._verified[token] = dataclasses.astuple(principal)
        while len(self._verified) > _VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return principal

    def _check(self, token: str) -> Principal:
        kid = key_id(token)
        key = self._key(kid)
        if key is None:
            raise Unauthenticated("UNKNOWN_KEY_ID", "access token is signed with an unknown key")
        claims = verified_claims(
            token,
            key,
            issuer=self.issuer,
            audience=self._audience,
            leeway=self._leeway,
            required=("exp", "iat", "sub", "sid", "iss", "aud"),
        )
        sub, sid, iat, exp = claims["sub"], claims["sid"], claims["iat"], claims["exp"]
        if not (isinstance(sub, str) and sub and isinstance(sid, str) and sid):
            raise Unauthenticated("TOKEN_INVALID", "access token is invalid")
        if not isinstance(iat, int) or iat > self._clock() + self._leeway:
            raise Unauthenticated("TOKEN_INVALID", "access token is invalid")
        return Principal(
            player_id=sub,
            session_id=sid,
            iat=iat,
            exp=int(exp),
            token_id=str(claims.get("jti", "")),
            key_id=kid,
        )


def revocation_key(principal: Principal) -> str:
    """Where identity keeps the instant before which this player's tokens are void."""
    return REVOKED_BEFORE_KEY.format(player_id=principal.player_id)


def check_not_revoked(principal: Principal, endpoint_class: str | int, lookup: Lookup) -> None:
    """The revocation rule on a looked-up `revocation_key` value (from a GET, or read by the
    rate limiter's call): issued before the instant -> TOKEN_REVOKED; not knowable -> money
    classes fail closed (DEPENDENCY_UNAVAILABLE), CATALOG open."""
    if not lookup.available:
        if class_name(endpoint_class) in FAIL_OPEN_CLASSES:
            return
        raise DependencyUnavailable("redis")
    if lookup.value is not None and principal.iat < int(lookup.value):
        raise Unauthenticated("TOKEN_REVOKED", "the session was ended; log in again")
