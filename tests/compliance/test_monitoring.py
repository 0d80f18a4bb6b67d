"""AML monitoring end to end: real TransactionPosted events published to casino.events on
the real RabbitMQ, consumed by the compliance service into the real PostgreSQL, and their
effects observed through the service's RPCs."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aio_pika
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from casino.common.v1.money_pb2 import Money
from casino.compliance.v1 import compliance_pb2 as pb
from casino.wallet.v1 import events_pb2, wallet_pb2, wallet_pb2_grpc
from services.runtime.client import secure_channel
from services.runtime.outbox import declare_events_exchange
from services.runtime.process import ServiceProcess
from tests.compliance.conftest import Simulator, compliance_extra, open_stubs
from tests.compliance.test_compliance_service import verified_player
from tests.conftest import Launcher, Pki
from tests.support.amqp import connect, delete_queues, delete_queues_now
from tests.wallet.conftest import wallet_extra

ALLOW, DENY = pb.DECISION_ALLOW, pb.DECISION_DENY
T = TypeVar("T")


# A jurisdiction whose CDD threshold is not the default's: monitoring must trip at it.
LOW_CDD_JURISDICTION = """
[compliance.jurisdictions.MT]
currency = "EUR"
cdd_threshold_eur_minor = 100_000
"""


def monitoring_extra(register: Simulator, folder: Path, queue: str, *, on: bool = True) -> str:
    return compliance_extra(
        register,
        folder,
        monitoring=on,
        settings=f'monitoring_queue = "{queue}"',
        tables=LOW_CDD_JURISDICTION,
    )


async def eventually(probe: Callable[[], Awaitable[T | None]], timeout: float = 15.0) -> T:
    """Poll until `probe` returns something (not None/False), or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {probe}")
        await asyncio.sleep(0.1)


