from __future__ import annotations

import grpc
import pytest
from cryptography import x509

from services.echo.echoes import MAX_MESSAGE_CHARS, echo_command
from services.runtime.devpki import ensure_pki
from services.runtime.errors import Code, DomainError
from services.runtime.identity import service_from_spiffe_id, spiffe_id
from services.runtime.secrets import SecretFileError, read_secret
from services.runtime.status import error_info, rich_status


def test_reason_must_be_upper_snake() -> None:
    with pytest.raises(ValueError, match="UPPER_SNAKE"):
        DomainError("insufficient funds", "x")
    assert DomainError("INSUFFICIENT_FUNDS", "x", {"balance_minor": 5}).metadata == {
        "balance_minor": "5"
    }


def test_rich_status_carries_error_info() -> None:
    status = rich_status(
        grpc.StatusCode.FAILED_PRECONDITION,
        "LIMIT_EXCEEDED",
        "no",
        {"k": "v"},
        domain="compliance.casino.local",
    )

    class _Err(grpc.RpcError):
        def trailing_metadata(self):  # type: ignore[no-untyped-def]
            return (("grpc-status-details-bin", status.SerializeToString()),)

    info = error_info(_Err())
    assert info is not None
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "LIMIT_EXCEEDED",
        "compliance.casino.local",
        {"k": "v"},
    )
    assert status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]


def test_spiffe_ids_map_only_known_services_in_our_trust_domain() -> None:
    assert service_from_spiffe_id(spiffe_id("wallet")) == "wallet"
    assert service_from_spiffe_id("spiffe://casino.local/svc/mallory") is None
    assert service_from_spiffe_id("spiffe://evil.example/svc/wallet") is None


def test_dev_certificates_carry_the_spiffe_id_and_private_keys_are_0600(tmp_path) -> None:
    ensure_pki(tmp_path, ("wallet",))
    cert = x509.load_pem_x509_certificate((tmp_path / "wallet.crt").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [spiffe_id("wallet")]
    assert (tmp_path / "wallet.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "ca.key").stat().st_mode & 0o777 == 0o600


def test_dev_pki_is_kept_while_valid(tmp_path) -> None:
    ensure_pki(tmp_path, ("wallet",))
    before = (tmp_path / "wallet.crt").read_bytes()
    ensure_pki(tmp_path, ("wallet",))
    assert (tmp_path / "wallet.crt").read_bytes() == before


def test_secret_readable_by_others_is_refused(tmp_path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    with pytest.raises(SecretFileError, match="chmod 600"):
        read_secret(secret)
    secret.chmod(0o600)
    assert read_secret(secret) == "s3cret"


def test_only_a_kubernetes_secret_volume_may_be_readable_by_others(tmp_path) -> None:
    # The kubelet's layout: name -> ..data/name, ..data -> a timestamped folder.
    volume = tmp_path / "volume"
    (volume / "..2026_11_27_07_00_00.123").mkdir(parents=True)
    (volume / "..2026_11_27_07_00_00.123" / "pw").write_text("mounted\n")
    (volume / "..2026_11_27_07_00_00.123" / "pw").chmod(0o644)
    (volume / "..data").symlink_to("..2026_11_27_07_00_00.123")
    (volume / "pw").symlink_to("..data/pw")
    assert read_secret(volume / "pw") == "mounted"
    # A link that merely mentions "..data", to a loose file elsewhere, is that file.
    loose = tmp_path / "..data" / "pw"
    loose.parent.mkdir()
    loose.write_text("loose\n")
    loose.chmod(0o644)
    link = tmp_path / "pw"
    link.symlink_to(loose)
    with pytest.raises(SecretFileError, match="readable by group/others"):
        read_secret(link)


def test_echo_rules_refuse_bad_input_by_field() -> None:
    cases = {
        "request_id": ("", "m", 0),
        "message": ("r", "x" * (MAX_MESSAGE_CHARS + 1), 0),
        "delay_ms": ("r", "m", -1),
    }
    for field, args in cases.items():
        with pytest.raises(DomainError) as refused:
            echo_command(*args)
        assert refused.value.metadata["field"] == field
        assert refused.value.code is Code.INVALID_ARGUMENT
    with pytest.raises(DomainError, match="idempotency key"):
        echo_command("", "m")
