"""AML transaction monitoring: a consumer of the wallet's TransactionPosted events on
RabbitMQ, beside the service and never on the bet path. If it is slow or down, checks go on
answering from the state they read; events wait in a durable queue.

Each message is one database transaction: the event id is claimed first (a redelivery
finds it claimed and is only acknowledged), then the activity row, the WIN / ROLLBACK usage
that makes loss limits net of wins, the AML rules' findings as alerts, the gates they set
(CDD, play hold; each bumping the player's version) and a verdict per new alert or gate
change. The message is acknowledged only after the commit, so a crash in between means a
redelivery, and the claimed event id makes it harmless. Messages that cannot be decoded, or
whose currency has no configured rate, are dead-lettered (and logged), never guessed at.

This module is an entrypoint, like server.py: the generated event type stops here."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aio_pika.abc import AbstractIncomingMessage
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncEngine

from casino.wallet.v1 import events_pb2, wallet_pb2
from services.compliance import aml, rules, store
from services.compliance.cases import record_verdict
from services.compliance.fx import EurConverter, UnconvertibleCurrency
from services.runtime.consumer import Handler, Undeliverable, decode_event
from services.runtime.logs import get_logger

BINDING = "wallet.transaction.#"
CALLER = "compliance.monitoring"

FINDINGS = Counter("casino_compliance_aml_findings_total", "AML rule findings, by rule.", ["rule"])

log = get_logger()

# Usage rows that make LOSS limits net of wins. Stakes (BET) are counted by CheckAction.
_USAGE_OF_KIND = {aml.WIN: "WIN", aml.BET_ROLLBACK: "ROLLBACK"}

RuleEnabled = Callable[[str, str, str], bool]  # (rule, player_id, country) -> on?


def every_rule_on(rule: str, player_id: str, country: str) -> bool:
    return True


@dataclass(frozen=True)
class WalletEvent:
    event_id: uuid.UUID
    player_id: str
    kind: str
    amount_minor: int  # magnitude
    currency: str
    request_id: str
    instrument: str | None
    withdrawal_id: str | None
    at: dt.datetime


def decode(message: AbstractIncomingMessage) -> WalletEvent:
    event = decode_event(message, events_pb2.TransactionPosted)
    tx = event.transaction
    try:
        event_id = uuid.UUID(event.event_id)
    except ValueError:
        raise Undeliverable(f"event_id {event.event_id!r} is not a UUID") from None
    kind = wallet_pb2.TransactionKind.Name(tx.kind).removeprefix("TRANSACTION_KIND_")
    if kind not in aml.KINDS:
        raise Undeliverable(f"unknown transaction kind {tx.kind}")
    if not tx.player_id or not tx.amount.currency_code or not tx.HasField("create_time"):
        raise Undeliverable("transaction without player, currency or time")
    # Postings carry the posted amount; reservations and releases move the reserved balance.
    amount = abs(tx.amount.amount_minor) or abs(tx.reserved_delta_minor)
    return WalletEvent(
        event_id=event_id,
        player_id=tx.player_id,
        kind=kind,
        amount_minor=amount,
        currency=tx.amount.currency_code,
        request_id=tx.request_id,
        instrument=tx.payment_instrument or None,
        withdrawal_id=tx.withdrawal_id or None,
        at=tx.create_time.ToDatetime(dt.UTC),
    )


class Monitoring:
    """Applies one wallet event, exactly once, in one transaction."""

    def __init__(
        self,
        engine: AsyncEngine,
        config: aml.AmlConfig,
        fx: EurConverter,
        *,
        jurisdiction: Callable[[rules.PlayerState], rules.ComplianceConfig],
        rule_enabled: RuleEnabled = every_rule_on,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._engine = engine
        self._config = config
        self._fx = fx
        # The player's jurisdiction: its currency (limits) and CDD threshold (EUR).
        self._jurisdiction = jurisdiction
        self._enabled = rule_enabled
        self._now = clock

    async def apply(self, event: WalletEvent) -> bool:
        """True if applied now, False if it had been (a duplicate). Raises
        UnconvertibleCurrency before touching the database."""
        eur = self._fx.to_eur_minor(event.amount_minor, event.currency)
        activity = aml.Activity(
            event_id=str(event.event_id),
            kind=event.kind,
            amount_eur_minor=eur,
            at=event.at,
            instrument=event.instrument,
            withdrawal_id=event.withdrawal_id,
        )
        now = self._now()
        async with self._engine.begin() as conn:
            if not await store.mark_event_processed(conn, event.event_id):
                return False
            # The player's row lock serialises this with checks and with the player's other
            # events, so the rules see every activity recorded before and gates change in
            # order.
            state = await store.player(conn, event.player_id, lock=True)
            await store.record_activity(
                conn,
                event.player_id,
                activity,
                amount_minor=event.amount_minor,
                currency=event.currency,
            )
            if state is None:
                # Not a player compliance knows: the activity is kept, nothing to decide.
                log.warning("wallet event for an unknown player", player_id=event.player_id)
                return True
            await self._count_usage(conn, state, event)
            # Both sides of the event: it may arrive after activity later than itself.
            lookback = self._config.lookback(event.kind)
            recent = await store.activity_between(
                conn, event.player_id, event.at - lookback, event.at + lookback
            )
            player_id, country = state.player_id, state.country
            findings = aml.evaluate(
                activity,
                recent,
                account_opened=await store.account_opened(conn, event.player_id),
                config=self._config,
                # The threshold the money-path gate trips at for this player.
                cdd_threshold_eur_minor=self._jurisdiction(state).cdd_threshold_eur_minor,
                enabled=lambda rule: self._enabled(rule, player_id, country),
                cdd_cleared_at=state.cdd_cleared_at,
            )
            for finding in findings:
                FINDINGS.labels(finding.rule).inc()
                state = await self._act(conn, state, event, finding, now)
        return True

    async def _count_usage(self, conn: Any, state: rules.PlayerState, event: WalletEvent) -> None:
        action = _USAGE_OF_KIND.get(event.kind)
        if action is None or event.amount_minor == 0:
            return
        if event.currency != self._jurisdiction(state).currency:
            # Limits are kept in the player's jurisdiction currency and stakes in any other
            # are refused by checks, so a win in another currency offsets no counted stake.
            return
        await store.record_usage(
            conn,
            event.player_id,
            f"wallet:{event.kind}:{event.request_id}",
            action,
            event.amount_minor,
            event.at,
        )

    async def _act(
        self,
        conn: Any,
        state: rules.PlayerState,
        event: WalletEvent,
        finding: aml.Finding,
        now: dt.datetime,
    ) -> rules.PlayerState:
        alert, opened = await store.raise_alert(
            conn, state.player_id, finding.rule, finding.action.value, finding.evidence, now
        )
        gates: dict[str, bool] = {}
        if finding.action is aml.AmlAction.REQUIRE_CDD and not state.cdd_required:
            await store.require_cdd(conn, state.player_id, now)
            state = dataclasses.replace(state, cdd_required=True)
            gates["cdd_required"] = True
        if finding.action is aml.AmlAction.HOLD_PLAY and not state.play_hold:
            await store.set_play_hold(conn, state.player_id, True, now)
            state = dataclasses.replace(state, play_hold=True)
            gates["play_hold"] = True
        if opened or gates:
            await record_verdict(
                conn,
                player_id=state.player_id,
                action=rules.Action.AML_MONITORING,
                reasons=[
                    rules.Reason(
                        finding.rule, {"action": finding.action.value, "alert": alert.name}
                    )
                ],
                inputs={
                    "event_id": str(event.event_id),
                    "alert": alert.name,
                    "alert_opened": opened,
                    "gates_set": gates,
                    "evidence": finding.evidence,
                    "fx_to_eur": self._fx.rates,
                },
                config=self._config,
                caller=CALLER,
                now=now,
            )
        return state


def handler(monitoring: Monitoring) -> Handler:
    """What the runtime's EventConsumer does with each wallet event."""

    async def handle(message: AbstractIncomingMessage) -> str:
        try:
            applied = await monitoring.apply(decode(message))
        except UnconvertibleCurrency as exc:
            raise Undeliverable(str(exc)) from None
        return "processed" if applied else "duplicate"

    return handle
