"""The compliance and wallet contracts as registration uses them: gRPC clients that map the
generated messages to domain values and upstream failures to the runtime's errors."""

from __future__ import annotations

import grpc

from casino.compliance.v1 import compliance_pb2, compliance_pb2_grpc
from casino.wallet.v1 import wallet_pb2, wallet_pb2_grpc
from services.identity.registration import Application, RegistrationVerdict
from services.runtime.errors import DependencyUnavailable

_RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def _person(application: Application) -> compliance_pb2.Person:
    birth = application.birth_date
    person = compliance_pb2.Person(
        given_name=application.given_name,
        family_name=application.family_name,
        email=application.email,
        postcode=application.postcode,
        country_code=application.country,
    )
    person.birth_date.year, person.birth_date.month = birth.year, birth.month
    person.birth_date.day = birth.day
    return person


class ComplianceClient:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = compliance_pb2_grpc.ComplianceServiceStub(channel)

    async def check_registration(self, application: Application) -> RegistrationVerdict:
        try:
            reply = await self._stub.CheckRegistration(
                compliance_pb2.CheckRegistrationRequest(
                    person=_person(application), request_country_code=application.request_country
                )
            )
        except grpc.aio.AioRpcError as exc:
            raise _upstream_error("compliance", exc) from None
        verdict = reply.verdict
        return RegistrationVerdict(
            allowed=verdict.decision == compliance_pb2.DECISION_ALLOW,
            reasons=[r.reason for r in verdict.reasons],
            verdict_id=verdict.verdict_id,
        )

    async def enrol(self, player_id: str, application: Application) -> None:
        try:
            await self._stub.EnrolPlayer(
                compliance_pb2.EnrolPlayerRequest(player_id=player_id, person=_person(application))
            )
        except grpc.aio.AioRpcError as exc:
            raise _upstream_error("compliance", exc) from None


class WalletClient:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = wallet_pb2_grpc.WalletServiceStub(channel)

    async def open_account(self, player_id: str, currency: str) -> None:
        try:
            await self._stub.OpenAccount(
                wallet_pb2.OpenAccountRequest(player_id=player_id, currency_code=currency)
            )
        except grpc.aio.AioRpcError as exc:
            raise _upstream_error("wallet", exc) from None


def _upstream_error(service: str, exc: grpc.aio.AioRpcError) -> Exception:
    """Unreachable or overloaded: UNAVAILABLE, retry with the same request_id (the steps
    done so far are kept and resumed). Anything else is a bug between contracts: INTERNAL,
    with the upstream's status in the log."""
    if exc.code() in _RETRYABLE:
        return DependencyUnavailable(service)
    return RuntimeError(f"{service} answered {exc.code().name}: {exc.details()}")
