"""Clients of the services under test, over the same mTLS channels services use."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from opentelemetry.trace import TracerProvider

from casino.echo.v1 import echo_pb2_grpc
from services.runtime.client import secure_channel
from services.runtime.config import TLSConfig


@contextlib.asynccontextmanager
async def echo_client(
    port: int, tls: TLSConfig, tracer_provider: TracerProvider | None = None
) -> AsyncIterator[echo_pb2_grpc.EchoServiceStub]:
    # No default timeout: each test states the deadline it means.
    async with secure_channel(
        f"127.0.0.1:{port}", tls, "echo", default_timeout=None, tracer_provider=tracer_provider
    ) as channel:
        yield echo_pb2_grpc.EchoServiceStub(channel)
