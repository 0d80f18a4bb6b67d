"""Caller authorisation read from the contract: the `casino.common.v1.access` option of each
RPC names the service identities allowed to call it."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.descriptor import ServiceDescriptor

from casino.common.v1 import options_pb2
from services.runtime.identity import SERVICE_NAMES


class ContractError(RuntimeError):
    """The contract is not fit to serve (an RPC without an access policy, an unknown caller)."""


@dataclass(frozen=True)
class MethodAccess:
    method: str  # "/package.Service/Method"
    allowed_callers: frozenset[str]
    endpoint_class: int  # casino.common.v1.EndpointClass

    def allows(self, caller: str | None) -> bool:
        return caller is not None and caller in self.allowed_callers


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
