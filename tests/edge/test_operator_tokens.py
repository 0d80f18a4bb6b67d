"""Operators' tokens at the edge: the operator SSO's keys from a directory of their own, its
issuer and audience, a bounded lifetime, the operator id and roles; a player's token is
refused with a reason that says so. The development SSO script mints what the edge accepts."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.auth import Unauthenticated
from edge.operators import OperatorTokenVerifier, missing_role
from scripts import operator_token

KID = "sso-1"


@pytest.fixture
def sso_key(tmp_path: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    (tmp_path / f"{KID}.pub").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key


def _token(key: Ed25519PrivateKey, kid: str = KID, **overrides: object) -> str:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": "casino-operator-sso",
        "aud": "casino-admin",
        "sub": "ops.alice",
        "roles": ["finance"],
        "jti": uuid.uuid4().hex,
        "iat": now,
        "exp": now + 300,
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid})


def _reason(verifier: OperatorTokenVerifier, token: str) -> str:
    with pytest.raises(Unauthenticated) as refused:
        verifier.decode(f"Bearer {token}")
    return refused.value.reason


def test_an_operator_token_gives_the_operator_and_roles(
    tmp_path: Path, sso_key: Ed25519PrivateKey
) -> None:
    verifier = OperatorTokenVerifier(tmp_path)
    operator = verifier.decode(f"Bearer {_token(sso_key, roles=['finance', 'auditor'])}")
    assert operator.operator_id == "ops.alice"
    assert operator.roles == {"finance", "auditor"}
    assert operator.key_id == KID
    assert missing_role({"a.S/Do": ["auditor"]}, "a.S/Do", operator) is None
    assert missing_role({"a.S/Do": ["wallet-adjuster"]}, "a.S/Do", operator) == ["wallet-adjuster"]
    assert missing_role({}, "a.S/Do", operator) is None


def test_a_players_token_is_named_as_such(tmp_path: Path, sso_key: Ed25519PrivateKey) -> None:
    verifier = OperatorTokenVerifier(tmp_path)
    # Identity's claims, even signed with a key the edge holds for operators.
    player = _token(sso_key, iss="casino-identity", aud="casino-edge", sid="s-1", roles=None)
    assert _reason(verifier, player) == "OPERATOR_TOKEN_REQUIRED"


def test_claims_lifetime_and_roles_are_checked(tmp_path: Path, sso_key: Ed25519PrivateKey) -> None:
    verifier = OperatorTokenVerifier(tmp_path, max_lifetime_seconds=900, leeway_seconds=5)
    now = int(time.time())
    for overrides in (
        {"aud": "casino-edge"},  # a token for another audience
        {"iss": "someone-else"},
        {"roles": None},  # roles are required ...
        {"roles": "finance"},  # ... as a list ...
        {"roles": ["fin ance"]},  # ... of plain names (they travel in call metadata)
        {"sub": ""},
        {"sub": "a,b"},
        {"exp": now + 3600},  # longer-lived than operator tokens may be
    ):
        assert _reason(verifier, _token(sso_key, **overrides)) == "TOKEN_INVALID", overrides
    expired = _token(sso_key, iat=now - 400, exp=now - 100)
    assert _reason(verifier, expired) == "TOKEN_EXPIRED"
    rogue = _token(Ed25519PrivateKey.generate(), kid="sso-rogue")
    assert _reason(verifier, rogue) == "UNKNOWN_KEY_ID"
    forged = _token(Ed25519PrivateKey.generate())  # the SSO's kid, another key
    assert _reason(verifier, forged) == "TOKEN_INVALID"
    with pytest.raises(Unauthenticated) as missing:
        verifier.decode(None)
    assert missing.value.reason == "TOKEN_MISSING"


def test_without_a_key_directory_no_operator_is_authenticated(
    sso_key: Ed25519PrivateKey,
) -> None:
    verifier = OperatorTokenVerifier(None)
    assert verifier.key_ids == frozenset()
    assert _reason(verifier, _token(sso_key)) == "UNKNOWN_KEY_ID"


def test_the_development_sso_mints_tokens_the_edge_accepts(tmp_path: Path) -> None:
    keys = operator_token.ensure_dev_key(tmp_path / "jwt", "dev-sso-test")
    private = keys / "dev-sso-test.key"
    assert private.stat().st_mode & 0o077 == 0  # the private key is the SSO's alone
    token = operator_token.mint(
        "ops.grace", ["finance", "auditor"], directory=keys, kid="dev-sso-test"
    )
    operator = OperatorTokenVerifier(keys).decode(f"Bearer {token}")
    assert (operator.operator_id, operator.roles) == ("ops.grace", {"finance", "auditor"})
    # Made once: a second call keeps the key pair.
    before = private.read_bytes()
    operator_token.ensure_dev_key(keys, "dev-sso-test")
    assert private.read_bytes() == before
