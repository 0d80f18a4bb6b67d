from __future__ import annotations

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool

from casino.common.v1 import options_pb2
from casino.echo.v1 import echo_pb2
from casino.wallet.v1 import wallet_pb2
from services.runtime.access import ContractError, access_policies


def test_policies_come_from_the_contract() -> None:
    policies = access_policies(echo_pb2.DESCRIPTOR.services_by_name["EchoService"])
    echo = policies["/casino.echo.v1.EchoService/Echo"]
    relay = policies["/casino.echo.v1.EchoService/RelayEcho"]
    assert echo.allowed_callers == {"edge", "games", "echo"}
    assert relay.allowed_callers == {"edge", "games"}
    assert echo.endpoint_class == options_pb2.ENDPOINT_CLASS_CATALOG
    assert echo.allows("games") and not echo.allows("wallet") and not echo.allows(None)


def _service(method_options: descriptor_pb2.MethodOptions | None, name: str):  # type: ignore[no-untyped-def]
    """A one-RPC service built at run time in the default pool (where the option lives)."""
    file = descriptor_pb2.FileDescriptorProto(name=f"{name}.proto", package=name, syntax="proto3")
    file.message_type.add(name="Req")
    method = file.service.add(name="Svc").method.add(
        name="Do", input_type=f".{name}.Req", output_type=f".{name}.Req"
    )
    if method_options is not None:
        method.options.CopyFrom(method_options)
    pool = descriptor_pool.Default()
    pool.Add(file)
    return pool.FindServiceByName(f"{name}.Svc")


def test_rpc_without_access_option_stops_the_service_from_starting() -> None:
    with pytest.raises(ContractError, match=r"/t1.Svc/Do has no \(casino.common.v1.access\)"):
        access_policies(_service(None, "t1"))


def test_unknown_identity_in_allowed_callers_is_a_contract_error() -> None:
    options = descriptor_pb2.MethodOptions()
    options.Extensions[options_pb2.access].allowed_callers.append("walet")
    with pytest.raises(ContractError, match="unknown caller"):
        access_policies(_service(options, "t2"))


def test_the_edge_reaches_an_admin_rpc_only_for_an_operator() -> None:
    policies = access_policies(wallet_pb2.DESCRIPTOR.services_by_name["WalletService"])
    reconcile = policies["/casino.wallet.v1.WalletService/Reconcile"]
    balance = policies["/casino.wallet.v1.WalletService/GetBalance"]
    assert reconcile.admin and not balance.admin
    # The edge: an admin RPC for an operator it authenticated, never without one (a player's
    # call); a player's RPC never for an operator.
    assert reconcile.allows("edge", operator=True)
    assert not reconcile.allows("edge")
    assert balance.allows("edge")
    assert not balance.allows("edge", operator=True)
    # The back office and reporting call directly, as ever; naming an operator is not theirs.
    assert reconcile.allows("backoffice") and reconcile.allows("reporting")
    assert not reconcile.allows("backoffice", operator=True)
    assert not reconcile.allows("games")
