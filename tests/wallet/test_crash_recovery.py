"""Crashes at the worst moments: between the commit and the reply, and in the middle of
publishing the outbox. Nothing is lost and nothing is applied twice."""

from __future__ import annotations

import asyncio
import random
import signal

import aio_pika
import grpc
import psycopg
import pytest

from casino.wallet.v1 import events_pb2
from casino.wallet.v1 import wallet_pb2 as w
from services.runtime.outbox import declare_events_exchange
from services.runtime.status import error_info
from tests.conftest import Launcher, Pki
from tests.support.amqp import connect
from tests.wallet.conftest import WalletClients, admin_dsn, eur, new_id, wallet_extra


@pytest.fixture
def launcher(tmp_path, pki: Pki, test_database: str):
    launcher = Launcher(tmp_path, pki, [])
    yield launcher
    for process in launcher.started:
        process.terminate()


async def test_kill_between_commit_and_reply_then_retry_returns_the_original_once(
    launcher, pki
) -> None:
    doomed = launcher("wallet", extra=wallet_extra(failpoints={"wallet.after_commit": "kill"}))
    # Accounts are opened without a posting, so the failpoint does not fire yet.
    clients = WalletClients(doomed.ports["port"], pki)
    player = new_id("player")
    await clients.identity.OpenAccount(w.OpenAccountRequest(player_id=player, currency_code="EUR"))
    deposit = w.DepositRequest(request_id=new_id("psp-tx"), player_id=player, amount=eur(700))
    with pytest.raises(grpc.aio.AioRpcError) as lost:
        await clients.payments.Deposit(deposit)
    assert lost.value.code() == grpc.StatusCode.UNAVAILABLE  # the reply never came
    assert await asyncio.to_thread(doomed.proc.wait, 10) == -signal.SIGKILL
    await clients.close()

    healthy = launcher("wallet", extra=wallet_extra())
    clients = WalletClients(healthy.ports["port"], pki)
    retried = await clients.payments.Deposit(deposit)
    await clients.close()
    assert retried.posting.replayed
    assert retried.posting.balance.posted_minor == 700
    assert retried.posting.transaction.sequence == 1
    with psycopg.connect(admin_dsn()) as conn:
        entries = conn.execute(
            "SELECT count(*) FROM wallet.entries WHERE player_id = %s AND leg = 0", [player]
        ).fetchone()
        outbox = conn.execute(
            "SELECT count(*) FROM wallet.outbox WHERE shard_key = %s", [player]
        ).fetchone()
    assert entries == (1,)
    assert outbox == (1,)


async def _consume_into(queue: aio_pika.abc.AbstractQueue, seen: list[str]) -> None:
    async with queue.iterator() as messages:
        async for message in messages:
            async with message.process():
                assert message.type == "casino.wallet.v1.TransactionPosted"
                event = events_pb2.TransactionPosted.FromString(message.body)
                assert message.message_id == event.event_id
                seen.append(event.event_id)


async def test_every_committed_posting_reaches_a_consumer_with_the_relay_killed_mid_batch(
    launcher, pki
) -> None:
    connection = await connect()
    channel = await connection.channel()
    exchange = await declare_events_exchange(channel)
    queue = await channel.declare_queue(f"test.{new_id('q')}", exclusive=True)
    await queue.bind(exchange, routing_key="wallet.transaction.#")
    seen: list[str] = []
    consumer = asyncio.create_task(_consume_into(queue, seen))

    # Postings made while no relay runs: they wait in the outbox.
    writer = launcher("wallet", extra=wallet_extra(relay=False))
    clients = WalletClients(writer.ports["port"], pki)
    players = [new_id("player") for _ in range(20)]
    for p in players:
        await clients.identity.OpenAccount(w.OpenAccountRequest(player_id=p, currency_code="EUR"))
    gate = asyncio.Semaphore(16)

    async def deposit(p: str, amount: int) -> None:
        async with gate:
            await clients.payments.Deposit(
                w.DepositRequest(request_id=new_id("d"), player_id=p, amount=eur(amount))
            )

    await asyncio.gather(*(deposit(p, 10 + i) for p in players for i in range(60)))
    await clients.close()
    with psycopg.connect(admin_dsn()) as conn:
        expected = {
            str(event_id)
            for (event_id,) in conn.execute(
                "SELECT event_id FROM wallet.outbox WHERE shard_key = ANY(%s)", [players]
            )
        }
    assert len(expected) == 1200

    # Relays started and SIGKILLed at random moments until the outbox is drained. Batches of
    # ten: the drain takes long enough for the kills to land mid-way, however fast a relay
    # publishes a full batch on this machine.
    rng = random.Random(7)
    kills = 0
    while True:
        relay = launcher(
            "wallet", extra=wallet_extra(relay=True, wallet="outbox_batch_size = 10\n")
        )
        await asyncio.sleep(rng.uniform(0.05, 0.4))
        with psycopg.connect(admin_dsn()) as conn:
            (left,) = conn.execute(
                "SELECT count(*) FROM wallet.outbox WHERE shard_key = ANY(%s)"
                " AND publish_time IS NULL",
                [players],
            ).fetchone()
        if left == 0 or kills >= 8:
            break
        relay.proc.send_signal(signal.SIGKILL)
        relay.proc.wait()
        kills += 1

    for _ in range(200):
        if expected <= set(seen):
            break
        await asyncio.sleep(0.1)
    consumer.cancel()
    await connection.close()
    assert kills >= 1, "the relay was never killed mid-way"
    missing = expected - set(seen)
    assert not missing, f"{len(missing)} committed postings never reached the consumer"
    assert len(seen) >= len(expected)  # duplicates allowed (at least once), losses not


