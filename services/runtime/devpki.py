"""Development PKI: a local CA and one mTLS certificate per service identity.

Run as ``python -m services.runtime.devpki --out .dev/pki``. Existing material is kept while it
is valid for more than a week, so the command is cheap to run before every start. Production
certificates come from cert-manager or SPIRE with the same SPIFFE IDs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.runtime.identity import SERVICE_NAMES, TRUST_DOMAIN, spiffe_id

_VALIDITY = dt.timedelta(days=90)
_RENEW_BEFORE = dt.timedelta(days=7)


@dataclass(frozen=True)
class Authority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def new_authority(common_name: str = "casino dev CA") -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + _VALIDITY * 4)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return Authority(cert, key)


def issue(authority: Authority, service: str) -> tuple[bytes, bytes]:
    """A leaf certificate (PEM) and key (PEM) for one service identity.

    The SPIFFE ID is the identity; the DNS/IP names let clients verify the server by the
    address they dial in development and inside the cluster.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(spiffe_id(service)),
        x509.DNSName(service),
        x509.DNSName(f"{service}.{TRUST_DOMAIN}"),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, service)]))
        .issuer_name(authority.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - dt.timedelta(minutes=5))
        .not_valid_after(_now() + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(authority.key, hashes.SHA256())
    )
    return _pem_cert(cert), _pem_key(key)


def _still_valid(cert_path: Path) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (OSError, ValueError):
        return False
    return cert.not_valid_after_utc - _now() > _RENEW_BEFORE


def ensure_pki(out: Path, services: tuple[str, ...] = SERVICE_NAMES) -> Authority:
    """Create (or reuse) the CA under ``out`` and a certificate per service."""
    ca_cert, ca_key = out / "ca.crt", out / "ca.key"
    if _still_valid(ca_cert) and ca_key.exists():
        authority = Authority(
            x509.load_pem_x509_certificate(ca_cert.read_bytes()),
            serialization.load_pem_private_key(ca_key.read_bytes(), password=None),  # type: ignore[arg-type]
        )
        fresh_ca = False
    else:
        authority = new_authority()
        _write_private(ca_key, _pem_key(authority.key))
        ca_cert.write_bytes(_pem_cert(authority.cert))
        fresh_ca = True
    for service in services:
        crt, key = out / f"{service}.crt", out / f"{service}.key"
        if not fresh_ca and _still_valid(crt) and key.exists():
            continue
        cert_pem, key_pem = issue(authority, service)
        _write_private(key, key_pem)
        crt.write_bytes(cert_pem)
    return authority


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path(".dev/pki"))
    args = parser.parse_args()
    ensure_pki(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
