"""Identity's pure parts: lockout backoff, registration validation and idempotency
fingerprints, password peppering, token signing. No database, Redis or network."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import jwt
import pytest

from services.identity.lockout import lock_seconds
from services.identity.passwords import Argon2Parameters, Passwords
from services.identity.registration import Application, email_key, validate
from services.identity.tokens import TokenSigner, ensure_key_pair
from services.runtime.errors import IdempotencyKeyRequired, InvalidArgument

CHEAP = Argon2Parameters(time_cost=1, memory_kib=8192, parallelism=1)


def application(**overrides: object) -> Application:
    values: dict[str, object] = {
        "request_id": "reg-1",
        "email": "Grace@Example.org",
        "password": "correct horse battery staple",
        "given_name": " Grace ",
        "family_name": "Hopper",
        "birth_date": dt.date(1985, 6, 15),
        "address_line1": "1 Test Street",
        "address_line2": "",
        "city": "London",
        "postcode": "E1 6AN",
        "country": "gb",
    }
    values.update(overrides)
    return Application(**values)  # type: ignore[arg-type]


def test_lock_starts_at_the_threshold_and_doubles_up_to_the_cap() -> None:
    assert [lock_seconds(n, 5, 30, 3600) for n in range(1, 12)] == [
        0, 0, 0, 0, 30, 60, 120, 240, 480, 960, 1920,
    ]  # fmt: skip
    assert lock_seconds(13, 5, 30, 3600) == 3600
    assert lock_seconds(10_000, 5, 30, 3600) == 3600


def test_validation_trims_and_normalises_country() -> None:
    valid = validate(application())
    assert valid.given_name == "Grace"
    assert valid.country == "GB"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"email": "no-at-sign"}, "email"),
        ({"password": "11 chars..."}, "password"),
        ({"password": "x" * 257}, "password"),
        ({"given_name": "  "}, "given_name"),
        ({"postcode": ""}, "address.postcode"),
        ({"country": "GBR"}, "address.country_code"),
    ],
)
def test_bad_applications_name_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        validate(application(**overrides))
    assert refused.value.field == field


def test_a_registration_needs_an_idempotency_key() -> None:
    with pytest.raises(IdempotencyKeyRequired):
        validate(application(request_id=" "))


def test_emails_compare_trimmed_and_casefolded() -> None:
    assert email_key("  Grace@EXAMPLE.org ") == email_key("grace@example.org")


def test_fingerprint_covers_the_details_not_the_password_nor_email_case() -> None:
    base = application()
    assert base.fingerprint() == application(password="another password!").fingerprint()
    assert base.fingerprint() == application(email="GRACE@example.ORG").fingerprint()
    assert base.fingerprint() != application(family_name="Other").fingerprint()


def test_password_never_appears_in_an_applications_repr() -> None:
    assert "correct horse" not in repr(application())


def test_passwords_are_argon2id_over_the_peppered_password() -> None:
    passwords = Passwords(b"p" * 32, CHEAP)
    stored = passwords.hash_now("correct horse battery staple")
    assert stored.startswith("$argon2id$")
    assert passwords.verify_now(stored, "correct horse battery staple")
    assert not passwords.verify_now(stored, "correct horse battery stapler")
    # The same hash under another pepper does not verify: the pepper is part of the secret.
    assert not Passwords(b"q" * 32, CHEAP).verify_now(stored, "correct horse battery staple")
    # No stored hash (unknown account): the dummy is checked and the answer is no.
    assert not passwords.verify_now(None, "correct horse battery staple")


def test_signed_tokens_verify_with_the_public_key_file_and_carry_the_kid(tmp_path: Path) -> None:
    ensure_key_pair(tmp_path, "k1")
    assert (tmp_path / "k1.key").stat().st_mode & 0o077 == 0
    signer = TokenSigner(tmp_path, "k1", 900)
    token = signer.issue("player-1", "session-1", now=1_700_000_000)
    assert jwt.get_unverified_header(token.token)["kid"] == "k1"
    claims = jwt.decode(
        token.token,
        (tmp_path / "k1.pub").read_bytes(),
        algorithms=["EdDSA"],
        audience="casino-edge",
        issuer="casino-identity",
        options={"verify_exp": False},
    )
    assert claims["sub"] == "player-1"
    assert claims["sid"] == "session-1"
    assert claims["exp"] == 1_700_000_900
    assert dataclasses.asdict(token)["expires_at"] == 1_700_000_900
