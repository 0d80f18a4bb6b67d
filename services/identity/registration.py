"""Registration: who may open an account, and the order of the steps that open it.

Order, so that a failure at any point leaves nothing a retry with the same request_id
cannot finish:
  1. validate (nothing touched);
  2. compliance CheckRegistration: before anything is stored; a denial stores nothing here
     (compliance keeps its verdict);
  3. the player row, as 'pending' (email uniqueness decided here, by the database);
  4. compliance EnrolPlayer, then wallet OpenAccount: both idempotent by player id;
  5. the row becomes 'active': only then can the player log in.
A retry finds the pending row by request_id and resumes at step 4. Same request_id with
different details is refused (IDEMPOTENCY_MISMATCH); the password is not part of that
comparison (it is never kept in a comparable form), so a retry keeps the first password."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from services.identity import store
from services.identity.passwords import Passwords
from services.identity.store import PlayerRecord
from services.runtime.errors import (
    Code,
    DomainError,
    IdempotencyKeyRequired,
    IdempotencyMismatch,
    InvalidArgument,
)

MIN_PASSWORD = 12
MAX_PASSWORD = 256
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")


@dataclass(frozen=True)
class Application:
    request_id: str
    email: str
    # Never in a repr (and so never in a log line or a traceback's locals).
    password: str = field(repr=False)
    given_name: str
    family_name: str
    birth_date: dt.date
    address_line1: str
    address_line2: str
    city: str
    postcode: str
    country: str
    # Where the request came from, as the edge located it ("" when it could not): the
    # compliance check weighs it, a retry from elsewhere is still the same application.
    request_country: str = ""

    def fingerprint(self) -> bytes:
        fields = asdict(self)
        del fields["password"], fields["request_country"]
        fields["email"] = email_key(self.email)
        canonical = json.dumps(fields, sort_keys=True, default=str).encode()
        return hashlib.sha256(canonical).digest()


@dataclass(frozen=True)
class RegistrationVerdict:
    allowed: bool
    reasons: Sequence[str]
    verdict_id: str


class ComplianceChecks(Protocol):
    """The compliance contract as registration needs it (a gRPC client in the service, a
    double in unit tests)."""

    async def check_registration(self, application: Application) -> RegistrationVerdict: ...

    async def enrol(self, player_id: str, application: Application) -> None: ...


class WalletAccounts(Protocol):
    async def open_account(self, player_id: str, currency: str) -> None: ...


class EmailTaken(DomainError):
    code = Code.ALREADY_EXISTS

    def __init__(self) -> None:
        super().__init__("EMAIL_TAKEN", "an account with this email already exists")


class RegistrationDenied(DomainError):
    code = Code.FAILED_PRECONDITION

    def __init__(self, reasons: Sequence[str], verdict_id: str = "") -> None:
        super().__init__(
            "REGISTRATION_DENIED",
            "registration is not possible: " + ", ".join(reasons),
            {"reasons": ",".join(reasons), "verdict_id": verdict_id},
        )
        self.reasons = list(reasons)


def email_key(email: str) -> str:
    """The form emails are compared in: trimmed and casefolded."""
    return email.strip().casefold()


def _text(field: str, value: str, limit: int = 200, *, required: bool = True) -> str:
    value = value.strip()
    if required and not value:
        raise InvalidArgument(field, f"{field} is required")
    if len(value) > limit:
        raise InvalidArgument(field, f"{field} is longer than {limit} characters")
    return value


def validate(application: Application) -> Application:
    """The application with its text trimmed, or InvalidArgument naming the bad field."""
    if not application.request_id.strip():
        raise IdempotencyKeyRequired()
    email = _text("email", application.email, 254)
    if not _EMAIL.match(email):
        raise InvalidArgument("email", "email is not an email address")
    password = application.password
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidArgument(
            "password", f"password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters"
        )
    country = application.country.strip().upper()
    if not _COUNTRY.match(country):
        raise InvalidArgument("address.country_code", "country_code is ISO 3166-1 alpha-2")
    return Application(
        request_id=_text("request_id", application.request_id, 200),
        email=email,
        password=password,
        given_name=_text("given_name", application.given_name, 100),
        family_name=_text("family_name", application.family_name, 100),
        birth_date=application.birth_date,
        address_line1=_text("address.line1", application.address_line1),
        address_line2=_text("address.line2", application.address_line2, required=False),
        city=_text("address.city", application.city, 100),
        postcode=_text("address.postcode", application.postcode, 20),
        country=country,
        request_country=application.request_country,
    )


class Registrar:
    def __init__(
        self,
        engine: AsyncEngine,
        passwords: Passwords,
        compliance: ComplianceChecks,
        wallet: WalletAccounts,
        currencies: Mapping[str, str],
    ) -> None:
        self._engine = engine
        self._passwords = passwords
        self._compliance = compliance
        self._wallet = wallet
        self._currencies = dict(currencies)

    async def register(self, application: Application) -> PlayerRecord:
        application = validate(application)
        fingerprint = application.fingerprint()
        async with self._engine.begin() as conn:
            earlier = await store.by_request_id(conn, application.request_id)
            if earlier is None and await store.by_email_key(conn, email_key(application.email)):
                # Cheap early answer; the unique index below is what guarantees it.
                raise EmailTaken()
        if earlier is not None:
            return await self._resume(earlier, fingerprint)
        currency = self._currencies.get(application.country)
        verdict = await self._compliance.check_registration(application)
        if not verdict.allowed:
            raise RegistrationDenied(verdict.reasons, verdict.verdict_id)
        if currency is None:
            # Compliance allows the country but we hold no currency for it: a configuration
            # gap, refused before anything is stored.
            raise RegistrationDenied(["CURRENCY_NOT_CONFIGURED"], verdict.verdict_id)
        player = PlayerRecord(
            player_id=str(uuid.uuid4()),
            email=application.email,
            email_key=email_key(application.email),
            password_hash=await self._passwords.hash(application.password),
            given_name=application.given_name,
            family_name=application.family_name,
            birth_date=application.birth_date,
            address_line1=application.address_line1,
            address_line2=application.address_line2,
            city=application.city,
            postcode=application.postcode,
            country=application.country,
            currency=currency,
            status="pending",
            request_id=application.request_id,
            fingerprint=fingerprint,
            create_time=dt.datetime.now(dt.UTC),
        )
        async with self._engine.begin() as conn:
            inserted = await store.insert_pending(conn, player)
            if not inserted:
                same_request = await store.by_request_id(conn, application.request_id)
        if not inserted:
            if same_request is None:
                raise EmailTaken()
            # A concurrent duplicate of this very request won the insert.
            return await self._resume(same_request, fingerprint)
        return await self._complete(player, application)

    async def _resume(self, earlier: PlayerRecord, fingerprint: bytes) -> PlayerRecord:
        if earlier.fingerprint != fingerprint:
            raise IdempotencyMismatch(earlier.request_id)
        if earlier.status == "active":
            return earlier
        return await self._complete(earlier, _application_of(earlier))

    async def _complete(self, player: PlayerRecord, application: Application) -> PlayerRecord:
        await self._compliance.enrol(player.player_id, application)
        await self._wallet.open_account(player.player_id, player.currency)
        async with self._engine.begin() as conn:
            await store.activate(conn, player.player_id)
            active = await store.by_id(conn, player.player_id)
        assert active is not None
        return active


def _application_of(player: PlayerRecord) -> Application:
    """What enrolment needs, rebuilt from a stored pending row (no password: not needed)."""
    return Application(
        request_id=player.request_id,
        email=player.email,
        password="",
        given_name=player.given_name,
        family_name=player.family_name,
        birth_date=player.birth_date,
        address_line1=player.address_line1,
        address_line2=player.address_line2,
        city=player.city,
        postcode=player.postcode,
        country=player.country,
    )
