"""The admin listener's source allow-list."""

from __future__ import annotations

import pytest

from edge.netrules import SourceRules, parse_address


@pytest.mark.parametrize(
    ("peer", "allowed"),
    [
        ("10.1.2.3", True),
        ("10.1.2.3:51234", True),
        ("192.168.0.9", True),
        ("127.0.0.1", False),
        ("11.0.0.1", False),
        ("::ffff:10.0.0.7", True),  # IPv4-mapped IPv6 is the IPv4 address
        ("[fd00::1]:443", True),
        ("fe80::1", False),
        ("", False),
        ("not-an-address", False),
        (None, False),
    ],
)
def test_only_configured_networks_are_allowed(peer: str | None, allowed: bool) -> None:
    rules = SourceRules(["10.0.0.0/8", "192.168.0.0/24", "fd00::/8"])
    assert rules.allows_request(peer) is allowed


def test_empty_allow_list_allows_everyone() -> None:
    assert SourceRules([]).allows_request("203.0.113.9")


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    rules = SourceRules(["10.0.0.0/8"], trusted_proxies=["172.16.0.0/12"])
    # Straight from the internet: the header is the client's own claim, ignored.
    assert not rules.allows_request("203.0.113.9", "10.0.0.1")
    # Through the load balancer: the rightmost hop it did not write is the client.
    assert rules.allows_request("172.16.0.5", "10.0.0.1")
    assert not rules.allows_request("172.16.0.5", "10.0.0.1, 203.0.113.9")
    # A spoofed allowed address left of the real client does not help.
    assert not rules.allows_request("172.16.0.5", "10.0.0.1, 203.0.113.9, 172.16.0.6")
    assert not rules.allows_request("172.16.0.5", "garbage")


def test_config_typo_is_an_error() -> None:
    with pytest.raises(ValueError):
        SourceRules(["10.0.0.0/33"])


def test_parse_address_forms() -> None:
    assert str(parse_address("[::1]:8080")) == "::1"
    assert str(parse_address("1.2.3.4:80")) == "1.2.3.4"
    assert parse_address("[::1") is None


def test_a_named_source_shares_one_budget_across_its_networks() -> None:
    rules = SourceRules(
        [], sources={"acquirer-a": ["203.0.113.0/28", "2001:db8:a::/48"], "psp-b": ["198.51.100.7"]}
    )
    assert rules.rate_key(parse_address("203.0.113.9")) == "source:acquirer-a"
    assert rules.rate_key(parse_address("2001:db8:a::10")) == "source:acquirer-a"
    assert rules.rate_key(parse_address("198.51.100.7")) == "source:psp-b"
    assert rules.rate_key(parse_address("198.51.100.8")) == "ip:198.51.100.8"
    assert rules.rate_key(None) == "ip:None"


def test_an_ipv6_client_spends_its_64s_budget_and_ipv4_its_addresss() -> None:
    rules = SourceRules([], sources={"acquirer-a": ["2001:db8:a::10/128"]})
    # Addresses rotated within one /64 (privacy extensions, or on purpose) are one client.
    assert rules.rate_key(parse_address("2001:db8:1:2::a")) == "ip:2001:db8:1:2::/64"
    assert rules.rate_key(parse_address("[2001:db8:1:2:ffff:ffff:ffff:ffff]:443")) == (
        "ip:2001:db8:1:2::/64"
    )
    assert rules.rate_key(parse_address("2001:db8:1:3::a")) == "ip:2001:db8:1:3::/64"
    # IPv4, IPv4-mapped IPv6 included, keeps the whole address.
    assert rules.rate_key(parse_address("198.51.100.8")) == "ip:198.51.100.8"
    assert rules.rate_key(parse_address("::ffff:198.51.100.9")) == "ip:198.51.100.9"
    # A named source is matched on the full address first.
    assert rules.rate_key(parse_address("2001:db8:a::10")) == "source:acquirer-a"
    assert rules.rate_key(parse_address("2001:db8:a::11")) == "ip:2001:db8:a::/64"
