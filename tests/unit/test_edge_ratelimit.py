"""The GCRA arithmetic and the rate-limit configuration, on the local limiter with a
controlled clock (the Redis script runs the same steps; tests/edge/test_ratelimit.py checks
it against a real Redis)."""

from __future__ import annotations

import pytest

from casino.common.v1 import options_pb2
from edge.ratelimit import (
    ClassLimit,
    Decision,
    LocalGcra,
    RateLimitConfig,
    class_name,
)
from services.runtime.config import ConfigError, build


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_one_per_emission_interval() -> None:
    clock = Clock()
    gcra = LocalGcra(max_keys=100, clock=clock)
    interval = 1 / 50
    verdicts = [gcra.check("p1", interval, 50) for _ in range(51)]
    assert all(v.allowed for v in verdicts[:50])
    assert [v.remaining for v in verdicts[:3]] == [49, 48, 47]
    assert not verdicts[50].allowed
    assert verdicts[50].retry_after == pytest.approx(interval)
    # A refused request does not consume budget: after one interval exactly one more passes.
    clock.now += interval
    assert gcra.check("p1", interval, 50).allowed
    assert not gcra.check("p1", interval, 50).allowed
    # Idle for a second: the full burst is back.
    clock.now += 1.0
    assert sum(gcra.check("p1", interval, 50).allowed for _ in range(60)) == 50


def test_keys_have_separate_budgets() -> None:
    gcra = LocalGcra(max_keys=100, clock=Clock())
    for _ in range(5):
        gcra.check("a", 0.2, 5)
    assert not gcra.check("a", 0.2, 5).allowed
    assert gcra.check("b", 0.2, 5).allowed


def test_memory_is_bounded_by_forgetting_idle_keys_first() -> None:
    clock = Clock()
    gcra = LocalGcra(max_keys=3, clock=clock)
    gcra.check("idle", 0.001, 1)
    clock.now += 1
    for key in ("a", "b", "c"):
        gcra.check(key, 10.0, 5)
    assert len(gcra._tats) == 3
    assert "idle" not in gcra._tats


def test_headers_follow_the_ietf_draft() -> None:
    allowed = Decision(True, 50, 1, 49, 0.02, 0.0, "player_wallet", local=False)
    assert allowed.headers == {
        "RateLimit-Policy": '"player_wallet";q=50;w=1',
        "RateLimit": '"player_wallet";r=49;t=1',
    }
    refused = Decision(False, 12, 1, 0, 1.0, 0.08, "player_wallet-local", local=True)
    assert refused.headers["Retry-After"] == "1"  # whole seconds, rounded up, at least 1
    assert refused.headers["RateLimit-Policy"] == '"player_wallet-local";q=12;w=1'


def test_defaults_follow_the_brief_and_toml_overrides_one_class() -> None:
    config = build(
        RateLimitConfig,
        {"classes": {"PAYMENT": {"rate": 5, "burst": 2}}, "fallback_divisor": 8},
        "ratelimit",
        __import__("pathlib").Path("."),
    )
    limits = config.limits()
    assert limits["PAYMENT"] == ClassLimit(5, 2)
    assert limits["PLAYER_WALLET"] == ClassLimit(50, 50)
    assert limits["AUTH"].rate == 5
    assert limits["ADMIN"].rate == 20
    assert limits["PAYMENT_WEBHOOK"].rate == 100


@pytest.mark.parametrize(
    "data",
    [
        {"classes": {"LOBBY": {"rate": 5, "burst": 5}}},
        {"classes": {"CATALOG": {"rate": 0, "burst": 5}}},
        {"fallback_divisor": 0.5},  # looser than Redis: never
        {"classes": {"CATALOG": {"rate": 5, "burst": 5, "typo": 1}}},
    ],
)
def test_bad_configuration_is_refused(data: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        build(RateLimitConfig, data, "ratelimit", __import__("pathlib").Path("."))


def test_endpoint_class_from_proto_value_or_name() -> None:
    assert class_name(options_pb2.ENDPOINT_CLASS_PLAYER_WALLET) == "PLAYER_WALLET"
    assert class_name("ENDPOINT_CLASS_CATALOG") == "CATALOG"
    assert class_name("AUTH") == "AUTH"
    with pytest.raises(ValueError):
        class_name(options_pb2.ENDPOINT_CLASS_UNSPECIFIED)