async def test_wallet_keeps_posting_and_serving_with_redis_down(launcher, pki) -> None:
    from grpc_health.v1 import health_pb2

    from tests.support.tcp_proxy import TcpProxy

    redis = TcpProxy("127.0.0.1", 6379)
    redis.start()
    extra = wallet_extra().replace("127.0.0.1:6379", f"127.0.0.1:{redis.port}")
    wallet = launcher("wallet", extra=extra)
    clients = WalletClients(wallet.ports["port"], pki)
    try:
        player = new_id("player")
        await clients.identity.OpenAccount(
            w.OpenAccountRequest(player_id=player, currency_code="EUR")
        )
        redis.cut()
        posted = await clients.payments.Deposit(
            w.DepositRequest(request_id=new_id("d"), player_id=player, amount=eur(500))
        )
        assert posted.posting.balance.posted_minor == 500
        # A display read that accepts the cache falls back to the database.
        shown = await clients.edge.GetBalance(
            w.GetBalanceRequest(player_id=player, currency_code="EUR", allow_cached=True)
        )
        assert (shown.balance.posted_minor, shown.balance.cached) == (500, False)
        await wallet.wait_health(health_pb2.HealthCheckResponse.SERVING, timeout=5)
        assert any(line.get("event") == "balance cache write failed" for line in wallet.log_lines())
    finally:
        await clients.close()
        redis.close()


async def test_database_lost_mid_service_answers_unavailable_and_the_retry_posts_once(
    launcher, pki
) -> None:
    # Every pooled connection dies with the database's network; the first retry after it
    # is back must find a live one, and the key keeps it to one posting.
    from tests.support.tcp_proxy import TcpProxy

    database = TcpProxy("127.0.0.1", 5432)
    database.start()
    wallet = launcher("wallet", extra=wallet_extra(), db_port=database.port)
    clients = WalletClients(wallet.ports["port"], pki)
    try:
        player = new_id("player")
        await clients.identity.OpenAccount(
            w.OpenAccountRequest(player_id=player, currency_code="EUR")
        )
        for _ in range(8):
            await clients.payments.Deposit(
                w.DepositRequest(request_id=new_id("d"), player_id=player, amount=eur(100))
            )
        # Reads at once open several pooled connections: they all die with the cut.
        read = w.GetBalanceRequest(player_id=player, currency_code="EUR")
        await asyncio.gather(*(clients.edge.GetBalance(read) for _ in range(16)))
        assert _connections_through(database.port) >= 2
        database.cut()
        deposit = w.DepositRequest(request_id=new_id("d"), player_id=player, amount=eur(500))
        with pytest.raises(grpc.aio.AioRpcError) as lost:
            await clients.payments.Deposit(deposit)
        assert lost.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_info(lost.value).reason == "DEPENDENCY_UNAVAILABLE"
        database.start()
        posted = await clients.payments.Deposit(deposit)
        assert not posted.posting.replayed
        again = await clients.payments.Deposit(deposit)
        assert again.posting.replayed and again.posting.balance.posted_minor == 1300
        with psycopg.connect(admin_dsn()) as conn:
            (count,) = conn.execute(
                "SELECT count(*) FROM wallet.transactions WHERE player_id = %s AND request_id = %s",
                (player, deposit.request_id),
            ).fetchone()
        assert count == 1
    finally:
        await clients.close()
        database.close()


def _connections_through(port: int) -> int:
    """The wallet's database sessions that came through the proxy (its client port)."""
    with psycopg.connect(admin_dsn()) as conn:
        (count,) = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'casino_wallet'"
            " AND client_port IS NOT NULL AND backend_type = 'client backend'"
        ).fetchone()
    return int(count)
