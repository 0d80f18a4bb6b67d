"""A service logs in to RabbitMQ as the platform's user with the password from its file: a
URL carrying a password stops it at start, and a refused login is logged without the
password. Services as processes, the real RabbitMQ."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from casino.wallet.v1 import events_pb2
from casino.wallet.v1 import wallet_pb2 as w
from services.runtime.broker import BrokerUnavailable
from services.runtime.outbox import declare_events_exchange
from services.runtime.process import ServiceProcess
from tests.conftest import TEST_AMQP_URL, Pki, amqp_broker
from tests.support.amqp import connect
from tests.wallet.conftest import WalletClients, eur, new_id, wallet_extra


def _log_text(process: ServiceProcess) -> str:
    return process.log_file.read_text(errors="replace")


def test_a_service_refuses_an_amqp_url_carrying_a_password(
    launch: Callable[..., ServiceProcess],
) -> None:
    password = f"in-the-url-{uuid.uuid4().hex}"
    url = TEST_AMQP_URL.replace("casino@", f"casino:{password}@")
    with pytest.raises(RuntimeError, match="wallet exited"):
        launch("wallet", extra=wallet_extra(relay=True), amqp_url=url)
    (process,) = launch.started  # type: ignore[attr-defined]
    log = _log_text(process)
    assert "amqp.url carries a password" in log and "amqp.password_file" in log
    assert password not in log


async def test_a_refused_login_is_logged_without_the_password(
    launch: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    password = f"not-the-broker-s-{uuid.uuid4().hex}"
    wrong = tmp_path / "amqp-password"
    wrong.write_text(password)
    wrong.chmod(0o600)
    wallet = launch("wallet", extra=wallet_extra(relay=True), amqp_password_file=wrong)
    deadline = time.monotonic() + 15
    while not any(line.get("event") == "outbox relay stalled" for line in wallet.log_lines()):
        assert time.monotonic() < deadline, "the relay never reported the refused login"
        await asyncio.sleep(0.1)
    stalled = next(e for e in wallet.log_lines() if e.get("event") == "outbox relay stalled")
    assert "ACCESS_REFUSED" in stalled["error"]
    # Nowhere in the process's output: not our lines, not the AMQP library's.
    assert password not in _log_text(wallet)
    # A broker that refuses the login does not keep the service from stopping when told.
    assert wallet.terminate(timeout=10) == 0


async def test_a_service_logged_in_with_its_password_file_publishes_its_events(
    launch: Callable[..., ServiceProcess], pki: Pki
) -> None:
    connection = await connect()
    async with connection:
        channel = await connection.channel()
        exchange = await declare_events_exchange(channel)
        queue = await channel.declare_queue(f"test.{new_id('q')}", exclusive=True)
        await queue.bind(exchange, routing_key="wallet.transaction.#")
        wallet = launch("wallet", extra=wallet_extra(relay=True))
        clients = WalletClients(wallet.ports["port"], pki)
        player = new_id("player")
        try:
            await clients.identity.OpenAccount(
                w.OpenAccountRequest(player_id=player, currency_code="EUR")
            )
            await clients.payments.Deposit(
                w.DepositRequest(request_id=new_id("d"), player_id=player, amount=eur(500))
            )
        finally:
            await clients.close()
        async with asyncio.timeout(15):
            async with queue.iterator() as messages:
                async for message in messages:
                    async with message.process():
                        event = events_pb2.TransactionPosted.FromString(message.body)
                        if event.transaction.player_id == player:
                            break
        assert event.transaction.request_id.startswith("d-")


def _amqp_task(task: asyncio.Task[object]) -> bool:
    # Only the AMQP libraries' own tasks: the shared test loop also runs other tests'
    # in-process gRPC servers, which start a task per incoming call at any moment.
    code = getattr(task.get_coro(), "cr_code", None)
    return code is not None and any(
        library in code.co_filename for library in ("/aio_pika/", "/aiormq/")
    )


async def _tasks_left(before: set[asyncio.Task[object]], seconds: float) -> list[object]:
    """The AMQP libraries' tasks started since `before` still running after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        left = [t for t in asyncio.all_tasks() - before if _amqp_task(t)]
        if not left or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("turns", [1, 2, 3, 5, 8])
async def test_a_connect_cancelled_while_the_login_is_refused_leaves_nothing_running(
    tmp_path: Path, turns: int
) -> None:
    # What a service's stop does to its relay while it retries a refused login: the cancel
    # lands somewhere in the attempt (several points of it, by the loop turns before it).
    # A reconnecting task left behind would swallow the loop's final cancellation and retry
    # every 5 s: the process would never exit.
    wrong = tmp_path / "amqp-password"
    wrong.write_text(f"not-the-broker-s-{uuid.uuid4().hex}")
    wrong.chmod(0o600)
    before = asyncio.all_tasks()
    connecting = asyncio.create_task(amqp_broker(wrong).connect())
    for _ in range(turns):
        await asyncio.sleep(0)
    connecting.cancel()
    with pytest.raises((asyncio.CancelledError, BrokerUnavailable)):
        await connecting
    assert await _tasks_left(before, 2.0) == []
