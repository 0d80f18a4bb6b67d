"""The edge's own settings: what it refuses to start with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge.config import EdgeSettings
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
