"""RPC surface of the compliance service: validates and maps protobuf to the rules'
types and back."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc

from casino.common.v1 import money_pb2
from casino.compliance.v1 import compliance_pb2 as pb
from casino.compliance.v1 import compliance_pb2_grpc, events_pb2
from services.compliance import flags, rules
from services.compliance.aml import AmlAlert, AmlConfig
from services.compliance.cases import AmlCases
from services.compliance.decisions import SCHEMA, Compliance, Recorded
from services.compliance.flags import RuleFlags
from services.compliance.fx import EurConverter, UnconvertibleCurrency
from services.compliance.monitoring import BINDING as MONITORED_EVENTS
from services.compliance.monitoring import Monitoring
from services.compliance.monitoring import handler as monitoring_handler
from services.compliance.policy import Policy
from services.compliance.register import SelfExclusionRegister
from services.compliance.rules import ComplianceConfig
from services.runtime import verdict_log
from services.runtime.call import authenticated_caller, require_player
from services.runtime.checkpoints import ChainCheckpointer
from services.runtime.config import ConfigError, domain_config
from services.runtime.consumer import EventConsumer
from services.runtime.errors import InvalidArgument
from services.runtime.fields import text_field
from services.runtime.messages import timestamp
from services.runtime.outbox import outbox_workers
from services.runtime.pagination import decode_page_token, encode_page_token, page_size
from services.runtime.retention import Pruner
from services.runtime.server import ServiceRuntime


@dataclass(frozen=True)
class ComplianceSettings:
    rules: rules.ComplianceConfig = field(default_factory=rules.ComplianceConfig)
    register_url: str = "http://127.0.0.1:50130"
    register_api_key_file: Path = Path(".dev/secrets/register-api-key")
    register_timeout_seconds: float = 2.0
    # Ed25519 key signing verdict-log checkpoints, and where checkpoints are written
    # (outside the database, e.g. a write-once bucket mounted as a folder).
    signing_key_file: Path = Path(".dev/secrets/verdict-signing.key")
    public_key_file: Path = Path(".dev/secrets/verdict-signing.pub")
    checkpoint_dir: Path = Path(".dev/checkpoints")
    # A signed checkpoint of the verdict log's head this often when the head moved (0: only
    # when VerifyVerdictLog or the CLI runs). Without a recent one, a superuser bypassing the
    # triggers could cut the log's tail and move the head back unnoticed.
    checkpoint_interval_seconds: float = 60.0
    # A check is answered again to a retry of its request_id for this long; later the
    # request_id is spent (IDEMPOTENCY_KEY_EXPIRED): a verdict is about its moment.
    check_replay_seconds: float = 600.0
    # Publish the outbox (to the broker of the runtime's [amqp] section, as monitoring
    # consumes from it).
    outbox_relay: bool = True
    # Published events are kept in the outbox this long, then pruned.
    outbox_retention_hours: float = 24.0
    # Counted usage (deposits, stakes, wins behind limits and the CDD threshold) and checks'
    # requests (what answers a retried check) are deleted after this many days; never under
    # 35 (the database functions refuse younger rows too).
    usage_retention_days: float = 90.0
    # AML transaction monitoring: consume the wallet's events from this durable queue (its
    # dead letters go to "<queue>.dead"). Off: checks are unaffected, events wait queued.
    monitoring: bool = True
    monitoring_queue: str = "compliance.monitoring"
    monitoring_prefetch: int = 32
    aml: AmlConfig = field(default_factory=AmlConfig)
    # Price of one major unit of each currency in EUR, as decimal strings, for AML amounts
    # and the CDD threshold (configured in EUR) in each jurisdiction's currency. Never
    # guessed: every jurisdiction's currency needs one (the service refuses to start
    # without), and a wallet event in a currency without one is dead-lettered.
    fx_to_eur: dict[str, str] = field(default_factory=lambda: {"EUR": "1"})
    # Per jurisdiction, by ISO 3166-1 alpha-2 country of residence; a player from a country
    # not listed here lives under `rules`. Each table starts from the UKGC defaults of
    # rules.ComplianceConfig (not from `rules`): write out every value that differs.
    jurisdictions: dict[str, ComplianceConfig] = field(default_factory=dict)
    # Safety-net re-read of the rule flags (changes arrive by NOTIFY within milliseconds).
    flags_poll_seconds: float = 5.0

    def __post_init__(self) -> None:
        if self.usage_retention_days < 35:
            raise ConfigError("compliance.usage_retention_days must be at least 35 (limits)")
        if self.check_replay_seconds <= 0:
            raise ConfigError("compliance.check_replay_seconds must be positive")
        if self.checkpoint_interval_seconds < 0:
            raise ConfigError("compliance.checkpoint_interval_seconds must be 0 (off) or more")
        fx = self.converter()
        currencies = [("compliance.rules", self.rules.currency)] + [
            (f"compliance.jurisdictions.{code}", config.currency)
            for code, config in sorted(self.jurisdictions.items())
        ]
        for where, currency in currencies:
            if currency not in fx.rates:
                raise ConfigError(
                    f"compliance.fx_to_eur has no rate for {currency}, the currency of"
                    f" [{where}]: its CDD threshold (in EUR) cannot be converted and its"
                    f" players' wallet events could not be monitored. Add the price of one"
                    f' {currency} in EUR, e.g. fx_to_eur = {{ EUR = "1", {currency} = "..." }}'
                )

    def converter(self) -> EurConverter:
        """The fx_to_eur rates as the converter monitoring and the CDD threshold use."""
        try:
            return EurConverter(self.fx_to_eur)
        except ValueError as exc:
            raise ConfigError(f"compliance.{exc}") from None


_DECISION = {"ALLOW": pb.DECISION_ALLOW, "DENY": pb.DECISION_DENY, "RECORDED": pb.DECISION_RECORDED}
_ACTION = {
    pb.ACTION_DEPOSIT: rules.Action.DEPOSIT,
    pb.ACTION_BET: rules.Action.BET,
    pb.ACTION_WITHDRAWAL: rules.Action.WITHDRAWAL,
    pb.ACTION_GAME_LAUNCH: rules.Action.GAME_LAUNCH,
}
_KIND = {
    pb.LIMIT_KIND_DEPOSIT: rules.LimitKind.DEPOSIT,
    pb.LIMIT_KIND_LOSS: rules.LimitKind.LOSS,
    pb.LIMIT_KIND_STAKE: rules.LimitKind.STAKE,
}
_PERIOD = {
    pb.LIMIT_PERIOD_DAY: rules.Period.DAY,
    pb.LIMIT_PERIOD_WEEK: rules.Period.WEEK,
    pb.LIMIT_PERIOD_MONTH: rules.Period.MONTH,
}
_COUNTRY = re.compile(r"^[A-Z]{2}$")


def verdict_message(stored: verdict_log.StoredVerdict) -> pb.Verdict:
    return pb.Verdict(
        name=f"verdicts/{stored.verdict_id}",
        verdict_id=str(stored.verdict_id),
        decision=_DECISION[stored.decision],
        reasons=[
            pb.Reason(reason=r["reason"], metadata=r.get("metadata", {})) for r in stored.reasons
        ],
        sequence=stored.seq,
        rule_version=stored.rule_version,
        config_version=stored.config_version,
        create_time=timestamp(stored.create_time),
    )


def _verdict(recorded: Recorded) -> pb.Verdict:
    return verdict_message(recorded.verdict)


def _required(field_name: str, value: str) -> str:
    return text_field(field_name, value).strip()


def _own_player(value: str) -> str:
    """The request's player_id, which a call through the edge may only name as its own."""
    player_id = _required("player_id", value)
    require_player(player_id)
    return player_id


