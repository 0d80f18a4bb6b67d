"""Which source addresses a listener serves: the admin listener's network allow-list.

The client address is the TCP peer, unless the peer is a trusted proxy (a load balancer in
front of the edge): then it is the rightmost X-Forwarded-For hop that is not itself a
trusted proxy, because every hop left of a trusted one could have been written by the
client. Anything unparsable is treated as not allowed (fail closed).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from services.runtime.call import address_scope

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    # strict=False: "10.1.2.3/8" means 10.0.0.0/8; a typo that is not a network raises.
    return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs)


def parse_address(text: str | None) -> Address | None:
    """An IP address from a peer or header value ("[::1]:443", "1.2.3.4", ...), IPv4-mapped
    IPv6 addresses as IPv4; None when it is not one."""
    if not text:
        return None
    text = text.strip()
    if text.startswith("["):  # [v6]:port
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class SourceRules:
    def __init__(
        self,
        allowed_networks: Iterable[str],
        trusted_proxies: Iterable[str] = (),
        sources: dict[str, list[str]] | None = None,
    ):
        """`allowed_networks` empty: every source is allowed (the public listener).
        `sources` names networks (a PSP -> its callback networks)."""
        self.allowed = _networks(allowed_networks)
        self.trusted_proxies = _networks(trusted_proxies)
        self.sources = {name: _networks(cidrs) for name, cidrs in (sources or {}).items()}

    @staticmethod
    def _within(address: Address, networks: tuple[Network, ...]) -> bool:
        return any(address.version == n.version and address in n for n in networks)

    def client_address(self, peer: str | None, forwarded_for: str | None = None) -> Address | None:
        """The client's address for a request from `peer` carrying `forwarded_for`."""
        address = parse_address(peer)
        if address is None or not self._within(address, self.trusted_proxies):
            return address
        hops = [h for h in (forwarded_for or "").split(",") if h.strip()]
        for hop in reversed(hops):
            hop_address = parse_address(hop)
            if hop_address is None:
                return None  # a trusted proxy wrote garbage: refuse rather than guess
            if not self._within(hop_address, self.trusted_proxies):
                return hop_address
        return address  # only proxies: the request started at one of them

    def through_trusted_proxy(self, peer: str | None) -> bool:
        """Did the request reach the edge through one of the trusted proxies (whose headers
        about the client are believed)?"""
        address = parse_address(peer)
        return address is not None and self._within(address, self.trusted_proxies)

    def rate_key(self, address: Address | None) -> str:
        """Whose budget a request without a player spends: its named source's, else its
        address's (an IPv6 address's /64: see `address_scope`)."""
        if address is not None:
            for name, networks in self.sources.items():
                if self._within(address, networks):
                    return f"source:{name}"
            return f"ip:{address_scope(address)}"
        return f"ip:{address}"

    def allows(self, address: Address | None) -> bool:
        if not self.allowed:
            return True
        return address is not None and self._within(address, self.allowed)

    def allows_request(self, peer: str | None, forwarded_for: str | None = None) -> bool:
        return self.allows(self.client_address(peer, forwarded_for))
