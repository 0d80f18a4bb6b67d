"""Caller authorisation read from the contract: the `casino.common.v1.access` option of each
RPC names the service identities allowed to call it.

The edge is one caller with two kinds of principal: players on its public listener, back-office
operators on its admin listener. An ADMIN RPC listing `edge` is open to it only for an operator
it authenticated (named in x-casino-operator-id), so a player's token can never reach one; and
the edge names an operator on ADMIN RPCs only."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.descriptor import ServiceDescriptor

from casino.common.v1 import options_pb2
from services.runtime.call import EDGE_IDENTITY
from services.runtime.identity import SERVICE_NAMES


class ContractError(RuntimeError):
    """The contract is not fit to serve (an RPC without an access policy, an unknown caller)."""


@dataclass(frozen=True)
class MethodAccess:
    method: str  # "/package.Service/Method"
    allowed_callers: frozenset[str]
    endpoint_class: int  # casino.common.v1.EndpointClass

    @property
    def admin(self) -> bool:
        return self.endpoint_class == options_pb2.ENDPOINT_CLASS_ADMIN

    def allows(self, caller: str | None, *, operator: bool = False) -> bool:
        """Whether `caller` may call this RPC; `operator`: the call names an operator the edge
        authenticated."""
        if caller is None or caller not in self.allowed_callers:
            return False
        if caller == EDGE_IDENTITY:
            return operator == self.admin
        return not operator


def method_path(service: ServiceDescriptor, method_name: str) -> str:
    return f"/{service.full_name}/{method_name}"


def access_policies(service: ServiceDescriptor) -> dict[str, MethodAccess]:
    """Every RPC of a service with its policy. Fails closed: an RPC with no `access` option,
    or naming an identity the platform does not issue, stops the service from starting."""
    policies = {}
    for method in service.methods:
        options = method.GetOptions()
        path = method_path(service, method.name)
        if not options.HasExtension(options_pb2.access):
            raise ContractError(f"{path} has no (casino.common.v1.access) option")
        access = options.Extensions[options_pb2.access]
        unknown = set(access.allowed_callers) - set(SERVICE_NAMES)
        if unknown:
            raise ContractError(f"{path} allows unknown caller(s) {sorted(unknown)}")
        policies[path] = MethodAccess(
            path, frozenset(access.allowed_callers), access.endpoint_class
        )
    return policies