def _country(field_name: str, value: str, *, required: bool = True) -> str:
    if not value and not required:
        return ""
    if not _COUNTRY.match(value):
        raise InvalidArgument(field_name, f"{field_name} must be an ISO 3166-1 alpha-2 code")
    return value


def applicant(person: pb.Person) -> rules.Applicant:
    d = person.birth_date
    try:
        birth = dt.date(d.year, d.month, d.day)
    except ValueError:
        raise InvalidArgument("person.birth_date", "birth_date is not a date") from None
    return rules.Applicant(
        given_name=_required("person.given_name", person.given_name),
        family_name=_required("person.family_name", person.family_name),
        birth_date=birth,
        email=_required("person.email", person.email),
        postcode=person.postcode.strip(),
        country=_country("person.country_code", person.country_code),
    )


E = TypeVar("E")


def _enum(mapping: Mapping[Any, E], value: int, field_name: str) -> E:
    try:
        return mapping[value]
    except KeyError:
        raise InvalidArgument(field_name, f"{field_name} is required") from None


def limit_message(limit: rules.LimitState, currency: str, cooling_off: dt.timedelta) -> pb.Limit:
    message = pb.Limit(
        kind={v: k for k, v in _KIND.items()}[limit.kind],
        period={v: k for k, v in _PERIOD.items()}[limit.period],
        update_time=timestamp(limit.update_time),
    )
    if limit.amount_minor is not None:
        message.amount.CopyFrom(
            money_pb2.Money(amount_minor=limit.amount_minor, currency_code=currency)
        )
    if limit.pending_minor is not None:
        message.pending_amount.CopyFrom(
            money_pb2.Money(amount_minor=limit.pending_minor, currency_code=currency)
        )
        confirmable = limit.confirmable_at(cooling_off)
        assert confirmable is not None
        message.pending_confirmable_time.CopyFrom(timestamp(confirmable))
    return message


