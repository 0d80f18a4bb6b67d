"""Outgoing gRPC: mutual-TLS channels that verify the upstream's identity, carry the trace
context, and inherit the remaining deadline of the RPC being served."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors
from opentelemetry.trace import TracerProvider

from services.runtime.config import TLSConfig
from services.runtime.interceptors import DeadlinePropagation
from services.runtime.tls import channel_credentials


def secure_channel(
    target: str,
    tls: TLSConfig,
    upstream_service: str,
    *,
    default_timeout: float | None = 5.0,
    tracer_provider: TracerProvider | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """A channel to `target` that only accepts a server holding `upstream_service`'s
    certificate (its DNS SAN is the service name), authenticating as the identity in `tls`."""
    return grpc.aio.secure_channel(
        target,
        channel_credentials(tls),
        options=[
            ("grpc.ssl_target_name_override", upstream_service),
            ("grpc.default_authority", upstream_service),
            ("grpc.keepalive_time_ms", 30_000),
            *options,
        ],
        interceptors=[
            DeadlinePropagation(default_timeout),
            *aio_client_interceptors(tracer_provider=tracer_provider),  # type: ignore[no-untyped-call]
        ],
    )
