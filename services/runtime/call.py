"""What the runtime knows about the RPC being served, for code running inside it.

Set by the server wrapper before a handler runs; read by handlers (the authenticated caller),
by outgoing calls (the remaining deadline) and by logs.
"""

from __future__ import annotations

import contextvars
import ipaddress
import time
from collections.abc import Iterable
from dataclasses import dataclass

from services.runtime.errors import Code, DomainError

# The edge authenticates players (it verifies their access tokens) and names the player in
# this call metadata key; services believe it only from the edge's certificate identity.
PLAYER_METADATA = "x-casino-player-id"
# The client's address as the edge saw it (believed only from the edge), e.g. for counting
# failed logins per address.
CLIENT_ADDRESS_METADATA = "x-casino-client-ip"
# The country the edge located the client in (ISO 3166-1 alpha-2; believed only from the
# edge): where the request comes from, as the platform determined it, not as the client says.
CLIENT_COUNTRY_METADATA = "x-casino-client-country"
# The back-office operator the edge authenticated on its admin listener (their operator token's
# subject), and their roles (comma-separated). Believed only from the edge, and only on ADMIN
# RPCs: the runtime lets the edge call an ADMIN RPC only when it names an operator.
OPERATOR_METADATA = "x-casino-operator-id"
OPERATOR_ROLES_METADATA = "x-casino-operator-roles"
EDGE_IDENTITY = "edge"


def address_scope(address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """The unit a per-address budget or count applies to: an IPv4 address, or an IPv6
    address's /64. One subscriber is given at least a /64 and picks addresses in it at will
    (privacy extensions rotate them): counting single IPv6 addresses would let one client
    spend many budgets. Anything that is not an address counts as written."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return str(address)
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(frozen=True)
class CallInfo:
    service: str  # this service's name, e.g. "wallet"
    method: str  # full gRPC method, e.g. "/casino.wallet.v1.WalletService/PostBet"
    caller: str | None  # authenticated caller identity (service name), None if unknown
    deadline: float | None  # absolute time.monotonic() of the incoming deadline
    # The player the edge authenticated for this call (x-casino-player-id from the edge);
    # None for calls from other services and for the edge's unauthenticated calls.
    player_id: str | None = None
    # The operator the edge authenticated on its admin listener (x-casino-operator-id from the
    # edge) and their roles; None and empty for every other call.
    operator_id: str | None = None
    operator_roles: frozenset[str] = frozenset()

    def time_remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    @property
    def domain(self) -> str:
        """ErrorInfo.domain for errors raised by this service."""
        return f"{self.service}.casino.local"


_current: contextvars.ContextVar[CallInfo | None] = contextvars.ContextVar("call", default=None)


def current_call() -> CallInfo | None:
    return _current.get()


def enter_call(info: CallInfo) -> contextvars.Token[CallInfo | None]:
    return _current.set(info)


def leave_call(token: contextvars.Token[CallInfo | None]) -> None:
    _current.reset(token)


def authenticated_caller() -> str:
    """The caller of the RPC being served, as its certificate names it. Handlers run only
    after the runtime authorised the caller, so inside one it is always known."""
    call = _current.get()
    if call is None or call.caller is None:
        raise RuntimeError("authenticated_caller() used outside an authorised RPC")
    return call.caller


class PlayerMismatch(DomainError):
    """PERMISSION_DENIED: a call through the edge for one player naming another."""

    code = Code.PERMISSION_DENIED

    def __init__(self, player_id: str, rpc: str) -> None:
        super().__init__(
            "PLAYER_MISMATCH",
            "the authenticated player may act only on their own data",
            {"player_id": player_id, "rpc": rpc},
        )


def require_player(player_id: str) -> None:
    """Refuse a call that came through the edge unless it was authenticated as `player_id`.

    Calls from other services pass: they are trusted by their certificate and their
    contract's allowed_callers, and act for whichever player their own logic says. So does an
    operator's call through the edge's admin listener: the back office acts on any player. A
    call from the edge without a player (an unauthenticated class) is refused too: a public
    handler that names a player is only ever a player's own."""
    call = _current.get()
    if call is None or call.caller is None:
        raise RuntimeError("require_player() used outside an authorised RPC")
    if call.caller == EDGE_IDENTITY and call.operator_id is None and call.player_id != player_id:
        raise PlayerMismatch(player_id, call.method)


class OperatorMismatch(DomainError):
    """PERMISSION_DENIED: an operator's call through the edge recording another operator."""

    code = Code.PERMISSION_DENIED

    def __init__(self, operator_id: str, rpc: str) -> None:
        super().__init__(
            "OPERATOR_MISMATCH",
            "an operator may record only themselves as the operator of a change",
            {"operator_id": operator_id, "rpc": rpc},
        )


def require_operator(operator_id: str) -> None:
    """Refuse a call through the edge unless `operator_id` (the operator a request records)
    is the operator the edge authenticated (empty when it authenticated none). Calls from
    services (the back-office service included) pass: they name the operator on their own
    authority.

    The runtime applies this before the handler to every request with a top-level
    `operator_id` field; a handler recording an operator from elsewhere calls it itself."""
    call = _current.get()
    if call is None or call.caller is None:
        raise RuntimeError("require_operator() used outside an authorised RPC")
    if call.caller != EDGE_IDENTITY:
        return
    # Through the edge the recorded operator is the authenticated one, and a player's call
    # (no operator) records none.
    if operator_id != (call.operator_id or ""):
        raise OperatorMismatch(operator_id, call.method)


def from_edge(metadata: Iterable[tuple[str, str | bytes]] | None, key: str) -> str | None:
    """The value the edge put under `key` in the call metadata of the RPC being served (at
    most 64 characters), or None: absent, or the caller is not the edge (anyone else could
    write anything there)."""
    call = _current.get()
    if call is None or call.caller != EDGE_IDENTITY:
        return None
    for name, value in metadata or ():
        if name == key and isinstance(value, str) and value:
            return value[:64]
    return None
