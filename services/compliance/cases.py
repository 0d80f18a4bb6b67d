"""AML cases: the alerts monitoring opens, listed and closed by compliance officers.
Closing a player's last open HOLD_PLAY alert releases their play hold; each close is a
verdict. (Closing a REQUIRE_CDD alert does not clear the CDD gate: only recorded due
diligence does, through UpdateVerification.)"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.compliance import rules, store, verdicts
from services.compliance.aml import AmlAction, AmlAlert, AmlConfig
from services.runtime import verdict_log
from services.runtime.errors import Code, DomainError, InvalidArgument

SCHEMA = "compliance"
_ALERT_NAME = re.compile(r"^players/(?P<player>[^/]{1,200})/amlAlerts/(?P<alert>[0-9a-fA-F-]{36})$")


class AlertNotFound(DomainError):
    code = Code.NOT_FOUND

    def __init__(self, name: str) -> None:
        super().__init__("AML_ALERT_NOT_FOUND", f"no AML alert {name}", {"name": name})


class AlertAlreadyClosed(DomainError):
    code = Code.FAILED_PRECONDITION

    def __init__(self, alert: AmlAlert) -> None:
        super().__init__(
            "AML_ALERT_ALREADY_CLOSED",
            "the alert was closed already",
            {
                "name": alert.name,
                "closed_by": alert.closed_by or "",
                "closed_at": alert.closed_at.isoformat() if alert.closed_at else "",
            },
        )


def parse_alert_name(name: str) -> tuple[str, uuid.UUID]:
    match = _ALERT_NAME.match(name)
    if match is None:
        raise InvalidArgument("name", "name must be players/{player_id}/amlAlerts/{alert_id}")
    try:
        return match["player"], uuid.UUID(match["alert"])
    except ValueError:
        raise InvalidArgument("name", "the alert id in name must be a UUID") from None


async def record_verdict(
    conn: AsyncConnection,
    *,
    player_id: str,
    action: rules.Action,
    reasons: list[rules.Reason],
    inputs: dict[str, Any],
    config: AmlConfig,
    caller: str,
    now: dt.datetime,
) -> verdict_log.StoredVerdict:
    """A RECORDED verdict of monitoring or case handling, in the caller's transaction."""
    return await verdict_log.append(
        conn,
        SCHEMA,
        verdicts.verdict(
            player_id=player_id,
            action=action,
            decision="RECORDED",
            reasons=reasons,
            inputs=inputs,
            config_version=config.version,
            caller=caller,
            now=now,
        ),
    )


class AmlCases:
    def __init__(
        self,
        engine: AsyncEngine,
        config: AmlConfig,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._engine = engine
        self._config = config
        self._now = clock

    async def list(
        self,
        *,
        player_id: str | None,
        status: str | None,
        before: tuple[dt.datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[AmlAlert]:
        async with self._engine.begin() as conn:
            return await store.list_alerts(
                conn, player_id=player_id, status=status, before=before, limit=limit
            )

    async def close(
        self, name: str, *, resolution: str, operator_id: str, caller: str
    ) -> tuple[AmlAlert, verdict_log.StoredVerdict]:
        player_id, alert_id = parse_alert_name(name)
        now = self._now()
        async with self._engine.begin() as conn:
            # The player's row first, as monitoring locks it: gates and alerts change
            # together, in one order.
            state = await store.player(conn, player_id, lock=True)
            alert = await store.alert(conn, player_id, alert_id, lock=True)
            if alert is None:
                raise AlertNotFound(name)
            if alert.status != "OPEN":
                raise AlertAlreadyClosed(alert)
            closed = await store.close_alert(
                conn, player_id, alert_id, closed_by=operator_id, resolution=resolution, now=now
            )
            released = (
                alert.action == AmlAction.HOLD_PLAY
                and state is not None
                and state.play_hold
                and await store.open_hold_alerts(conn, player_id) == 0
            )
            if released:
                await store.set_play_hold(conn, player_id, False, now)
            reasons = [rules.Reason(alert.rule, {"alert": alert.name})]
            if released:
                reasons.append(rules.Reason("PLAY_HOLD_RELEASED"))
            verdict = await record_verdict(
                conn,
                player_id=player_id,
                action=rules.Action.AML_ALERT_CLOSE,
                reasons=reasons,
                inputs={
                    "alert": alert.name,
                    "rule": alert.rule,
                    "alert_action": alert.action,
                    "resolution": resolution,
                    "operator_id": operator_id,
                    "play_hold_released": released,
                },
                config=self._config,
                caller=caller,
                now=now,
            )
        return closed, verdict
