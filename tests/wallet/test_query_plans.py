"""The posting path reaches accounts by their whole primary key, whatever the table's size.

A batch names its accounts as arrays of (player, currency). Compared with the wrong array
type the currency half of the key is unusable and the planner scans and hashes the whole
accounts table on every batch: correct results, cost growing with every player ever opened
(4 ms per batch at 12,000 accounts in the benchmark database). The planner is told not to
scan sequentially, so on a small test table only a statement that *can* use the key
passes; each must then use it for both key columns."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import create_engine, text

from services.runtime.process import ServiceProcess
from services.wallet import store
from tests.wallet.conftest import wallet_role_dsn


def _scans_of(plan: dict[str, Any], relation: str) -> Iterator[dict[str, Any]]:
    if plan.get("Relation Name") == relation and plan["Node Type"] != "ModifyTable":
        yield plan  # a scan (the table an UPDATE writes is named by its ModifyTable too)
    for child in plan.get("Plans", []):
        yield from _scans_of(child, relation)


def _accounts_scans(statement: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
    engine = create_engine(wallet_role_dsn().replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL enable_seqscan = off"))
            (document,) = conn.execute(  # psycopg hands the JSON plan back parsed
                text(f"EXPLAIN (FORMAT JSON) {statement.text}"), params
            ).scalar_one()
    finally:
        engine.dispose()
    return list(_scans_of(document["Plan"], "accounts"))


def _assert_whole_key(scans: list[dict[str, Any]]) -> None:
    assert scans, "the statement does not read wallet.accounts"
    for scan in scans:
        assert scan["Node Type"] in ("Index Scan", "Index Only Scan"), scan["Node Type"]
        assert scan["Index Name"] == "accounts_pkey"
        condition = scan["Index Cond"]
        assert "player_id" in condition and "currency" in condition, condition


def test_locking_a_batch_of_accounts_uses_the_whole_primary_key(wallet: ServiceProcess) -> None:
    # (the wallet fixture: a running wallet, so its schema is migrated)
    scans = _accounts_scans(
        store._LOCK_ACCOUNTS, {"players": ["p-1", "p-2"], "currencies": ["EUR", "GBP"]}
    )
    _assert_whole_key(scans)


def test_moving_a_batch_of_accounts_uses_the_whole_primary_key(wallet: ServiceProcess) -> None:
    params = {
        "txs": "[]",
        "entries": "[]",
        "events": "[]",
        "a_players": ["p-1"],
        "a_currencies": ["EUR"],
        "a_posted": [1],
        "a_reserved": [0],
        "a_sequences": [1],
        "a_hashes": [b"\x00" * 32],
    }
    _assert_whole_key(_accounts_scans(store._WRITE_POSTINGS, params))
