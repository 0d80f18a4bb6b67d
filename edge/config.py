"""The edge's own settings: the [edge] section of its TOML file (the runtime's ServiceConfig
carries the rest: TLS identity, Redis, telemetry and the [upstreams.<name>] it calls).

    [edge]
    max_body_bytes = 65536
    [edge.services]                      # gRPC service -> the upstream that serves it
    "casino.echo.v1.EchoService" = "echo"
    [edge.listeners.public]
    port = 8080
    header_timeout_seconds = 5.0         # a request head is whole within this, else 408
    idle_timeout_seconds = 5.0           # a connection with no request under way is closed
    max_connections = 4096               # held at once (503 past it), and from one address
    max_connections_per_address = 256    # (429 past it); totals must fit ulimit -n
    [edge.listeners.admin]
    port = 8082
    allowed_networks = ["10.0.0.0/8"]
    [edge.deadlines]                     # seconds per endpoint class
    PLAYER_WALLET = 2.0
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from services.runtime.config import ConfigError, ServiceConfig, build

# The three listeners, each with its own port, rules and concurrency budget.
PUBLIC, WEBHOOKS, ADMIN = "public", "webhooks", "admin"
LISTENERS = (PUBLIC, WEBHOOKS, ADMIN)

# Endpoint classes by short name (the proto enum name without ENDPOINT_CLASS_).
ENDPOINT_CLASSES = (
    "PLAYER_WALLET",
    "GAMEPLAY",
    "CATALOG",
    "PAYMENT",
    "PAYMENT_WEBHOOK",
    "ADMIN",
    "AUTH",
)
# Classes whose operations need no access token.
# No player token: AUTH and CATALOG are public; a PSP's webhook is authenticated by its
# signature over the raw body, checked by the payments service.
UNAUTHENTICATED_CLASSES = frozenset({"AUTH", "CATALOG", "PAYMENT_WEBHOOK"})
# Classes whose operations need an operator's token (edge.operators), never a player's: the
# back office, served on the admin listener only.
OPERATOR_CLASSES = frozenset({"ADMIN"})

# Deadline budget per class, seconds: what a client may wait at most for one request.
DEFAULT_DEADLINES = {
    "PLAYER_WALLET": 2.0,
    "GAMEPLAY": 2.0,
    "CATALOG": 1.0,
    "PAYMENT": 10.0,
    "PAYMENT_WEBHOOK": 10.0,
    "ADMIN": 30.0,
    "AUTH": 3.0,
}


@dataclass(frozen=True)
class ListenerConfig:
    host: str = "127.0.0.1"
    # 0 picks a free port (announced in the "edge started" log line).
    port: int = 0
    # Requests served at once on this listener; beyond it a request is refused at once
    # with 503 (never queued), so a flood on one listener cannot take the others' capacity.
    max_in_flight: int = 512
    # Source networks (CIDRs) allowed on this listener; empty: any source. Others get 403
    # before routing. The admin listener must set it (the edge refuses to start otherwise).
    allowed_networks: list[str] = field(default_factory=list)
    # Peers whose X-Forwarded-For is believed (a load balancer in front); the client address
    # is then the rightmost untrusted hop. Empty: the socket peer is the client.
    trusted_proxies: list[str] = field(default_factory=list)
    # Named sources (a payment provider -> its callback networks): on the webhooks listener a
    # PSP's callbacks share one rate-limit budget, whichever of its addresses they come from.
    sources: dict[str, list[str]] = field(default_factory=dict)
    # A request's head (request line and headers) must be whole within this many seconds of
    # its first byte, else 408 HEADER_TIMEOUT and the connection is closed: a client
    # dribbling its head (slowloris) cannot hold a connection for longer (edge.connections).
    header_timeout_seconds: float = 5.0
    # A connection with no request under way (before its first, between kept-alive ones) is
    # closed after this many seconds.
    idle_timeout_seconds: float = 5.0
    # The idle bound of a trusted proxy's connection: keep it above the load balancer's own
    # idle timeout (60 s on common ones), so the edge never closes a connection the balancer
    # is sending a request on at that moment (its client would get a 502).
    proxy_idle_timeout_seconds: float = 75.0
    # A request head (request line and headers) larger than this is refused with 431 and
    # the connection closed (Envoy's default is 60 KiB, nginx's 4 lines of 8 KiB).
    max_head_bytes: int = 32 * 1024
    # Connections held at once, in all and from one client address; past either, a new
    # connection is answered at once (503 / 429 TOO_MANY_CONNECTIONS) and closed unread
    # (edge.connections). The trusted_proxies' own addresses count only to the total. Every
    # listener's max_connections together must fit the process's open-file limit.
    max_connections: int = 4096
    max_connections_per_address: int = 256

    def __post_init__(self) -> None:
        if (
            not min(
                self.header_timeout_seconds,
                self.idle_timeout_seconds,
                self.proxy_idle_timeout_seconds,
            )
            > 0
        ):
            raise ConfigError(
                "edge.listeners: header_timeout_seconds, idle_timeout_seconds and"
                " proxy_idle_timeout_seconds must be > 0"
            )
        if self.max_head_bytes < 1024:
            raise ConfigError("edge.listeners: max_head_bytes must be at least 1024")
        if not 0 < self.max_connections_per_address <= self.max_connections:
            raise ConfigError(
                "edge.listeners: need 0 < max_connections_per_address <= max_connections"
            )
        named = [cidr for cidrs in self.sources.values() for cidr in cidrs]
        for cidr in [*self.allowed_networks, *self.trusted_proxies, *named]:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ConfigError(f"edge.listeners: {cidr!r} is not a network (CIDR)") from None


@dataclass(frozen=True)
class EdgeSettings:
    # Full gRPC service name -> name of the [upstreams.<name>] that serves it. Only RPCs of
    # these services with a google.api.http annotation are routed.
    services: dict[str, str] = field(default_factory=dict)
    listeners: dict[str, ListenerConfig] = field(default_factory=dict)
    # Request bodies larger than this are refused with 400 before anything is called.
    max_body_bytes: int = 64 * 1024
    deadlines: dict[str, float] = field(default_factory=dict)
    # The token verifier's table (edge.auth.TokenVerifierConfig: public_key_dir, issuer,
    # audience, leeway_seconds, reload_seconds).
    auth: dict[str, Any] = field(default_factory=dict)
    # The admin listener's operator tokens (edge.operators.OperatorTokenConfig:
    # public_key_dir, issuer, audience, leeway_seconds, reload_seconds, max_lifetime_seconds,
    # required_roles). Left out: every admin operation is refused.
    operator_auth: dict[str, Any] = field(default_factory=dict)
    # The rate limiter's table (edge.ratelimit.RateLimitConfig).
    ratelimit: dict[str, Any] = field(default_factory=dict)
    # Where clients are (edge.geo.GeoConfig: country_header, networks_file).
    geo: dict[str, Any] = field(default_factory=dict)
    # How often Redis and every upstream are probed for /readyz.
    readiness_interval_seconds: float = 1.0
    readiness_timeout_seconds: float = 1.0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.listeners) - set(LISTENERS))
        if unknown:
            raise ConfigError(f"edge.listeners: unknown listener(s) {unknown}; known {LISTENERS}")
        unknown = sorted(set(self.deadlines) - set(ENDPOINT_CLASSES))
        if unknown:
            raise ConfigError(f"edge.deadlines: unknown endpoint class(es) {unknown}")
        if self.max_body_bytes <= 0:
            raise ConfigError("edge.max_body_bytes must be positive")
        if not self.listener(ADMIN).allowed_networks:
            # An admin listener open to every source is the back office on the internet.
            raise ConfigError(
                "edge.listeners.admin.allowed_networks must name the back-office networks"
            )

    def listener(self, name: str) -> ListenerConfig:
        return self.listeners.get(name, ListenerConfig())

    def deadline(self, endpoint_class: str) -> float:
        return {**DEFAULT_DEADLINES, **self.deadlines}[endpoint_class]


def edge_settings(config: ServiceConfig) -> EdgeSettings:
    settings = build(EdgeSettings, config.domain, "edge", config.config_dir)
    missing = sorted({u for u in settings.services.values() if u not in config.upstreams})
    if missing:
        raise ConfigError(f"edge.services names upstream(s) without [upstreams.*]: {missing}")
    return settings
