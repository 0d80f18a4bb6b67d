"""Compliance decisions with their records: each public operation is one transaction that
reads the player's state (locked when the decision changes or counts something), asks the
pure rules, writes what changed and appends the verdict to the log, so a decision exists
if and only if its verdict does."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.compliance import flags, reality, rules, store, verdicts
from services.compliance.checks import ActionChecks, CheckRequest
from services.compliance.policy import Policy
from services.compliance.rules import (
    Action,
    Applicant,
    ComplianceConfig,
    Decision,
    LimitKind,
    LimitState,
    Period,
    Reason,
)
from services.runtime import verdict_log
from services.runtime.call import current_call
from services.runtime.errors import Code, DomainError, InvalidArgument
from services.runtime.outbox import Event, enqueue

SCHEMA = "compliance"


class RegisterAnswerLike(Protocol):
    @property
    def status(self) -> str: ...

    @property
    def request_id(self) -> str: ...

    @property
    def detail(self) -> str: ...


class NationalRegister(Protocol):
    """The national self-exclusion register (services.compliance.register)."""

    async def check(
        self,
        *,
        given_name: str,
        family_name: str,
        birth_date: dt.date,
        email: str,
        postcode: str = "",
        mobile: str = "",
        timeout: float | None = None,
    ) -> RegisterAnswerLike: ...


class PlayerUnknown(DomainError):
    code = Code.NOT_FOUND

    def __init__(self, player_id: str) -> None:
        super().__init__(
            "PLAYER_UNKNOWN", f"no compliance profile for {player_id}", {"player_id": player_id}
        )


# Builds the PlayerExcluded event payload; supplied by the RPC surface (no generated code
# in this module).
EncodeExcluded = Callable[[str, str, rules.Exclusion, uuid.UUID], bytes]


@dataclass(frozen=True)
class Recorded:
    verdict: verdict_log.StoredVerdict
    decision: Decision
    # The jurisdiction whose configuration decided (None: not about a player's).
    jurisdiction: rules.Jurisdiction | None = None


class Compliance:
    def __init__(
        self,
        engine: AsyncEngine,
        register: NationalRegister,
        encode_excluded: EncodeExcluded,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        *,
        policy: Policy,
        check_replay_seconds: float = 600.0,
    ) -> None:
        self._engine = engine
        self._register = register
        self._encode_excluded = encode_excluded
        self._now = clock
        # Per-jurisdiction configuration (with its CDD threshold in its currency) and rule
        # flags.
        self.policy = policy
        # Deposit, bet, withdrawal and game-launch checks: batched, with cached state.
        self.checks = ActionChecks(engine, self.policy, clock, replay_seconds=check_replay_seconds)

    async def _record(
        self,
        conn: AsyncConnection,
        *,
        player_id: str | None,
        action: Action,
        decision: Decision,
        inputs: dict[str, Any],
        caller: str,
        now: dt.datetime,
        jurisdiction: rules.Jurisdiction | None = None,
    ) -> Recorded:
        """Append the verdict; a decision about a player records their jurisdiction and is
        versioned with its configuration."""
        config = jurisdiction.config if jurisdiction else self.policy.default
        if jurisdiction is not None:
            inputs = {**inputs, "jurisdiction": jurisdiction.code}
        stored = await verdict_log.append(
            conn,
            SCHEMA,
            verdicts.verdict(
                player_id=player_id,
                action=action,
                decision=decision.verdict,
                reasons=decision.reasons,
                inputs=inputs,
                config_version=config.version,
                caller=caller,
                now=now,
            ),
        )
        return Recorded(stored, decision, jurisdiction)

    async def check_registration(
        self, applicant: Applicant, request_country: str, caller: str
    ) -> Recorded:
        # The register is asked before the transaction: a slow register must not hold
        # locks. Its answer (or its absence) is part of the recorded inputs.
        call = current_call()
        remaining = call.time_remaining() if call else None
        answer = await self._register.check(
            given_name=applicant.given_name,
            family_name=applicant.family_name,
            birth_date=applicant.birth_date,
            email=applicant.email,
            postcode=applicant.postcode,
            # Leave part of the caller's deadline for the transaction after it.
            timeout=None if remaining is None else max(remaining * 0.6, 0.05),
        )
        now = self._now()
        jurisdiction = self.policy.jurisdiction(applicant.country)
        async with self._engine.begin() as conn:
            lookalike = await store.excluded_lookalike(conn, applicant, now)
            decision = rules.registration(
                applicant,
                today=now.date(),
                request_country=request_country,
                excluded_internally=lookalike,
                register_status=answer.status,
                register_request_id=answer.request_id or answer.detail,
                config=jurisdiction.config,
            )
            return await self._record(
                conn,
                player_id=None,
                action=Action.REGISTRATION,
                decision=decision,
                inputs={
                    "applicant": asdict(applicant),
                    "request_country": request_country,
                    "register": {
                        "status": answer.status,
                        "request_id": answer.request_id,
                        "detail": answer.detail,
                    },
                    "excluded_lookalike": lookalike,
                },
                caller=caller,
                now=now,
                jurisdiction=jurisdiction,
            )

    async def enrol(self, player_id: str, applicant: Applicant, caller: str) -> Recorded:
        now = self._now()
        async with self._engine.begin() as conn:
            created = await store.enrol(conn, player_id, applicant)
            return await self._record(
                conn,
                player_id=player_id,
                action=Action.ENROLMENT,
                decision=Decision(True, [] if created else [Reason("ALREADY_ENROLLED")]),
                inputs={"applicant": asdict(applicant)},
                caller=caller,
                now=now,
                jurisdiction=self.policy.jurisdiction(applicant.country),
            )

    async def check_action(
        self,
        player_id: str,
        action: Action,
        *,
        amount_minor: int,
        slots: bool,
        request_country: str,
        request_id: str,
        caller: str,
        currency: str = "",
    ) -> Recorded:
        checked = await self.checks.check(
            CheckRequest(
                player_id=player_id,
                action=action,
                amount_minor=amount_minor,
                slots=slots,
                request_country=request_country,
                request_id=request_id,
                caller=caller,
                currency=currency,
            )
        )
        return Recorded(checked.verdict, checked.decision)

    async def _require_player(self, conn: AsyncConnection, player_id: str) -> rules.PlayerState:
        state = await store.player(conn, player_id, lock=True)
        if state is None:
            raise PlayerUnknown(player_id)
        return state

    async def update_verification(
        self,
        player_id: str,
        *,
        name: bool,
        address: bool,
        birth_date: bool,
        cdd_cleared: bool,
        verified_by: str,
        caller: str,
        affordability_assessed: bool = False,
    ) -> Recorded:
        now = self._now()
        async with self._engine.begin() as conn:
            state = await self._require_player(conn, player_id)
            await store.update_verification(
                conn,
                player_id,
                name=name,
                address=address,
                birth_date=birth_date,
                cdd_cleared=cdd_cleared,
                now=now,
                affordability_assessed=affordability_assessed,
            )
            return await self._record(
                conn,
                player_id=player_id,
                action=Action.KYC_UPDATE,
                decision=Decision(True, []),
                inputs={
                    "name": name,
                    "address": address,
                    "birth_date": birth_date,
                    "cdd_cleared": cdd_cleared,
                    "affordability_assessed": affordability_assessed,
                    "verified_by": verified_by,
                },
                caller=caller,
                now=now,
                jurisdiction=self.policy.jurisdiction(state.country),
            )

    async def _change_limit(
        self,
        player_id: str,
        kind: LimitKind,
        period: Period,
        caller: str,
        change: Callable[[LimitState | None, dt.datetime, ComplianceConfig], rules.LimitChange],
        currency: str | None = None,
    ) -> tuple[LimitState, Recorded]:
        now = self._now()
        async with self._engine.begin() as conn:
            state = await self._require_player(conn, player_id)
            jurisdiction = self.policy.jurisdiction(state.country)
            if currency is not None and currency != jurisdiction.config.currency:
                raise InvalidArgument(
                    "amount.currency_code",
                    f"this player's limits are in {jurisdiction.config.currency}",
                )
            current = next(
                (
                    limit
                    for limit in await store.limits(conn, player_id)
                    if limit.kind is kind and limit.period is period
                ),
                None,
            )
            changed = change(current, now, jurisdiction.config)
            limit = await store.write_limit(conn, player_id, kind, period, changed, now)
            recorded = await self._record(
                conn,
                player_id=player_id,
                action=Action.LIMIT_CHANGE,
                decision=Decision(True, [Reason(changed.change)]),
                inputs={
                    "kind": kind.value,
                    "period": period.value,
                    "before": asdict(current) if current else None,
                    "after": asdict(changed),
                },
                caller=caller,
                now=now,
                jurisdiction=jurisdiction,
            )
        return limit, recorded

    async def set_limit(
        self,
        player_id: str,
        kind: LimitKind,
        period: Period,
        amount_minor: int,
        caller: str,
        currency: str | None = None,
    ) -> tuple[LimitState, Recorded]:
        return await self._change_limit(
            player_id,
            kind,
            period,
            caller,
            lambda current, now, _: rules.set_limit(current, amount_minor, now),
            currency,
        )

    async def confirm_increase(
        self, player_id: str, kind: LimitKind, period: Period, caller: str
    ) -> tuple[LimitState, Recorded]:
        return await self._change_limit(
            player_id,
            kind,
            period,
            caller,
            lambda current, now, config: rules.confirm_increase(
                current, now, dt.timedelta(hours=config.limit_cooling_off_hours)
            ),
        )

    async def limits(self, player_id: str) -> tuple[list[LimitState], rules.Jurisdiction]:
        """The player's limits, and the jurisdiction whose currency and cooling-off they
        are shown in."""
        async with self._engine.begin() as conn:
            state = await store.player(conn, player_id)
            limits = await store.limits(conn, player_id)
        country = state.country if state else ""
        return limits, self.policy.jurisdiction(country)

    @property
    def cooling_off(self) -> dt.timedelta:
        return dt.timedelta(hours=self.policy.default.limit_cooling_off_hours)

    async def exclude(
        self,
        player_id: str,
        *,
        timeout_hours: int | None,
        self_exclusion_days: int | None,
        indefinite: bool,
        caller: str,
    ) -> tuple[rules.Exclusion, Recorded]:
        now = self._now()
        async with self._engine.begin() as conn:
            state = await self._require_player(conn, player_id)
            jurisdiction = self.policy.jurisdiction(state.country)
            exclusion = rules.exclude(
                state,
                timeout_hours=timeout_hours,
                self_exclusion_days=self_exclusion_days,
                indefinite=indefinite,
                now=now,
                config=jurisdiction.config,
            )
            await store.write_exclusion(conn, player_id, exclusion, now)
            event_id = uuid.uuid4()
            await enqueue(
                conn,
                SCHEMA,
                [
                    Event(
                        routing_key="compliance.player.excluded",
                        message_type="casino.compliance.v1.PlayerExcluded",
                        payload=self._encode_excluded(
                            str(event_id), player_id, exclusion, event_id
                        ),
                        shard_key=player_id,
                        event_id=event_id,
                    )
                ],
            )
            recorded = await self._record(
                conn,
                player_id=player_id,
                action=Action.EXCLUSION,
                decision=Decision(True, [Reason(exclusion.kind)]),
                inputs={
                    "timeout_hours": timeout_hours,
                    "self_exclusion_days": self_exclusion_days,
                    "indefinite": indefinite,
                    "until": exclusion.until,
                },
                caller=caller,
                now=now,
                jurisdiction=jurisdiction,
            )
        return exclusion, recorded

    # Reality checks.

    async def set_reality_check(
        self, player_id: str, interval_minutes: int, caller: str
    ) -> tuple[int, Recorded]:
        now = self._now()
        async with self._engine.begin() as conn:
            state = await self._require_player(conn, player_id)
            jurisdiction = self.policy.jurisdiction(state.country)
            minutes = reality.chosen_interval(interval_minutes, jurisdiction.config)
            await store.set_reality_check(conn, player_id, minutes, now)
            recorded = await self._record(
                conn,
                player_id=player_id,
                action=Action.REALITY_CHECK_CHANGE,
                decision=Decision(True, []),
                inputs={"before": state.reality_check_minutes, "after": minutes},
                caller=caller,
                now=now,
                jurisdiction=jurisdiction,
            )
        return minutes, recorded

    async def reality_check(
        self, player_id: str, session_start: dt.datetime
    ) -> tuple[reality.RealityCheck, rules.Jurisdiction]:
        """A read: nothing is decided, so no verdict."""
        now = self._now()
        async with self._engine.begin() as conn:
            state = await store.player(conn, player_id)
            if state is None:
                raise PlayerUnknown(player_id)
            jurisdiction = self.policy.jurisdiction(state.country)
            start = reality.session_start(session_start, now, jurisdiction.config)
            totals = await store.session_totals(conn, player_id, start)
        check = reality.reality_check(
            state, start, reality.SessionPlay.of(totals), now, jurisdiction.config
        )
        return check, jurisdiction

    # Rule flags.

    async def set_rule_flag(
        self,
        rule: str,
        *,
        enabled: bool,
        rollout_percent: int,
        countries: tuple[str, ...],
        operator_id: str,
        reason: str,
        caller: str,
    ) -> tuple[flags.RuleFlag, Recorded, str]:
        """Change a flag, its history, the NOTIFY to other replicas and the verdict in one
        transaction; then this replica's snapshot at once. Returns the snapshot version."""
        flags.known_rule(rule)
        if not 0 <= rollout_percent <= 100:
            raise InvalidArgument("rollout_percent", "rollout_percent is 0 to 100")
        now = self._now()
        async with self._engine.begin() as conn:
            before = {f.rule: f for f in await flags.read_flags(conn)}.get(rule)
            flag = await flags.write_flag(
                conn,
                rule,
                enabled=enabled,
                rollout_percent=rollout_percent,
                countries=countries,
                updated_by=operator_id,
                reason=reason,
                now=now,
            )
            recorded = await self._record(
                conn,
                player_id=None,
                action=Action.RULE_FLAG_CHANGE,
                decision=Decision(True, []),
                inputs={
                    "rule": rule,
                    "before": asdict(before) if before else None,
                    "after": asdict(flag),
                    "operator_id": operator_id,
                    "reason": reason,
                },
                caller=caller,
                now=now,
            )
        version = ""
        if self.policy.flags is not None:
            try:
                version = (await self.policy.flags.refresh("change")).version
            except Exception:
                # Committed; the poll and the notification will bring it in.
                version = self.policy.flags.snapshot.version
        return flag, recorded, version

    async def rule_flags(self) -> tuple[list[flags.RuleFlag], str]:
        """Every registered rule's flag as stored (or its default), and the version of the
        snapshot this replica decides with."""
        async with self._engine.begin() as conn:
            stored = await flags.read_flags(conn)
        listed = flags.Snapshot.of(stored)
        in_force = self.policy.flags.snapshot if self.policy.flags is not None else listed
        return [listed.flags[rule] for rule in sorted(listed.flags)], in_force.version

    async def explain(self, verdict_id: uuid.UUID) -> verdict_log.StoredVerdict | None:
        async with self._engine.begin() as conn:
            return await verdict_log.get(conn, SCHEMA, verdict_id)

    async def verify_log(
        self, signer: verdict_log.CheckpointSigner, public_key: Path, checkpoints: Path
    ) -> tuple[verdict_log.VerifyReport, Path | None]:
        """Verify the whole chain against the newest checkpoint; only an intact chain gets a
        new signed checkpoint of its head (a rewritten log is never signed)."""
        async with self._engine.begin() as conn:
            report = await verdict_log.verify(
                conn, SCHEMA, public_key, verdict_log.latest_checkpoint(checkpoints)
            )
            if not report.ok:
                return report, None
            return report, await verdict_log.checkpoint(conn, SCHEMA, signer, checkpoints)
