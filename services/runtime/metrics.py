"""Prometheus metrics every service exposes, named as go-grpc-prometheus names them so the
usual dashboards and alert rules apply unchanged."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

# Latency buckets tuned for the money path: most answers are single-digit milliseconds, and
# an SLO of 10 ms at P99 needs resolution below it.
_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

RPC_STARTED = Counter(
    "grpc_server_started_total",
    "RPCs started on the server.",
    ["grpc_service", "grpc_method"],
)
RPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
RPC_LATENCY = Histogram(
    "grpc_server_handling_seconds",
    "Time from the start of an RPC to its answer.",
    ["grpc_service", "grpc_method"],
    buckets=_BUCKETS,
)
CALLER_DENIED = Counter(
    "casino_rpc_caller_denied_total",
    "Calls refused because the caller identity is not allowed for the RPC.",
    ["grpc_service", "grpc_method", "caller"],
)
DEPENDENCY_UP = Gauge(
    "casino_dependency_up",
    "1 when the dependency answered its last readiness probe.",
    ["dependency"],
)
SERVING = Gauge("casino_service_serving", "1 while the service reports SERVING.")


def serve_metrics(host: str, port: int) -> int:
    """Start the /metrics HTTP listener in a daemon thread; returns the bound port."""
    server, _thread = start_http_server(port, addr=host)
    return int(server.server_port)
