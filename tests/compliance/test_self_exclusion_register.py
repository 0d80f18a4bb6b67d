"""The compliance service's register adapter against the self-exclusion register simulator
run as a real child process on loopback: every answer the register can give, and every way
it can fail, which must come back as UNAVAILABLE (the caller then denies: fail closed)."""

from __future__ import annotations

import datetime as dt
import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.compliance.register import RegisterAnswer, SelfExclusionRegister
from services.runtime.secrets import SecretFileError
from tests.compliance.conftest import Simulator, run_simulator, secret_file

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "sim-key-" + uuid.uuid4().hex

REGISTRY = [
    {
        "firstName": "Ada",
        "lastName": "Excluded",
        "dateOfBirth": "1980-02-29",
        "email": "ada.excluded@example.org",
        "postcode": "SW1A 1AA",
        "mobile": "07700900001",
        "exclusion": "Y",
    },
    {
        "firstName": "Pat",
        "lastName": "Formerly",
        "dateOfBirth": "1975-06-15",
        "email": "pat.formerly@example.org",
        "postcode": "M1 1AE",
        "mobile": "07700900002",
        "exclusion": "P",
    },
    {"email": "only.by.email@example.org", "exclusion": "Y"},
]


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulator]:
    with run_simulator(tmp_path_factory.mktemp("register"), REGISTRY, API_KEY) as sim:
        yield sim


@pytest.fixture(autouse=True)
def healthy(simulator: Simulator) -> Iterator[None]:
    simulator.faults("ok")
    yield
    simulator.faults("ok")


@pytest.fixture
def client(simulator: Simulator) -> SelfExclusionRegister:
    return SelfExclusionRegister(simulator.url, simulator.key_file, timeout=2.0)


async def _check(client: SelfExclusionRegister, **overrides: Any) -> RegisterAnswer:
    person: dict[str, Any] = {
        "given_name": "Nobody",
        "family_name": "Unknown-" + uuid.uuid4().hex[:8],
        "birth_date": dt.date(1990, 1, 1),
        "email": f"{uuid.uuid4().hex[:12]}@example.org",
        "postcode": "EC1A 1BB",
        "mobile": "07700900999",
    }
    return await client.check(**(person | overrides))


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


async def test_excluded_person_is_excluded_with_the_register_request_id(
    client: SelfExclusionRegister, simulator: Simulator
) -> None:
    # Case and postcode spacing differ from the registry entry: still the same person.
    answer = await _check(
        client, family_name="EXCLUDED", birth_date=dt.date(1980, 2, 29), postcode="sw1a1aa"
    )
    assert answer.status == "EXCLUDED"
    assert answer.detail == ""
    assert _is_uuid(answer.request_id)
    assert answer.request_id == simulator.last_request_id()


async def test_unknown_person_is_not_excluded(
    client: SelfExclusionRegister, simulator: Simulator
) -> None:
    answer = await _check(client)
    assert answer.status == "NOT_EXCLUDED"
    assert answer.request_id == simulator.last_request_id()


async def test_same_name_but_other_birth_date_is_not_excluded(
    client: SelfExclusionRegister,
) -> None:
    answer = await _check(
        client, family_name="Excluded", birth_date=dt.date(1980, 3, 1), postcode="SW1A 1AA"
    )
    assert answer.status == "NOT_EXCLUDED"


async def test_previously_excluded_person(client: SelfExclusionRegister) -> None:
    answer = await _check(
        client, family_name="formerly", birth_date=dt.date(1975, 6, 15), postcode="M1 1AE"
    )
    assert answer.status == "PREVIOUSLY_EXCLUDED"
    assert _is_uuid(answer.request_id)


async def test_email_match_excludes_whatever_the_other_details(
    client: SelfExclusionRegister,
) -> None:
    answer = await _check(client, email="Ada.Excluded@Example.ORG")
    assert answer.status == "EXCLUDED"
    answer = await _check(client, email="only.by.email@example.org")
    assert answer.status == "EXCLUDED"


async def test_person_added_at_run_time(
    client: SelfExclusionRegister, simulator: Simulator
) -> None:
    email = f"new-{uuid.uuid4().hex[:8]}@example.org"
    assert (await _check(client, email=email)).status == "NOT_EXCLUDED"
    simulator.admin("/_sim/persons", {"email": email, "exclusion": "Y"})
    assert (await _check(client, email=email)).status == "EXCLUDED"


