"""Counted usage is kept as long as any limit can look at it and then pruned: the service's
pruner deletes what is past `usage_retention_days`, the database function never deletes a
row younger than 35 days whatever it is asked, and the role cannot delete rows itself."""

from __future__ import annotations

import datetime as dt
import uuid

import psycopg
import pytest

from services.compliance.server import ComplianceSettings
from services.runtime import db
from services.runtime.config import ConfigError, DatabaseConfig
from services.runtime.process import ServiceProcess
from services.runtime.retention import Pruner
from tests.conftest import SECRETS, TEST_DATABASE, database_url


def _dsn(role: str) -> str:
    password = (SECRETS / "postgres" / role).read_text()
    return f"postgresql://{role}:{password}@127.0.0.1:5432/{TEST_DATABASE}"


async def _left_after_pruning(function: str, table: str, player: str) -> set[str]:
    """Run the service's pruner with `function` asked to keep one day; the request ids of
    `player`'s rows left in `table` (which are then removed)."""
    engine = db.create_engine(
        DatabaseConfig(
            url=database_url("compliance"),
            password_file=SECRETS / "postgres" / "casino_compliance",
        ),
        "test",
    )
    try:
        await Pruner(engine, function, dt.timedelta(days=1)).prune()
    finally:
        await engine.dispose()
    with psycopg.connect(_dsn("casino_admin")) as conn:
        query = f"SELECT request_id FROM {table} WHERE player_id = %s"
        left = {row[0] for row in conn.execute(query, (player,))}
        conn.execute(f"DELETE FROM {table} WHERE player_id = %s", (player,))
    return left


async def test_usage_past_retention_is_pruned_and_never_younger_than_35_days(
    compliance: ServiceProcess,  # a running compliance: its schema is migrated
) -> None:
    player = f"retention-{uuid.uuid4().hex[:8]}"
    ages = {"d10": 10, "d34": 34, "d40": 40, "d100": 100}
    with psycopg.connect(_dsn("casino_admin"), autocommit=True) as conn:
        for request_id, days in ages.items():
            conn.execute(
                "INSERT INTO compliance.usage (player_id, request_id, action, amount_minor, at)"
                " VALUES (%s, %s, 'BET', 100, now() - %s)",
                (player, request_id, dt.timedelta(days=days)),
            )
    # Asked to keep one day: the function still keeps 35.
    left = await _left_after_pruning("compliance.prune_usage", "compliance.usage", player)
    assert left == {"d10", "d34"}


def test_the_compliance_role_cannot_delete_usage_itself(compliance: ServiceProcess) -> None:
    with (
        psycopg.connect(_dsn("casino_compliance")) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("DELETE FROM compliance.usage WHERE player_id = 'nobody'")


def test_a_retention_shorter_than_the_limit_periods_is_refused_at_start() -> None:
    with pytest.raises(ConfigError, match="usage_retention_days"):
        ComplianceSettings(usage_retention_days=30, fx_to_eur={"GBP": "1.17"})


async def test_check_requests_past_retention_are_pruned_and_never_younger_than_35_days(
    compliance: ServiceProcess,
) -> None:
    player = f"retention-{uuid.uuid4().hex[:8]}"
    ages = {"d10": 10, "d34": 34, "d40": 40, "d100": 100}
    with psycopg.connect(_dsn("casino_admin"), autocommit=True) as conn:
        for request_id, days in ages.items():
            conn.execute(
                "INSERT INTO compliance.check_requests (player_id, request_id, action,"
                " amount_minor, currency, verdict_id, at)"
                " VALUES (%s, %s, 'BET', 100, 'GBP', %s, now() - %s)",
                (player, request_id, uuid.uuid4(), dt.timedelta(days=days)),
            )
    left = await _left_after_pruning(
        "compliance.prune_check_requests", "compliance.check_requests", player
    )
    assert left == {"d10", "d34"}