def encode_excluded(
    event_id: str, player_id: str, exclusion: rules.Exclusion, _: uuid.UUID
) -> bytes:
    event = events_pb2.PlayerExcluded(
        event_id=event_id,
        player_id=player_id,
        kind=exclusion.kind,
        indefinite=exclusion.until is None,
    )
    if exclusion.until is not None:
        event.until_time.CopyFrom(timestamp(exclusion.until))
    return event.SerializeToString()


class ComplianceService(compliance_pb2_grpc.ComplianceServiceServicer):
    def __init__(
        self, compliance: Compliance, settings: ComplianceSettings, *, cases: AmlCases
    ) -> None:
        self._compliance = compliance
        self._settings = settings
        self._cases = cases
        self._signer: verdict_log.CheckpointSigner | None = None

    def _amount(self, money: money_pb2.Money) -> int:
        """The amount; its currency is checked against the player's jurisdiction where the
        player is known (in `decisions`)."""
        if money.amount_minor < 0:
            raise InvalidArgument("amount.amount_minor", "amount must not be negative")
        return money.amount_minor

    async def CheckRegistration(
        self, request: pb.CheckRegistrationRequest, context: grpc.aio.ServicerContext
    ) -> pb.CheckRegistrationResponse:
        recorded = await self._compliance.check_registration(
            applicant(request.person),
            _country("request_country_code", request.request_country_code, required=False),
            authenticated_caller(),
        )
        return pb.CheckRegistrationResponse(verdict=_verdict(recorded))

    async def EnrolPlayer(
        self, request: pb.EnrolPlayerRequest, context: grpc.aio.ServicerContext
    ) -> pb.EnrolPlayerResponse:
        recorded = await self._compliance.enrol(
            _required("player_id", request.player_id),
            applicant(request.person),
            authenticated_caller(),
        )
        return pb.EnrolPlayerResponse(verdict=_verdict(recorded))

    async def CheckAction(
        self, request: pb.CheckActionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CheckActionResponse:
        recorded = await self._compliance.check_action(
            _required("player_id", request.player_id),
            _enum(_ACTION, request.action, "action"),
            amount_minor=self._amount(request.amount),
            slots=request.product == pb.PRODUCT_SLOTS,
            request_country=_country("request_country_code", request.request_country_code),
            request_id=_required("request_id", request.request_id),
            caller=authenticated_caller(),
            currency=request.amount.currency_code,
        )
        return pb.CheckActionResponse(verdict=_verdict(recorded))

    async def UpdateVerification(
        self, request: pb.UpdateVerificationRequest, context: grpc.aio.ServicerContext
    ) -> pb.UpdateVerificationResponse:
        recorded = await self._compliance.update_verification(
            _required("player_id", request.player_id),
            name=request.name_verified,
            address=request.address_verified,
            birth_date=request.birth_date_verified,
            cdd_cleared=request.cdd_cleared,
            verified_by=_required("verified_by", request.verified_by),
            caller=authenticated_caller(),
            affordability_assessed=request.affordability_assessed,
        )
        return pb.UpdateVerificationResponse(verdict=_verdict(recorded))

    def _limit(self, limit: rules.LimitState, jurisdiction: rules.Jurisdiction | None) -> pb.Limit:
        config = jurisdiction.config if jurisdiction else self._settings.rules
        return limit_message(
            limit, config.currency, dt.timedelta(hours=config.limit_cooling_off_hours)
        )

    async def SetLimit(
        self, request: pb.SetLimitRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetLimitResponse:
        limit, recorded = await self._compliance.set_limit(
            _own_player(request.player_id),
            _enum(_KIND, request.kind, "kind"),
            _enum(_PERIOD, request.period, "period"),
            self._amount(request.amount),
            authenticated_caller(),
            currency=request.amount.currency_code,
        )
        return pb.SetLimitResponse(
            limit=self._limit(limit, recorded.jurisdiction), verdict=_verdict(recorded)
        )

    async def ConfirmLimitIncrease(
        self, request: pb.ConfirmLimitIncreaseRequest, context: grpc.aio.ServicerContext
    ) -> pb.ConfirmLimitIncreaseResponse:
        limit, recorded = await self._compliance.confirm_increase(
            _own_player(request.player_id),
            _enum(_KIND, request.kind, "kind"),
            _enum(_PERIOD, request.period, "period"),
            authenticated_caller(),
        )
        return pb.ConfirmLimitIncreaseResponse(
            limit=self._limit(limit, recorded.jurisdiction), verdict=_verdict(recorded)
        )

    async def ListLimits(
        self, request: pb.ListLimitsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListLimitsResponse:
        limits, jurisdiction = await self._compliance.limits(_own_player(request.player_id))
        return pb.ListLimitsResponse(limits=[self._limit(limit, jurisdiction) for limit in limits])

    async def Exclude(
        self, request: pb.ExcludeRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExcludeResponse:
        which = request.WhichOneof("length")
        exclusion, recorded = await self._compliance.exclude(
            _own_player(request.player_id),
            timeout_hours=request.timeout_hours if which == "timeout_hours" else None,
            self_exclusion_days=(
                request.self_exclusion_days if which == "self_exclusion_days" else None
            ),
            indefinite=which == "indefinite" and request.indefinite,
            caller=authenticated_caller(),
        )
        response = pb.ExcludeResponse(verdict=_verdict(recorded))
        if exclusion.until is not None:
            response.until_time.CopyFrom(timestamp(exclusion.until))
        return response

    async def ExplainVerdict(
        self, request: pb.ExplainVerdictRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExplainVerdictResponse:
        try:
            verdict_id = uuid.UUID(request.verdict_id)
        except ValueError:
            raise InvalidArgument("verdict_id", "verdict_id must be a UUID") from None
        stored = await self._compliance.explain(verdict_id)
        if stored is None:
            from services.runtime.errors import NotFound

            raise NotFound("VERDICT_NOT_FOUND", "no such verdict", {"verdict_id": str(verdict_id)})
        return pb.ExplainVerdictResponse(
            verdict=verdict_message(stored),
            player_id=stored.player_id or "",
            action=stored.action,
            inputs_json=json.dumps(stored.inputs, sort_keys=True),
            caller=stored.caller,
        )

    async def VerifyVerdictLog(
        self, request: pb.VerifyVerdictLogRequest, context: grpc.aio.ServicerContext
    ) -> pb.VerifyVerdictLogResponse:
        if self._signer is None:
            self._signer = verdict_log.CheckpointSigner(self._settings.signing_key_file)
        report, written = await self._compliance.verify_log(
            self._signer, self._settings.public_key_file, self._settings.checkpoint_dir
        )
        return pb.VerifyVerdictLogResponse(
            rows_checked=report.rows_checked,
            problems=[f"{p.kind} at {p.seq}: {p.detail}" for p in report.problems],
            checkpoint=str(written) if written else "",
        )

    # Rule flags.

    async def SetRuleFlag(
        self, request: pb.SetRuleFlagRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetRuleFlagResponse:
        flag, recorded, version = await self._compliance.set_rule_flag(
            _required("rule", request.rule),
            enabled=request.enabled,
            rollout_percent=(
                request.rollout_percent if request.HasField("rollout_percent") else 100
            ),
            countries=tuple(sorted({_country("country_codes", c) for c in request.country_codes})),
            operator_id=_required("operator_id", request.operator_id),
            reason=request.reason.strip()[:500],
            caller=authenticated_caller(),
        )
        return pb.SetRuleFlagResponse(
            flag=rule_flag_message(flag), verdict=_verdict(recorded), snapshot_version=version
        )

    async def ListRuleFlags(
        self, request: pb.ListRuleFlagsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRuleFlagsResponse:
        listed, version = await self._compliance.rule_flags()
        return pb.ListRuleFlagsResponse(
            flags=[rule_flag_message(f) for f in listed], snapshot_version=version
        )

    # Reality checks.

    async def SetRealityCheck(
        self, request: pb.SetRealityCheckRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetRealityCheckResponse:
        minutes, recorded = await self._compliance.set_reality_check(
            _own_player(request.player_id),
            request.interval_minutes,
            authenticated_caller(),
        )
        return pb.SetRealityCheckResponse(interval_minutes=minutes, verdict=_verdict(recorded))

    async def GetRealityCheck(
        self, request: pb.GetRealityCheckRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetRealityCheckResponse:
        if not request.HasField("session_start_time"):
            raise InvalidArgument("session_start_time", "session_start_time is required")
        check, jurisdiction = await self._compliance.reality_check(
            _own_player(request.player_id),
            request.session_start_time.ToDatetime(dt.UTC),
        )
        currency = jurisdiction.config.currency
        response = pb.GetRealityCheckResponse(
            interval_minutes=check.interval_minutes,
            session_start_time=timestamp(check.session_start),
            staked=money_pb2.Money(amount_minor=check.play.staked_minor, currency_code=currency),
            won=money_pb2.Money(amount_minor=check.play.won_minor, currency_code=currency),
            net_position=money_pb2.Money(amount_minor=check.play.net_minor, currency_code=currency),
            next_check_time=timestamp(check.next_check_time),
        )
        response.time_played.FromTimedelta(check.time_played)
        return response

    async def ListAmlAlerts(
        self, request: pb.ListAmlAlertsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAmlAlertsResponse:
        size = page_size(request.page_size)
        status = _ALERT_STATUS_NAME.get(request.status)
        if request.status and status is None:
            raise InvalidArgument("status", "unknown alert status")
        player = request.player_id.strip() or None
        filters = {"player": player, "status": status}
        after = decode_page_token(request.page_token, filters)
        before = None
        if after:
            try:
                before = (dt.datetime.fromisoformat(after[0]), uuid.UUID(after[1]))
            except (ValueError, IndexError):
                raise InvalidArgument("page_token", "page_token is corrupt") from None
        rows = await self._cases.list(
            player_id=player, status=status, before=before, limit=size + 1
        )
        page, more = rows[:size], len(rows) > size
        token = ""
        if more:
            last = page[-1]
            token = encode_page_token(filters, [last.opened_at.isoformat(), str(last.alert_id)])
        return pb.ListAmlAlertsResponse(
            alerts=[aml_alert_message(a) for a in page], next_page_token=token
        )

    async def CloseAmlAlert(
        self, request: pb.CloseAmlAlertRequest, context: grpc.aio.ServicerContext
    ) -> pb.CloseAmlAlertResponse:
        alert, verdict = await self._cases.close(
            _required("name", request.name),
            resolution=_required("resolution", request.resolution),
            operator_id=_required("operator_id", request.operator_id),
            caller=authenticated_caller(),
        )
        return pb.CloseAmlAlertResponse(
            alert=aml_alert_message(alert), verdict=verdict_message(verdict)
        )


def rule_flag_message(flag: flags.RuleFlag) -> pb.RuleFlag:
    message = pb.RuleFlag(
        rule=flag.rule,
        description=flags.REGISTRY[flag.rule].description,
        enabled=flag.enabled,
        rollout_percent=flag.rollout_percent,
        country_codes=list(flag.countries),
        version=flag.version,
        updated_by=flag.updated_by,
    )
    if flag.update_time is not None:
        message.update_time.CopyFrom(timestamp(flag.update_time))
    return message


def _jurisdictions(settings: ComplianceSettings) -> dict[str, rules.ComplianceConfig]:
    for country in settings.jurisdictions:
        if not _COUNTRY.match(country):
            raise ConfigError(
                f"compliance.jurisdictions.{country}: a jurisdiction is an ISO 3166-1"
                " alpha-2 country code"
            )
    return settings.jurisdictions


_ALERT_STATUS_NAME = {pb.AML_ALERT_STATUS_OPEN: "OPEN", pb.AML_ALERT_STATUS_CLOSED: "CLOSED"}
_ALERT_STATUS = {v: k for k, v in _ALERT_STATUS_NAME.items()}


def aml_alert_message(alert: AmlAlert) -> pb.AmlAlert:
    message = pb.AmlAlert(
        name=alert.name,
        player_id=alert.player_id,
        alert_id=str(alert.alert_id),
        rule=alert.rule,
        status=_ALERT_STATUS[alert.status],
        action=alert.action,
        evidence_json=json.dumps(alert.evidence, sort_keys=True),
        open_time=timestamp(alert.opened_at),
        update_time=timestamp(alert.updated_at),
        closed_by=alert.closed_by or "",
        resolution=alert.resolution or "",
    )
    if alert.closed_at is not None:
        message.close_time.CopyFrom(timestamp(alert.closed_at))
    return message


async def build(runtime: ServiceRuntime) -> None:
    settings = domain_config(runtime.config, ComplianceSettings)
    verdict_log.ensure_signing_key(settings.signing_key_file, settings.public_key_file)
    engine = runtime.database()
    register = SelfExclusionRegister(
        settings.register_url,
        settings.register_api_key_file,
        timeout=settings.register_timeout_seconds,
    )
    rule_flags = RuleFlags(engine, poll_seconds=settings.flags_poll_seconds)
    # Not ready until the flags have been read once: checks fail closed until then.
    runtime.readiness.add_probe("rule_flags", rule_flags.ready)
    fx = settings.converter()
    try:
        policy = Policy(settings.rules, _jurisdictions(settings), rule_flags, fx=fx)
    except UnconvertibleCurrency as exc:  # the settings refuse this already
        raise ConfigError(f"compliance.fx_to_eur: {exc}") from None
    compliance = Compliance(
        engine,
        register,
        encode_excluded,
        policy=policy,
        check_replay_seconds=settings.check_replay_seconds,
    )
    runtime.add_service(
        pb.DESCRIPTOR.services_by_name["ComplianceService"],
        ComplianceService(compliance, settings, cases=AmlCases(engine, settings.aml)),
        compliance_pb2_grpc.add_ComplianceServiceServicer_to_server,
    )
    runtime.add_background(compliance.checks)
    runtime.add_background(rule_flags)
    if settings.checkpoint_interval_seconds > 0:
        runtime.add_background(
            ChainCheckpointer(
                engine,
                SCHEMA,
                settings.signing_key_file,
                settings.checkpoint_dir,
                settings.checkpoint_interval_seconds,
            )
        )
    retention = dt.timedelta(days=settings.usage_retention_days)
    runtime.add_background(Pruner(engine, "compliance.prune_usage", retention))
    # Checks' requests (what answers a retry) are kept as long as the usage they counted.
    runtime.add_background(Pruner(engine, "compliance.prune_check_requests", retention))
    if settings.outbox_relay:
        for worker in outbox_workers(
            engine, "compliance", runtime.broker(), settings.outbox_retention_hours
        ):
            runtime.add_background(worker)
    if settings.monitoring:
        monitoring = Monitoring(
            engine,
            settings.aml,
            fx,
            # The checks' policy: one reading of which jurisdiction a player lives under.
            jurisdiction=lambda state: policy.jurisdiction(state.country).config,
            rule_enabled=rule_flags.enabled,
        )
        runtime.add_background(
            EventConsumer(
                monitoring_handler(monitoring),
                runtime.broker(),
                settings.monitoring_queue,
                [MONITORED_EVENTS],
                prefetch=settings.monitoring_prefetch,
            )
        )
