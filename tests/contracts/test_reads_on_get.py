"""The contracts bind only reads to HTTP GET (RFC 9110's safe method). The edge relies on it:
a GET's upstream call starts before its rate-limit and revocation check has answered
(edge/app.py), which is harmless only for an operation that changes nothing a client could
see. AIP-131/132's Get and List methods are reads by their name; any other RPC bound to GET
is listed here with what makes it one, so a new one is a decision somebody wrote down."""

from __future__ import annotations

import importlib
import pkgutil

import casino
from edge.transcoding import bindings_for, load_contracts

READS_BY_CONTRACT = {
    "casino.echo.v1.EchoService.Ping": "answers with its payload; records nothing",
    "casino.echo.v1.EchoService.Mirror": "answers the request as decoded; records nothing",
}


def _get_bound_methods() -> set[str]:
    load_contracts()
    methods = set()
    for info in pkgutil.walk_packages(casino.__path__, "casino."):
        if not info.name.endswith("_pb2"):
            continue
        for service in importlib.import_module(info.name).DESCRIPTOR.services_by_name.values():
            for binding in bindings_for(service.full_name):
                if binding.http_method == "GET":
                    assert binding.safe
                    methods.add(binding.method.full_name)
    return methods


def test_every_rpc_bound_to_get_is_a_read() -> None:
    on_get = _get_bound_methods()
    assert "casino.wallet.v1.WalletService.GetBalance" in on_get
    not_reads = sorted(
        name
        for name in on_get
        if not name.rsplit(".", 1)[1].startswith(("Get", "List")) and name not in READS_BY_CONTRACT
    )
    assert not not_reads, f"bound to GET but not known to be reads: {not_reads}"
    assert set(READS_BY_CONTRACT) <= on_get  # no stale entry
