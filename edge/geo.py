"""Where a request comes from, as the platform determines it: the geo checks (jurisdiction,
the countries a licence covers) must not rest on the client's own word.

Two sources, in order:
- a country header set by the CDN or load balancer in front (`country_header`, e.g.
  Cloudflare's CF-IPCountry), believed only when the request reached the edge through one of
  the listener's trusted proxies (anyone else could send the header);
- the operator's table of networks (`networks_file`: CSV lines `network,country`, e.g. an
  export of a geo-IP database), longest prefix first, for the client address.
Neither: unknown (""); requests of the classes in `required_for` are then refused with 403
LOCATION_UNKNOWN, others go on and services fall back to what the client stated. The country goes
upstream in call metadata `x-casino-client-country`, which services believe only from the
edge's certificate identity.
"""

from __future__ import annotations

import csv
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from starlette.datastructures import Headers

from edge.netrules import Address
from edge.ratelimit import ENDPOINT_CLASSES
from services.runtime.config import ConfigError

_COUNTRY = re.compile(r"^[A-Z]{2}$")
# Codes that name no country (Cloudflare: XX unknown, T1 Tor).
_NOT_A_COUNTRY = frozenset({"XX", "T1", "ZZ"})


@dataclass(frozen=True)
class GeoConfig:
    country_header: str = ""
    networks_file: Path | None = None
    # Endpoint classes refused (403 LOCATION_UNKNOWN) for a client neither source places,
    # e.g. ["GAMEPLAY", "PAYMENT"] where the licence requires geolocation. Empty: such a
    # request goes on, and services fall back to the country the client states.
    required_for: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.required_for) - set(ENDPOINT_CLASSES))
        if unknown:
            raise ConfigError(f"edge.geo.required_for: unknown endpoint class(es) {unknown}")


class GeoLocator:
    def __init__(
        self,
        networks: dict[str, str],
        country_header: str = "",
        required_for: frozenset[str] = frozenset(),
    ) -> None:
        """`networks`: CIDR -> ISO 3166-1 alpha-2 country."""
        self._header = country_header.lower()
        self.required_for = required_for
        # Per IP version and prefix length, network address -> country: a lookup is one
        # dict probe per prefix length present, longest first.
        self._tables: dict[int, list[tuple[int, dict[int, str]]]] = {4: [], 6: []}
        by_prefix: dict[tuple[int, int], dict[int, str]] = {}
        for cidr, country in networks.items():
            try:
                network = ipaddress.ip_network(cidr.strip(), strict=False)
            except ValueError:
                raise ConfigError(f"edge.geo: {cidr!r} is not a network (CIDR)") from None
            code = country.strip().upper()
            if not _COUNTRY.match(code):
                raise ConfigError(f"edge.geo: {country!r} for {cidr} is not a country code")
            key = (network.version, network.prefixlen)
            by_prefix.setdefault(key, {})[int(network.network_address)] = code
        for (version, prefix), table in sorted(by_prefix.items(), key=lambda kv: -kv[0][1]):
            self._tables[version].append((prefix, table))

    @classmethod
    def from_config(cls, config: GeoConfig) -> GeoLocator:
        networks: dict[str, str] = {}
        if config.networks_file is not None:
            try:
                with config.networks_file.open(newline="") as f:
                    for row in csv.reader(f):
                        if row and not row[0].lstrip().startswith("#"):
                            if len(row) != 2:
                                raise ConfigError(
                                    f"edge.geo: {config.networks_file}: expected"
                                    f" 'network,country', got {row!r}"
                                )
                            networks[row[0]] = row[1]
            except OSError as exc:
                raise ConfigError(f"edge.geo: cannot read {config.networks_file}: {exc}") from None
        return cls(networks, config.country_header, frozenset(config.required_for))

    def country(self, client: Address | None, via_trusted_proxy: bool, headers: Headers) -> str:
        """The client's country, or "" when neither source knows."""
        if self._header and via_trusted_proxy:
            stated = headers.get(self._header, "").strip().upper()
            if _COUNTRY.match(stated) and stated not in _NOT_A_COUNTRY:
                return stated
        if client is None:
            return ""
        width = 32 if client.version == 4 else 128
        address = int(client)
        for prefix, table in self._tables[client.version]:
            found = table.get(address >> (width - prefix) << (width - prefix))
            if found is not None:
                return found
        return ""
