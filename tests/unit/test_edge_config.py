"""The edge's own settings: what it refuses to start with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge.app import check_token_realms
from edge.auth import TokenVerifierConfig
from edge.config import EdgeSettings
from edge.operators import OperatorTokenConfig
from services.runtime.config import ConfigError, build


def settings(**edge: Any) -> EdgeSettings:
    return build(EdgeSettings, edge, "edge", Path("."))


def test_an_admin_listener_must_name_the_networks_it_serves() -> None:
    # Left out, or empty: the admin listener would serve every source, the back office on
    # the internet. The edge refuses to start instead.
    with pytest.raises(ConfigError, match=r"admin\.allowed_networks"):
        settings(listeners={"public": {"port": 8080}})
    with pytest.raises(ConfigError, match=r"admin\.allowed_networks"):
        settings(listeners={"admin": {"port": 8082, "allowed_networks": []}})
    named = settings(listeners={"admin": {"port": 8082, "allowed_networks": ["10.0.0.0/8"]}})
    assert named.listener("admin").allowed_networks == ["10.0.0.0/8"]


def test_a_listener_network_that_is_not_a_cidr_is_refused() -> None:
    with pytest.raises(ConfigError, match="not a network"):
        settings(listeners={"admin": {"allowed_networks": ["10.0.0.0/33"]}})


@pytest.mark.parametrize(
    "limits",
    [
        {"max_connections": 0},
        {"max_connections_per_address": 0},
        {"max_connections": 100, "max_connections_per_address": 101},
    ],
)
def test_connection_limits_must_be_positive_and_per_address_within_the_total(
    limits: dict[str, int],
) -> None:
    admin = {"allowed_networks": ["10.0.0.0/8"]}
    with pytest.raises(ConfigError, match="max_connections"):
        settings(listeners={"admin": admin, "public": limits})


def test_operator_tokens_are_a_realm_of_their_own() -> None:
    # Players' and operators' tokens must never pass for one another: another key directory,
    # issuer and audience, or the edge does not start.
    players = TokenVerifierConfig(Path("/keys/identity"))
    check_token_realms(players, OperatorTokenConfig(Path("/keys/operators")))
    check_token_realms(players, OperatorTokenConfig())  # none: no operator is authenticated
    for operators in (
        OperatorTokenConfig(Path("/keys/identity")),
        OperatorTokenConfig(Path("/keys/operators"), issuer=players.issuer),
        OperatorTokenConfig(Path("/keys/operators"), audience=players.audience),
    ):
        with pytest.raises(ConfigError, match="operator_auth"):
            check_token_realms(players, operators)


def test_operator_token_settings() -> None:
    def operator_auth(**table: Any) -> OperatorTokenConfig:
        return build(OperatorTokenConfig, table, "edge.operator_auth", Path("/etc/edge"))

    config = operator_auth(
        public_key_dir="keys",
        required_roles={"casino.wallet.v1.WalletService/AdjustBalance": ["wallet-adjuster"]},
    )
    assert config.public_key_dir == Path("/etc/edge/keys")
    assert config.max_lifetime_seconds == 900
    with pytest.raises(ConfigError, match="required_roles"):
        operator_auth(required_roles={"casino.wallet.v1.WalletService/AdjustBalance": []})
    with pytest.raises(ConfigError, match="max_lifetime_seconds"):
        operator_auth(max_lifetime_seconds=0)
    with pytest.raises(ConfigError, match="unknown key"):
        operator_auth(public_key_dirs="keys")