class Wallet:
    """Publishes TransactionPosted events as the wallet's outbox relay does."""

    def __init__(self, exchange: aio_pika.abc.AbstractExchange) -> None:
        self._exchange = exchange

    async def publish(
        self,
        player_id: str,
        kind: str,
        amount_minor: int = 0,
        currency: str = "EUR",
        *,
        event_id: str | None = None,
        reserved_delta: int = 0,
        instrument: str = "",
        withdrawal_id: str = "",
        at: dt.datetime | None = None,
        message_type: str = "casino.wallet.v1.TransactionPosted",
        body: bytes | None = None,
    ) -> str:
        event_id = event_id or str(uuid.uuid4())
        created = Timestamp()
        created.FromDatetime(at or dt.datetime.now(dt.UTC))
        tx = wallet_pb2.Transaction(
            request_id=uuid.uuid4().hex,
            player_id=player_id,
            kind=wallet_pb2.TransactionKind.Value(f"TRANSACTION_KIND_{kind}"),
            amount=Money(amount_minor=amount_minor, currency_code=currency),
            reserved_delta_minor=reserved_delta,
            withdrawal_id=withdrawal_id,
            payment_instrument=instrument,
            create_time=created,
        )
        payload = (
            body
            or events_pb2.TransactionPosted(event_id=event_id, transaction=tx).SerializeToString()
        )
        await self._exchange.publish(
            aio_pika.Message(
                body=payload,
                message_id=event_id,
                type=message_type,
                content_type="application/x-protobuf",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=f"wallet.transaction.{kind.lower()}",
            mandatory=True,
        )
        return event_id


@pytest.fixture
async def wallet_events() -> AsyncIterator[Wallet]:
    connection = await connect()
    channel = await connection.channel(publisher_confirms=True)
    yield Wallet(await declare_events_exchange(channel))
    await connection.close()


def metric(process: ServiceProcess, outcome: str) -> float:
    text = urllib.request.urlopen(
        f"http://127.0.0.1:{process.ports['metrics_port']}/metrics"
    ).read()
    for line in text.decode().splitlines():
        if line.startswith(f'casino_events_consumed_total{{outcome="{outcome}",'):
            return float(line.split()[-1])
    return 0.0


async def check(stubs: dict[str, Any], player_id: str, action: int, amount: int = 0) -> pb.Verdict:
    reply = await stubs["games"].CheckAction(
        pb.CheckActionRequest(
            player_id=player_id,
            action=action,
            amount=Money(amount_minor=amount, currency_code="GBP"),
            product=pb.PRODUCT_TABLE,
            request_country_code="GB",
            request_id=uuid.uuid4().hex,
        )
    )
    return reply.verdict


def reasons(verdict: pb.Verdict) -> set[str]:
    return {r.reason for r in verdict.reasons}


async def alert_of(stubs: dict[str, Any], player_id: str, rule: str) -> pb.AmlAlert | None:
    reply = await stubs["backoffice"].ListAmlAlerts(pb.ListAmlAlertsRequest(player_id=player_id))
    return next((a for a in reply.alerts if a.rule == rule), None)


def evidence(alert: pb.AmlAlert) -> list[dict[str, Any]]:
    return list(json.loads(alert.evidence_json)["findings"])


@pytest.fixture(scope="class")
def monitored(
    tmp_path_factory: pytest.TempPathFactory,
    pki: Pki,
    test_database: str,
    register: Simulator,
) -> Iterator[ServiceProcess]:
    folder = tmp_path_factory.mktemp("monitored")
    queue = f"test.compliance.monitoring.{uuid.uuid4().hex[:8]}"
    process = Launcher(folder, pki, [])(
        "compliance", extra=monitoring_extra(register, folder, queue)
    )
    yield process
    process.terminate()
    delete_queues_now(queue, f"{queue}.dead")


@pytest.fixture
async def monitored_stubs(monitored: ServiceProcess, pki: Pki) -> AsyncIterator[dict[str, Any]]:
    channels, stubs = open_stubs(monitored, pki)
    yield stubs
    for channel in channels:
        await channel.close()


class TestWithTheConsumerRunning:
    """One monitored compliance service (its own queue, deleted afterwards) for the class."""

    @pytest.fixture
    def stubs(self, monitored_stubs: dict[str, Any]) -> dict[str, Any]:
        return monitored_stubs

    async def test_linked_gbp_deposits_reaching_eur_2000_set_the_cdd_gate(
        self, stubs, wallet_events
    ) -> None:
        player = await verified_player(stubs)
        assert (await check(stubs, player, pb.ACTION_GAME_LAUNCH)).decision == ALLOW
        # GBP 1,000 = EUR 1,170 and GBP 800 = EUR 936: linked, EUR 2,106.
        first = await wallet_events.publish(player, "DEPOSIT", 100_000, "GBP")
        second = await wallet_events.publish(player, "DEPOSIT", 80_000, "GBP")

        async def gated() -> pb.Verdict | None:
            verdict = await check(stubs, player, pb.ACTION_GAME_LAUNCH)
            return verdict if "CDD_REQUIRED" in reasons(verdict) else None

        assert (await eventually(gated)).decision == DENY
        alert = await alert_of(stubs, player, "AML_CDD_THRESHOLD")
        assert alert is not None and alert.action == "REQUIRE_CDD"
        (finding,) = evidence(alert)
        assert finding["event_ids"] == [first, second]
        assert finding["amounts_eur_minor"] == [117_000, 93_600]
        assert finding["threshold_eur_minor"] == 200_000
        # Due diligence recorded: the gate clears, the checks allow again.
        await stubs["backoffice"].UpdateVerification(
            pb.UpdateVerificationRequest(
                player_id=player, cdd_cleared=True, verified_by="officer-1"
            )
        )
        assert (await check(stubs, player, pb.ACTION_GAME_LAUNCH)).decision == ALLOW

    async def test_monitoring_trips_cdd_at_the_players_jurisdictions_threshold(
        self, stubs, wallet_events
    ) -> None:
        """The gate and monitoring apply one threshold per jurisdiction: EUR 1,200 is under
        the default EUR 2,000 but over this Maltese player's configured EUR 1,000."""
        player = await verified_player(stubs, country_code="MT")
        deposit = await wallet_events.publish(player, "DEPOSIT", 120_000, "EUR")

        async def gated() -> pb.Verdict | None:
            reply = await stubs["games"].CheckAction(
                pb.CheckActionRequest(
                    player_id=player,
                    action=pb.ACTION_GAME_LAUNCH,
                    product=pb.PRODUCT_TABLE,
                    request_country_code="MT",
                    request_id=uuid.uuid4().hex,
                )
            )
            return reply.verdict if "CDD_REQUIRED" in reasons(reply.verdict) else None

        assert (await eventually(gated)).decision == DENY
        alert = await alert_of(stubs, player, "AML_CDD_THRESHOLD")
        assert alert is not None
        (finding,) = evidence(alert)
        assert finding["event_ids"] == [deposit]
        assert finding["threshold_eur_minor"] == 100_000

    async def test_after_cdd_is_cleared_only_activity_since_the_clearance_trips_it_again(
        self, stubs: dict[str, Any], monitored: ServiceProcess, wallet_events: Wallet
    ) -> None:
        player = await verified_player(stubs)
        await wallet_events.publish(player, "DEPOSIT", 100_000, "GBP")
        await wallet_events.publish(player, "DEPOSIT", 80_000, "GBP")

        async def gated() -> bool:
            return "CDD_REQUIRED" in reasons(await check(stubs, player, pb.ACTION_GAME_LAUNCH))

        await eventually(gated)
        await stubs["backoffice"].UpdateVerification(
            pb.UpdateVerificationRequest(
                player_id=player, cdd_cleared=True, verified_by="officer-1"
            )
        )
        # GBP 900 (EUR 1,053) since the clearance: under the threshold, no gate.
        processed = metric(monitored, "processed")
        third = await wallet_events.publish(player, "DEPOSIT", 90_000, "GBP")
        await eventually(lambda: _true(metric(monitored, "processed") > processed))
        assert (await check(stubs, player, pb.ACTION_GAME_LAUNCH)).decision == ALLOW
        # GBP 1,800 (EUR 2,106) since the clearance, in the same 24 h: gated again, linking
        # only what came after the clearance.
        fourth = await wallet_events.publish(player, "DEPOSIT", 90_000, "GBP")
        await eventually(gated)
        alert = await alert_of(stubs, player, "AML_CDD_THRESHOLD")
        assert alert is not None
        first_finding, again = evidence(alert)
        assert len(first_finding["event_ids"]) == 2
        assert again["event_ids"] == [third, fourth]
        assert again["total_eur_minor"] == 210_600 and again["cdd_cleared_at"]

    async def test_linked_deposits_applied_out_of_order_still_require_cdd_once(
        self, stubs: dict[str, Any], monitored: ServiceProcess, wallet_events: Wallet
    ) -> None:
        # EUR 800 three times within two hours, applied A, C, B (by event time): B's message
        # was requeued after a transient failure and ran after C.
        player = await verified_player(stubs)
        now = dt.datetime.now(dt.UTC)
        processed = metric(monitored, "processed")
        a = await wallet_events.publish(player, "DEPOSIT", 80_000, at=now - dt.timedelta(hours=2))
        c = await wallet_events.publish(player, "DEPOSIT", 80_000, at=now)
        await eventually(lambda: _true(metric(monitored, "processed") >= processed + 2))
        assert await alert_of(stubs, player, "AML_CDD_THRESHOLD") is None
        b = await wallet_events.publish(player, "DEPOSIT", 80_000, at=now - dt.timedelta(hours=1))

        async def gated() -> bool:
            return "CDD_REQUIRED" in reasons(await check(stubs, player, pb.ACTION_GAME_LAUNCH))

        await eventually(gated)
        alert = await alert_of(stubs, player, "AML_CDD_THRESHOLD")
        assert alert is not None
        (finding,) = evidence(alert)
        assert finding["event_ids"] == [a, b, c] and finding["total_eur_minor"] == 240_000
        assert (finding["trigger_event_id"], finding["crossing_event_id"]) == (b, c)
        # Another late deposit inside the same window is no new pattern: nothing is added.
        processed = metric(monitored, "processed")
        await wallet_events.publish(player, "DEPOSIT", 10_000, at=now - dt.timedelta(minutes=90))
        await eventually(lambda: _true(metric(monitored, "processed") > processed))
        again = await alert_of(stubs, player, "AML_CDD_THRESHOLD")
        assert again is not None and len(evidence(again)) == 1

    async def test_stakes_reaching_the_threshold_also_require_cdd(
        self, stubs, wallet_events
    ) -> None:
        player = await verified_player(stubs)
        await wallet_events.publish(player, "BET", -120_000)
        await wallet_events.publish(player, "BET", -80_000)
        alert = await eventually(lambda: alert_of(stubs, player, "AML_CDD_THRESHOLD"))
        assert evidence(alert)[0]["flow"] == "stakes"
        assert "CDD_REQUIRED" in reasons(await check(stubs, player, pb.ACTION_BET, 100))

    async def test_structuring_raises_one_alert_that_collects_evidence(
        self, stubs, wallet_events
    ) -> None:
        player = await verified_player(stubs)
        ids = [await wallet_events.publish(player, "DEPOSIT", 190_000) for _ in range(3)]
        alert = await eventually(lambda: alert_of(stubs, player, "AML_STRUCTURING"))
        assert alert.status == pb.AML_ALERT_STATUS_OPEN and alert.action == "ALERT"
        assert evidence(alert)[0]["event_ids"] == ids
        fourth = await wallet_events.publish(player, "DEPOSIT", 185_000)

        async def grown() -> pb.AmlAlert | None:
            again = await alert_of(stubs, player, "AML_STRUCTURING")
            return again if again and len(evidence(again)) == 2 else None

        again = await eventually(grown)
        assert again.name == alert.name  # the same case, not a second one
        assert evidence(again)[1]["trigger_event_id"] == fourth

    async def test_withdrawal_with_little_play_is_flagged(self, stubs, wallet_events) -> None:
        player = await verified_player(stubs)
        deposit = await wallet_events.publish(player, "DEPOSIT", 60_000)
        await wallet_events.publish(player, "BET", -10_000)
        await wallet_events.publish(
            player, "WITHDRAWAL_RESERVE", 0, reserved_delta=50_000, withdrawal_id="wd-1"
        )
        alert = await eventually(lambda: alert_of(stubs, player, "AML_LOW_TURNOVER"))
        (finding,) = evidence(alert)
        assert finding["deposit_event_ids"] == [deposit]
        assert (finding["deposits_eur_minor"], finding["stakes_eur_minor"]) == (60_000, 10_000)
        assert finding["withdrawal_id"] == "wd-1"

    async def test_fast_large_spend_holds_play_until_the_alert_is_closed(
        self, stubs, wallet_events
    ) -> None:
        player = await verified_player(stubs)
        await wallet_events.publish(player, "BET", -250_000)
        await wallet_events.publish(player, "BET", -250_000)
        alert = await eventually(lambda: alert_of(stubs, player, "AML_FAST_LARGE_SPEND"))
        assert alert.action == "HOLD_PLAY"
        assert evidence(alert)[0]["stakes_eur_minor"] == 500_000
        # The stakes also reached the CDD threshold; due diligence done, the hold remains.
        await stubs["backoffice"].UpdateVerification(
            pb.UpdateVerificationRequest(
                player_id=player, cdd_cleared=True, verified_by="officer-1"
            )
        )
        for action in (pb.ACTION_BET, pb.ACTION_DEPOSIT, pb.ACTION_GAME_LAUNCH):
            verdict = await check(stubs, player, action, 100)
            assert verdict.decision == DENY and reasons(verdict) == {"AML_HOLD"}
        # The player's own money can still leave.
        assert (await check(stubs, player, pb.ACTION_WITHDRAWAL, 100)).decision == ALLOW

        closed = await stubs["backoffice"].CloseAmlAlert(
            pb.CloseAmlAlertRequest(
                name=alert.name, resolution="source of funds verified", operator_id="officer-7"
            )
        )
        assert closed.alert.status == pb.AML_ALERT_STATUS_CLOSED
        assert closed.alert.closed_by == "officer-7" and closed.alert.HasField("close_time")
        assert {r.reason for r in closed.verdict.reasons} == {
            "AML_FAST_LARGE_SPEND",
            "PLAY_HOLD_RELEASED",
        }
        assert (await check(stubs, player, pb.ACTION_BET, 100)).decision == ALLOW
        explained = await stubs["backoffice"].ExplainVerdict(
            pb.ExplainVerdictRequest(verdict_id=closed.verdict.verdict_id)
        )
        assert json.loads(explained.inputs_json)["operator_id"] == "officer-7"

    async def test_closing_twice_or_an_unknown_alert_is_refused(self, stubs, wallet_events) -> None:
        import grpc

        from services.runtime.status import error_info

        player = await verified_player(stubs)
        await wallet_events.publish(player, "DEPOSIT", 250_000)
        alert = await eventually(lambda: alert_of(stubs, player, "AML_CDD_THRESHOLD"))
        request = pb.CloseAmlAlertRequest(name=alert.name, resolution="ok", operator_id="o-1")
        await stubs["backoffice"].CloseAmlAlert(request)
        with pytest.raises(grpc.aio.AioRpcError) as again:
            await stubs["backoffice"].CloseAmlAlert(request)
        assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert error_info(again.value).reason == "AML_ALERT_ALREADY_CLOSED"
        unknown = pb.CloseAmlAlertRequest(
            name=f"players/{player}/amlAlerts/{uuid.uuid4()}", resolution="ok", operator_id="o-1"
        )
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stubs["backoffice"].CloseAmlAlert(unknown)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stubs["backoffice"].CloseAmlAlert(
                pb.CloseAmlAlertRequest(name="alerts/1", resolution="ok", operator_id="o-1")
            )
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stubs["games"].ListAmlAlerts(pb.ListAmlAlertsRequest(player_id=player))
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED

    async def test_a_stake_after_a_released_withdrawal_is_a_reversal(
        self, stubs, wallet_events
    ) -> None:
        player = await verified_player(stubs)
        await wallet_events.publish(player, "DEPOSIT", 50_000)
        await wallet_events.publish(
            player, "WITHDRAWAL_RESERVE", 0, reserved_delta=40_000, withdrawal_id="wd-9"
        )
        release = await wallet_events.publish(
            player, "WITHDRAWAL_RELEASE", 0, reserved_delta=-40_000, withdrawal_id="wd-9"
        )
        stake = await wallet_events.publish(player, "BET", -5_000)
        alert = await eventually(lambda: alert_of(stubs, player, "AML_WITHDRAWAL_REVERSAL"))
        (finding,) = evidence(alert)
        assert (finding["release_event_id"], finding["stake_event_id"]) == (release, stake)
        assert finding["withdrawal_id"] == "wd-9" and finding["released_eur_minor"] == 40_000

    async def test_alerts_list_pages_and_filters_by_status(self, stubs, wallet_events) -> None:
        player = await verified_player(stubs)
        await wallet_events.publish(player, "BET", -250_000)
        await wallet_events.publish(player, "BET", -250_000)
        # Stakes: CDD threshold and fast large spend, two alerts.
        await eventually(lambda: alert_of(stubs, player, "AML_FAST_LARGE_SPEND"))
        first = await stubs["backoffice"].ListAmlAlerts(
            pb.ListAmlAlertsRequest(player_id=player, page_size=1)
        )
        assert len(first.alerts) == 1 and first.next_page_token
        second = await stubs["backoffice"].ListAmlAlerts(
            pb.ListAmlAlertsRequest(player_id=player, page_size=1, page_token=first.next_page_token)
        )
        assert {a.rule for a in [*first.alerts, *second.alerts]} == {
            "AML_CDD_THRESHOLD",
            "AML_FAST_LARGE_SPEND",
        }
        await stubs["backoffice"].CloseAmlAlert(
            pb.CloseAmlAlertRequest(name=first.alerts[0].name, resolution="ok", operator_id="o-1")
        )
        closed = await stubs["backoffice"].ListAmlAlerts(
            pb.ListAmlAlertsRequest(player_id=player, status=pb.AML_ALERT_STATUS_CLOSED)
        )
        assert [a.name for a in closed.alerts] == [first.alerts[0].name]

    async def test_a_duplicated_win_makes_room_under_a_loss_limit_once(
        self, stubs, wallet_events, monitored
    ) -> None:
        player = await verified_player(stubs)
        await stubs["edge"].SetLimit(
            pb.SetLimitRequest(
                player_id=player,
                kind=pb.LIMIT_KIND_LOSS,
                period=pb.LIMIT_PERIOD_DAY,
                amount=Money(amount_minor=10_000, currency_code="GBP"),
            )
        )
        assert (await check(stubs, player, pb.ACTION_BET, 10_000)).decision == ALLOW
        assert "LIMIT_EXCEEDED" in reasons(await check(stubs, player, pb.ACTION_BET, 1_000))

        duplicates = metric(monitored, "duplicate")
        win = await wallet_events.publish(player, "WIN", 5_000, "GBP")
        await wallet_events.publish(player, "WIN", 5_000, "GBP", event_id=win)  # redelivered
        await eventually(lambda: _true(metric(monitored, "duplicate") >= duplicates + 1))
        # Net loss 10,000 - 5,000: room for 5,000 and not more (a doubled win would allow 6,000).
        assert "LIMIT_EXCEEDED" in reasons(await check(stubs, player, pb.ACTION_BET, 6_000))
        assert (await check(stubs, player, pb.ACTION_BET, 5_000)).decision == ALLOW

    async def test_undecodable_and_unconvertible_events_are_dead_lettered(
        self, stubs, wallet_events, monitored
    ) -> None:
        dead = metric(monitored, "dead_lettered")
        player = await verified_player(stubs)
        await wallet_events.publish(player, "DEPOSIT", 250_000, "USD")  # no USD rate here
        await wallet_events.publish(player, "DEPOSIT", body=b"\xff\xff not protobuf")
        await eventually(lambda: _true(metric(monitored, "dead_lettered") >= dead + 2))
        # Nothing was guessed: no alert, no gate.
        assert await alert_of(stubs, player, "AML_CDD_THRESHOLD") is None
        assert (await check(stubs, player, pb.ACTION_GAME_LAUNCH)).decision == ALLOW


async def _true(value: bool) -> bool:
    return value


async def test_checks_answer_with_the_consumer_off_and_queued_events_apply_once_it_runs(
    tmp_path: Path, pki: Pki, test_database: str, register: Simulator, wallet_events: Wallet
) -> None:
    queue = f"test.compliance.monitoring.{uuid.uuid4().hex[:8]}"
    launcher = Launcher(tmp_path, pki, [])
    channels: list[Any] = []
    try:
        # The durable queue exists (declared by an earlier consumer), the consumer is off.
        first = launcher("compliance", extra=monitoring_extra(register, tmp_path, queue))
        await eventually(lambda: _queue_exists(queue))
        first.terminate()
        off = launcher("compliance", extra=monitoring_extra(register, tmp_path, queue, on=False))
        channels, stubs = open_stubs(off, pki)
        player = await verified_player(stubs)
        await wallet_events.publish(player, "DEPOSIT", 150_000)
        await wallet_events.publish(player, "DEPOSIT", 60_000)
        await eventually(lambda: _queued(queue, 2))
        # Nobody consumes: checks answer from current state, and nothing is decided yet.
        verdict = await check(stubs, player, pb.ACTION_GAME_LAUNCH)
        assert verdict.decision == ALLOW, reasons(verdict)
        await eventually(lambda: _queued(queue, 2))

        launcher("compliance", extra=monitoring_extra(register, tmp_path, queue))

        async def gated() -> bool:
            return "CDD_REQUIRED" in reasons(await check(stubs, player, pb.ACTION_GAME_LAUNCH))

        await eventually(gated)
        alert = await alert_of(stubs, player, "AML_CDD_THRESHOLD")
        assert alert is not None and evidence(alert)[0]["total_eur_minor"] == 210_000
    finally:
        for channel in channels:
            await channel.close()
        for process in launcher.started:
            process.terminate()
        await delete_queues(queue, f"{queue}.dead")


async def _queue_state(name: str) -> int | None:
    connection = await connect()
    async with connection:
        channel = await connection.channel()
        try:
            declared = await channel.declare_queue(name, passive=True)
        except aio_pika.exceptions.ChannelClosed:
            return None
        return declared.declaration_result.message_count or 0


async def _queue_exists(name: str) -> bool:
    return await _queue_state(name) is not None


async def _queued(name: str, count: int) -> bool:
    return await _queue_state(name) == count


async def test_deposits_with_three_instruments_through_the_wallet_raise_an_alert(
    tmp_path: Path, pki: Pki, test_database: str, register: Simulator
) -> None:
    """Through the real wallet: its Deposit RPC stores the instrument, its outbox relay
    publishes the event, compliance monitoring counts the instruments."""
    queue = f"test.compliance.monitoring.{uuid.uuid4().hex[:8]}"
    launcher = Launcher(tmp_path, pki, [])
    closers: list[Any] = []
    try:
        compliance = launcher("compliance", extra=monitoring_extra(register, tmp_path, queue))
        wallet = launcher("wallet", extra=wallet_extra(relay=True))
        channels, stubs = open_stubs(compliance, pki)
        closers += channels
        wallet_channel = secure_channel(
            f"127.0.0.1:{wallet.ports['port']}", pki.tls("payments"), "wallet", default_timeout=10
        )
        closers.append(wallet_channel)
        payments = wallet_pb2_grpc.WalletServiceStub(wallet_channel)
        player = await verified_player(stubs)
        identity_channel = secure_channel(
            f"127.0.0.1:{wallet.ports['port']}", pki.tls("identity"), "wallet", default_timeout=10
        )
        closers.append(identity_channel)
        await wallet_pb2_grpc.WalletServiceStub(identity_channel).OpenAccount(
            wallet_pb2.OpenAccountRequest(player_id=player, currency_code="EUR")
        )
        for instrument in ("card:fp-1", "iban:fp-2", "ewallet:fp-3"):
            await payments.Deposit(
                wallet_pb2.DepositRequest(
                    request_id=uuid.uuid4().hex,
                    player_id=player,
                    amount=Money(amount_minor=1_000, currency_code="EUR"),
                    payment_instrument=instrument,
                )
            )
        alert = await eventually(lambda: alert_of(stubs, player, "AML_MULTIPLE_INSTRUMENTS"))
        assert evidence(alert)[0]["instruments"] == ["card:fp-1", "ewallet:fp-3", "iban:fp-2"]
    finally:
        for channel in closers:
            await channel.close()
        for process in launcher.started:
            process.terminate()
        await delete_queues(queue, f"{queue}.dead")
