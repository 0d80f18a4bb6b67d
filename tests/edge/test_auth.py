"""Access-token verification at the edge: keys from a directory of <kid>.pub files, the
algorithm pinned to EdDSA, the time claims, and the revocation rule on identity's
revoked-before timestamp (read from the real Redis by the edge: tests/edge/test_limits_http.py)."""

from __future__ import annotations

import base64
import gc
import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.auth import TokenVerifier, Unauthenticated, check_not_revoked
from edge.ratelimit import UNAVAILABLE, Lookup
from services.runtime.errors import DependencyUnavailable


class Issuer:
    """Stands in for identity: key pairs written as identity writes them, tokens minted
    with its claims."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.keys: dict[str, Ed25519PrivateKey] = {}

    def new_key(self, kid: str | None = None) -> str:
        kid = kid or uuid.uuid4().hex[:8]
        key = Ed25519PrivateKey.generate()
        self.keys[kid] = key
        (self.folder / f"{kid}.pub").write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        return kid

    def claims(self, player_id: str = "player-1", **overrides: object) -> dict[str, object]:
        now = int(time.time())
        claims: dict[str, object] = {
            "iss": "casino-identity",
            "aud": "casino-edge",
            "sub": player_id,
            "sid": "session-1",
            "jti": uuid.uuid4().hex,
            "iat": now,
            "nbf": now,
            "exp": now + 900,
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, kid: str, player_id: str = "player-1", **overrides: object) -> str:
        return jwt.encode(
            self.claims(player_id, **overrides),
            self.keys[kid],
            algorithm="EdDSA",
            headers={"kid": kid},
        )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _handmade(header: dict[str, object], claims: dict[str, object], secret: bytes | None) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = (
        _b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()) if secret else ""
    )
    return f"{signing_input}.{signature}"


@pytest.fixture
def issuer(tmp_path: Path) -> Issuer:
    return Issuer(tmp_path)


def _reason(authorization: str | None, verifier: TokenVerifier) -> str:
    with pytest.raises(Unauthenticated) as refused:
        verifier.decode(authorization)
    return refused.value.reason


def test_valid_token_gives_the_principal(issuer: Issuer) -> None:
    kid = issuer.new_key()
    verifier = TokenVerifier(issuer.folder)
    token = issuer.token(kid, "player-42")
    principal = verifier.decode(f"Bearer {token}")
    assert principal.player_id == "player-42"
    assert principal.session_id == "session-1"
    assert principal.key_id == kid
    assert principal.exp - principal.iat == 900


def test_missing_or_malformed_header(issuer: Issuer) -> None:
    kid = issuer.new_key()
    verifier = TokenVerifier(issuer.folder)
    assert _reason(None, verifier) == "TOKEN_MISSING"
    assert _reason("", verifier) == "TOKEN_MISSING"
    assert _reason(f"Basic {issuer.token(kid)}", verifier) == "TOKEN_INVALID"
    assert _reason("Bearer not.a.jwt", verifier) == "TOKEN_INVALID"
    assert _reason("Bearer " + "a" * 5000, verifier) == "TOKEN_INVALID"


def test_expired_token_is_refused_beyond_the_leeway(issuer: Issuer) -> None:
    kid = issuer.new_key()
    verifier = TokenVerifier(issuer.folder, leeway_seconds=5)
    now = int(time.time())
    expired = issuer.token(kid, iat=now - 1000, nbf=now - 1000, exp=now - 10)
    assert _reason(f"Bearer {expired}", verifier) == "TOKEN_EXPIRED"
    # Within the clock-skew leeway it still passes.
    just = issuer.token(kid, iat=now - 900, nbf=now - 900, exp=now - 2)
    assert verifier.decode(f"Bearer {just}").player_id == "player-1"
    early = issuer.token(kid, nbf=now + 60)
    assert _reason(f"Bearer {early}", verifier) == "TOKEN_NOT_YET_VALID"


def test_tampered_claims_or_signature_are_refused(issuer: Issuer) -> None:
    kid = issuer.new_key()
    verifier = TokenVerifier(issuer.folder)
    header, payload, signature = issuer.token(kid, "player-1").split(".")
    other_payload = issuer.token(kid, "player-2").split(".")[1]
    assert _reason(f"Bearer {header}.{other_payload}.{signature}", verifier) == "TOKEN_INVALID"
    flipped = signature[:-2] + ("AA" if not signature.endswith("AA") else "BB")
    assert _reason(f"Bearer {header}.{payload}.{flipped}", verifier) == "TOKEN_INVALID"


def test_wrong_issuer_audience_or_missing_claims_are_refused(issuer: Issuer) -> None:
    kid = issuer.new_key()
    verifier = TokenVerifier(issuer.folder)
    for overrides in (
        {"iss": "someone-else"},
        {"aud": "casino-backoffice"},
        {"sid": None},
        {"exp": None},
        {"sub": ""},
    ):
        token = issuer.token(kid, **overrides)
        assert _reason(f"Bearer {token}", verifier) == "TOKEN_INVALID", overrides


def test_key_of_another_kid_or_an_unknown_kid_is_refused(issuer: Issuer) -> None:
    kid_a, kid_b = issuer.new_key(), issuer.new_key()
    verifier = TokenVerifier(issuer.folder)
    # Signed with a's key but claiming b's kid: b's key does not verify it.
    forged = jwt.encode(
        issuer.claims(), issuer.keys[kid_a], algorithm="EdDSA", headers={"kid": kid_b}
    )
    assert _reason(f"Bearer {forged}", verifier) == "TOKEN_INVALID"
    rogue = Ed25519PrivateKey.generate()
    unknown = jwt.encode(issuer.claims(), rogue, algorithm="EdDSA", headers={"kid": "nope"})
    assert _reason(f"Bearer {unknown}", verifier) == "UNKNOWN_KEY_ID"
    no_kid = jwt.encode(issuer.claims(), issuer.keys[kid_a], algorithm="EdDSA")
    assert _reason(f"Bearer {no_kid}", verifier) == "TOKEN_INVALID"


def test_algorithm_confusion_is_refused(issuer: Issuer) -> None:
    kid = issuer.new_key()
    verifier = TokenVerifier(issuer.folder)
    claims = issuer.claims()
    public_pem = (issuer.folder / f"{kid}.pub").read_bytes()
    # HS256 "signed" with the public key as the HMAC secret: the classic confusion attack.
    hs256 = _handmade({"alg": "HS256", "typ": "JWT", "kid": kid}, claims, public_pem)
    assert _reason(f"Bearer {hs256}", verifier) == "TOKEN_INVALID"
    unsigned = _handmade({"alg": "none", "typ": "JWT", "kid": kid}, claims, None)
    assert _reason(f"Bearer {unsigned}", verifier) == "TOKEN_INVALID"


def test_a_token_verified_before_still_expires(issuer: Issuer) -> None:
    """Verified tokens are remembered (the signature is checked once), never past their
    expiry."""
    kid = issuer.new_key()
    now = [time.time()]
    verifier = TokenVerifier(issuer.folder, leeway_seconds=0, clock=lambda: now[0])
    header = f"Bearer {issuer.token(kid, exp=int(now[0]) + 60)}"
    first = verifier.decode(header)
    checked = verifier._check
    verifier._check = lambda token: pytest.fail("a remembered token was verified again")  # type: ignore[method-assign]
    assert verifier.decode(header) == first
    now[0] += 61
    assert _reason(header, verifier) == "TOKEN_EXPIRED"
    verifier._check = checked  # type: ignore[method-assign]


def test_remembered_tokens_add_nothing_for_the_collector_to_walk(issuer: Issuer) -> None:
    # Up to 50,000 are kept; as objects they cost every full collection 5 ms.
    kid = issuer.new_key()
    verifier = TokenVerifier(issuer.folder)
    headers = [f"Bearer {issuer.token(kid)}" for _ in range(2_000)]
    gc.collect()
    before = len(gc.get_objects())
    principals = [verifier.decode(header) for header in headers]
    del principals
    gc.collect()
    assert len(gc.get_objects()) - before < 100


def test_rotation_new_kid_is_picked_up_and_a_retired_one_refused(issuer: Issuer) -> None:
    old = issuer.new_key()
    verifier = TokenVerifier(issuer.folder, reload_seconds=3600)
    old_token = issuer.token(old)
    assert verifier.decode(f"Bearer {old_token}").key_id == old

    new = issuer.new_key()  # identity rotates: a new pair, tokens signed with it at once
    deadline = time.monotonic() + 3
    while True:  # an unknown kid re-reads the folder (at most once a second)
        try:
            assert verifier.decode(f"Bearer {issuer.token(new)}").key_id == new
            break
        except Unauthenticated as refused:
            assert refused.reason == "UNKNOWN_KEY_ID"
            assert time.monotonic() < deadline, "new key id never picked up"
            time.sleep(0.1)

    (issuer.folder / f"{old}.pub").unlink()  # retired after the access-token lifetime
    verifier.reload()
    assert _reason(f"Bearer {old_token}", verifier) == "UNKNOWN_KEY_ID"
    assert verifier.key_ids == {new}


def test_token_issued_before_revocation_is_refused(issuer: Issuer) -> None:
    # The rule on what the edge's rate-limit call read from identity's revocation key.
    kid = issuer.new_key()
    verifier = TokenVerifier(issuer.folder)
    now = int(time.time())
    before = verifier.decode(f"Bearer {issuer.token(kid, 'player-1', iat=now - 60)}")
    after = verifier.decode(f"Bearer {issuer.token(kid, 'player-1', iat=now)}")
    revoked = Lookup(available=True, value=str(now - 30).encode())

    with pytest.raises(Unauthenticated) as refused:
        check_not_revoked(before, "PLAYER_WALLET", revoked)
    assert refused.value.reason == "TOKEN_REVOKED"
    check_not_revoked(after, "PLAYER_WALLET", revoked)
    check_not_revoked(before, "PLAYER_WALLET", Lookup(available=True, value=None))


def test_revocation_unknowable_fails_closed_for_money_open_for_catalog(issuer: Issuer) -> None:
    kid = issuer.new_key()
    principal = TokenVerifier(issuer.folder).decode(f"Bearer {issuer.token(kid)}")
    for endpoint_class in ("PLAYER_WALLET", "PAYMENT", "GAMEPLAY"):
        with pytest.raises(DependencyUnavailable):
            check_not_revoked(principal, endpoint_class, UNAVAILABLE)
    check_not_revoked(principal, "CATALOG", UNAVAILABLE)
