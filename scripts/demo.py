"""The platform's main job, driven over its real contracts with real service identities.

Until the money services land this exercises the chassis through the echo example: an
authorised call, an idempotent replay, a relayed call carrying deadline and trace to a
second hop, a paged listing, and a caller the contract does not allow.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import grpc

from casino.echo.v1 import echo_pb2, echo_pb2_grpc
from services.runtime.client import secure_channel
from services.runtime.config import TLSConfig
from services.runtime.status import error_info

ECHO = "127.0.0.1:50100"


def _tls(root: Path, identity: str) -> TLSConfig:
    pki = root / ".dev" / "pki"
    return TLSConfig(pki / "ca.crt", pki / f"{identity}.crt", pki / f"{identity}.key")


async def run(root: Path) -> None:
    key = uuid.uuid4().hex
    async with secure_channel(ECHO, _tls(root, "games"), "echo") as channel:
        echo = echo_pb2_grpc.EchoServiceStub(channel)
        first = await echo.Echo(echo_pb2.EchoRequest(request_id=key, message="hello"), timeout=3)
        print(
            f"\nEcho as games      -> {first.record.name} caller={first.caller} "
            f"deadline_left={first.deadline_remaining_ms}ms trace={first.trace_id}"
        )
        again = await echo.Echo(echo_pb2.EchoRequest(request_id=key, message="hello"), timeout=3)
        print(f"same request_id    -> {again.record.name} replayed={again.replayed}")
        try:
            await echo.Echo(echo_pb2.EchoRequest(request_id=key, message="other"), timeout=3)
        except grpc.aio.AioRpcError as exc:
            print(f"same id, new body  -> {exc.code().name} {error_info(exc).reason}")  # type: ignore[union-attr]
        relay = await echo.RelayEcho(
            echo_pb2.RelayEchoRequest(request_id=uuid.uuid4().hex, message="via relay"), timeout=3
        )
        print(
            f"RelayEcho          -> hop1 deadline_left={relay.deadline_remaining_ms}ms, "
            f"hop2 deadline_left={relay.downstream.deadline_remaining_ms}ms caller="
            f"{relay.downstream.caller}, one trace: {relay.trace_id == relay.downstream.trace_id}"
        )
        page = await echo.ListEchoes(echo_pb2.ListEchoesRequest(page_size=2), timeout=3)
        print(
            f"ListEchoes         -> {[e.name for e in page.echoes]} "
            f"next_page_token={'yes' if page.next_page_token else 'no'}"
        )
    async with secure_channel(ECHO, _tls(root, "wallet"), "echo") as channel:
        try:
            await echo_pb2_grpc.EchoServiceStub(channel).Echo(
                echo_pb2.EchoRequest(request_id=key, message="hello"), timeout=3
            )
        except grpc.aio.AioRpcError as exc:
            info = error_info(exc)
            print(f"Echo as wallet     -> {exc.code().name} {info.reason if info else ''}")