async def test_wrong_api_key_is_unavailable(simulator: Simulator, tmp_path: Path) -> None:
    wrong = SelfExclusionRegister(simulator.url, secret_file(tmp_path / "wrong.key", "not-the-key"))
    answer = await _check(wrong)
    assert answer.status == "UNAVAILABLE"
    assert answer.detail.startswith("http 403")


async def test_hanging_register_is_unavailable_within_the_timeout(simulator: Simulator) -> None:
    simulator.faults("timeout")
    client = SelfExclusionRegister(simulator.url, simulator.key_file, timeout=0.5)
    answer = await _check(client)
    assert answer.status == "UNAVAILABLE"
    assert answer.detail.startswith("timeout")


async def test_slower_than_the_timeout_is_unavailable(simulator: Simulator) -> None:
    simulator.faults("slow", delay_ms=3000)
    client = SelfExclusionRegister(simulator.url, simulator.key_file, timeout=0.5)
    answer = await _check(client)
    assert answer.status == "UNAVAILABLE"
    assert answer.detail.startswith("timeout")


async def test_caller_timeout_shortens_the_configured_one(
    client: SelfExclusionRegister, simulator: Simulator
) -> None:
    simulator.faults("timeout")
    answer = await _check(client, timeout=0.3)
    assert answer.status == "UNAVAILABLE"
    assert answer.detail.startswith("timeout")


async def test_server_error_is_unavailable(
    client: SelfExclusionRegister, simulator: Simulator
) -> None:
    simulator.faults("error500")
    answer = await _check(client)
    assert answer.status == "UNAVAILABLE"
    assert answer.detail.startswith("http 500")
    # The register's id for the failed check is kept for the verdict log.
    assert answer.request_id == simulator.last_request_id()


@pytest.mark.parametrize("variant", ["not_json", "missing_fields", "bad_exclusion", "truncated"])
async def test_malformed_answer_is_unavailable(
    client: SelfExclusionRegister, simulator: Simulator, variant: str
) -> None:
    simulator.faults("malformed", variant=variant)
    answer = await _check(client)
    assert answer.status == "UNAVAILABLE"
    assert answer.detail.startswith("malformed"), answer.detail


async def test_connection_closed_without_answer_is_unavailable(
    client: SelfExclusionRegister, simulator: Simulator
) -> None:
    simulator.faults("reset")
    answer = await _check(client)
    assert answer.status == "UNAVAILABLE"
    assert answer.detail.startswith("connection"), answer.detail


async def test_register_not_running_is_unavailable(simulator: Simulator) -> None:
    # A bound socket that never listens: connections to its port are refused, and no
    # other process can take the port while the test holds it.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        client = SelfExclusionRegister(f"http://127.0.0.1:{port}", simulator.key_file)
        answer = await _check(client)
    assert answer.status == "UNAVAILABLE"
    assert answer.detail.startswith("unreachable"), answer.detail
    assert answer.request_id == ""


async def test_register_recovers_after_a_fault(
    client: SelfExclusionRegister, simulator: Simulator
) -> None:
    simulator.faults("error500")
    assert (await _check(client)).status == "UNAVAILABLE"
    simulator.faults("ok")
    assert (await _check(client)).status == "NOT_EXCLUDED"


def test_simulator_accepts_json_checks_and_refuses_a_missing_key(simulator: Simulator) -> None:
    body = {
        "firstName": "Ada",
        "lastName": "Excluded",
        "dateOfBirth": "1980-02-29",
        "email": "someone@example.org",
        "postcode": "SW1A 1AA",
        "mobile": "",
    }
    status, headers, answer = simulator.call("POST", "/v2/check", body, {"X-API-Key": API_KEY})
    assert status == 200
    payload = json.loads(answer)
    assert payload["exclusion"] == "Y"
    assert headers["X-Unique-Id"] == payload["requestId"]
    status, _, _ = simulator.call("POST", "/v2/check", body)
    assert status == 403
    status, _, _ = simulator.call("POST", "/v2/check", body, {"X-API-Key": "nope"})
    assert status == 403


def test_key_file_must_exist_and_be_private(tmp_path: Path) -> None:
    with pytest.raises(SecretFileError):
        SelfExclusionRegister("http://127.0.0.1:1", tmp_path / "missing.key")
    shared = tmp_path / "shared.key"
    shared.write_text(API_KEY)
    shared.chmod(0o644)
    with pytest.raises(SecretFileError):
        SelfExclusionRegister("http://127.0.0.1:1", shared)
