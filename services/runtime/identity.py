"""Service identities: the SPIFFE IDs carried in certificates' URI SANs, and their names."""

from __future__ import annotations

TRUST_DOMAIN = "casino.local"
_PREFIX = f"spiffe://{TRUST_DOMAIN}/svc/"

# Every identity that may hold a certificate from the platform CA. A name outside this set
# in an allowed-callers option is a contract error, caught when a server starts.
SERVICE_NAMES: tuple[str, ...] = (
    "wallet",
    "rng",
    "games",
    "compliance",
    "payments",
    "providers",
    "identity",
    "edge",
    "reporting",
    "backoffice",
    "echo",
)


def spiffe_id(service: str) -> str:
    return f"{_PREFIX}{service}"


def service_from_spiffe_id(uri: str) -> str | None:
    """The service name of a SPIFFE ID in our trust domain, or None for anything else."""
    if not uri.startswith(_PREFIX):
        return None
    name = uri[len(_PREFIX) :]
    return name if name in SERVICE_NAMES else None
