"""Where a request comes from, as the edge decides it: a proxy's country header only from a
trusted proxy, else the operator's network table (longest prefix), else unknown; and what
services believe of it (only the edge's word)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from starlette.datastructures import Headers

from edge.geo import GeoConfig, GeoLocator
from services.runtime.call import (
    CLIENT_COUNTRY_METADATA,
    CallInfo,
    enter_call,
    from_edge,
    leave_call,
)
from services.runtime.config import ConfigError

TABLE = {
    "203.0.113.0/24": "GB",
    "203.0.113.128/25": "MT",  # more specific: wins inside it
    "198.51.100.0/24": "US",
    "2001:db8::/32": "IE",
}


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def test_the_network_table_answers_by_longest_prefix() -> None:
    geo = GeoLocator(TABLE)
    none = Headers()
    assert geo.country(_ip("203.0.113.7"), False, none) == "GB"
    assert geo.country(_ip("203.0.113.200"), False, none) == "MT"
    assert geo.country(_ip("198.51.100.1"), False, none) == "US"
    assert geo.country(_ip("2001:db8::1"), False, none) == "IE"
    assert geo.country(_ip("192.0.2.1"), False, none) == ""
    assert geo.country(None, False, none) == ""


def test_a_country_header_is_believed_only_from_a_trusted_proxy() -> None:
    geo = GeoLocator(TABLE, country_header="CF-IPCountry")
    claims_ie = Headers({"cf-ipcountry": "ie"})
    assert geo.country(_ip("198.51.100.1"), True, claims_ie) == "IE"
    # The same header straight from a client: the table decides.
    assert geo.country(_ip("198.51.100.1"), False, claims_ie) == "US"
    # A proxy's "unknown" or garbage: the table decides.
    for value in ("XX", "T1", "GBR", "", "1A"):
        assert geo.country(_ip("203.0.113.7"), True, Headers({"cf-ipcountry": value})) == "GB"


def test_the_table_is_read_from_the_operators_file(tmp_path: Path) -> None:
    table = tmp_path / "networks.csv"
    table.write_text("# network,country\n203.0.113.0/24,gb\n2001:db8::/32,IE\n")
    geo = GeoLocator.from_config(GeoConfig(networks_file=table))
    assert geo.country(_ip("203.0.113.9"), False, Headers()) == "GB"
    assert geo.country(_ip("2001:db8::9"), False, Headers()) == "IE"


@pytest.mark.parametrize(
    "content", ["203.0.113.0/24\n", "not-a-network,GB\n", "203.0.113.0/24,Britain\n"]
)
def test_a_malformed_table_is_refused_at_start(tmp_path: Path, content: str) -> None:
    table = tmp_path / "networks.csv"
    table.write_text(content)
    with pytest.raises(ConfigError):
        GeoLocator.from_config(GeoConfig(networks_file=table))


@pytest.mark.parametrize(("caller", "believed"), [("edge", "MT"), ("games", None), (None, None)])
def test_services_believe_the_country_only_from_the_edge(
    caller: str | None, believed: str | None
) -> None:
    token = enter_call(
        CallInfo("games", "/casino.games.v1.GamesService/StartSession", caller, None)
    )
    try:
        assert from_edge([(CLIENT_COUNTRY_METADATA, "MT")], CLIENT_COUNTRY_METADATA) == believed
    finally:
        leave_call(token)


def test_requiring_a_location_names_known_endpoint_classes() -> None:
    assert GeoLocator.from_config(GeoConfig(required_for=["GAMEPLAY"])).required_for == {"GAMEPLAY"}
    with pytest.raises(ConfigError):
        GeoConfig(required_for=["GAMES"])
