"""The ledger in the database: append-only by grant and by trigger, tamper-evident by hash
chain, isolated by role, and keyed by player for distribution."""

from __future__ import annotations

import grpc
import psycopg
import pytest

from casino.wallet.v1 import wallet_pb2 as w
from tests.wallet.conftest import admin_dsn, eur, new_id, wallet_role_dsn


async def _player_with_history(clients, player) -> str:
    p = await player(1000)
    placed = w.PlaceBetRequest(
        request_id=new_id("b"),
        player_id=p,
        amount=eur(100),
        round_id=new_id("r"),
        game_id="dice",
        provider="inhouse",
    )
    await clients.games.PlaceBet(placed)
    await clients.games.SettleWin(
        w.SettleWinRequest(
            request_id=new_id("w"),
            player_id=p,
            amount=eur(300),
            round_id=placed.round_id,
            bet_request_id=placed.request_id,
        )
    )
    return p


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE wallet.entries SET amount = amount + 1 WHERE player_id = %s",
        "DELETE FROM wallet.entries WHERE player_id = %s",
        "UPDATE wallet.transactions SET amount = 0 WHERE player_id = %s",
        "DELETE FROM wallet.transactions WHERE player_id = %s",
    ],
)
async def test_wallet_role_cannot_rewrite_history(clients, player, statement) -> None:
    p = await _player_with_history(clients, player)
    with (
        psycopg.connect(wallet_role_dsn()) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(statement, [p])


async def test_trigger_refuses_rewrites_even_by_the_table_owner(clients, player) -> None:
    p = await _player_with_history(clients, player)
    with psycopg.connect(admin_dsn()) as conn:
        for statement in (
            "UPDATE wallet.entries SET amount = 0 WHERE player_id = %s",
            "DELETE FROM wallet.entries WHERE player_id = %s",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                conn.execute(statement, [p])
            conn.rollback()
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute("TRUNCATE wallet.entries")


def _tamper(sql: str, params: list[object]) -> None:
    """What a superuser with the triggers switched off could do."""
    with psycopg.connect(admin_dsn()) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(sql, params)


async def _discrepancies(clients, p: str) -> list[tuple[str, int]]:
    report = await clients.backoffice.Reconcile(
        w.ReconcileRequest(player_id=p, currency_code="EUR")
    )
    return [(d.kind, d.sequence) for d in report.discrepancies]


async def test_reconcile_is_clean_for_an_untouched_account(clients, player) -> None:
    p = await _player_with_history(clients, player)
    assert await _discrepancies(clients, p) == []


async def test_superuser_changing_an_amount_is_reported(clients, player) -> None:
    p = await _player_with_history(clients, player)
    _tamper(
        "UPDATE wallet.entries SET amount = amount + 1000, balance_after = balance_after"
        " + 1000 WHERE player_id = %s AND sequence = 2 AND leg = 0",
        [p],
    )
    found = await _discrepancies(clients, p)
    assert ("CHAIN_BROKEN", 2) in found
    assert any(kind == "BALANCE_MISMATCH" for kind, _ in found)


async def test_superuser_rewriting_an_entry_consistently_still_breaks_the_chain(
    clients, player
) -> None:
    # Change a stored byte that no sum depends on: only the hash chain can see it.
    p = await _player_with_history(clients, player)
    _tamper(
        "UPDATE wallet.entries SET request_id = 'forged' WHERE player_id = %s AND sequence = 1", [p]
    )
    assert ("CHAIN_BROKEN", 1) in await _discrepancies(clients, p)


async def test_superuser_deleting_an_entry_is_reported(clients, player) -> None:
    p = await _player_with_history(clients, player)
    _tamper("DELETE FROM wallet.entries WHERE player_id = %s AND sequence = 2", [p])
    found = {kind for kind, _ in await _discrepancies(clients, p)}
    assert {"SEQUENCE_GAP", "BALANCE_MISMATCH"} <= found


async def test_superuser_changing_the_house_leg_is_reported(clients, player) -> None:
    p = await _player_with_history(clients, player)
    _tamper(
        "UPDATE wallet.entries SET amount = amount - 5 WHERE player_id = %s"
        " AND sequence = 3 AND leg = 1",
        [p],
    )
    assert ("CHAIN_BROKEN", 3) in await _discrepancies(clients, p)
    everything = await clients.backoffice.Reconcile(w.ReconcileRequest())
    assert "CURRENCY_NOT_BALANCED" in {d.kind for d in everything.discrepancies}


async def test_superuser_editing_the_cached_balance_is_reported(clients, player) -> None:
    p = await _player_with_history(clients, player)
    _tamper("UPDATE wallet.accounts SET posted = posted + 1 WHERE player_id = %s", [p])
    assert ("BALANCE_MISMATCH", 3) in await _discrepancies(clients, p)


async def test_superuser_raising_a_bets_recorded_amount_is_reported(clients, player) -> None:
    # A rollback refunds the amount the journal recorded: forging it forges the refund.
    p = await _player_with_history(clients, player)
    _tamper(
        "UPDATE wallet.transactions SET amount = amount - 900 WHERE player_id = %s"
        " AND kind = 'BET'",
        [p],
    )
    assert ("JOURNAL_MISMATCH", 2) in await _discrepancies(clients, p)


async def test_superuser_turning_a_refusal_into_an_applied_bet_is_reported(clients, player) -> None:
    # An applied bet with no entry is one a win could then pay on.
    p = await player(10)
    refused = w.PlaceBetRequest(
        request_id=new_id("b"),
        player_id=p,
        amount=eur(500),
        round_id=new_id("r"),
        game_id="dice",
        provider="inhouse",
    )
    with pytest.raises(grpc.aio.AioRpcError):
        await clients.games.PlaceBet(refused)
    assert await _discrepancies(clients, p) == []
    _tamper(
        "UPDATE wallet.transactions SET outcome = 'applied', refusal_reason = NULL"
        " WHERE player_id = %s AND request_id = %s",
        [p, refused.request_id],
    )
    assert ("JOURNAL_WITHOUT_ENTRY", 0) in await _discrepancies(clients, p)


async def test_superuser_deleting_a_journal_row_is_reported(clients, player) -> None:
    p = await _player_with_history(clients, player)
    _tamper("DELETE FROM wallet.transactions WHERE player_id = %s AND kind = 'WIN'", [p])
    assert ("JOURNAL_MISMATCH", 3) in await _discrepancies(clients, p)


def test_other_services_cannot_read_wallet_tables() -> None:
    from tests.conftest import SECRETS, TEST_DATABASE

    password = (SECRETS / "postgres" / "casino_echo").read_text()
    dsn = f"postgresql://casino_echo:{password}@127.0.0.1:5432/{TEST_DATABASE}"
    with psycopg.connect(dsn) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT count(*) FROM wallet.entries")


@pytest.mark.parametrize("service", ["wallet", "compliance"])
def test_service_roles_never_jit_compile(service: str) -> None:
    """A misestimated plan crossing jit_above_cost spends hundreds of milliseconds
    compiling a one-millisecond statement: the service roles have JIT off."""
    from tests.conftest import SECRETS, TEST_DATABASE

    password = (SECRETS / "postgres" / f"casino_{service}").read_text()
    dsn = f"postgresql://casino_{service}:{password}@127.0.0.1:5432/{TEST_DATABASE}"
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SHOW jit").fetchone() == ("off",)


def test_every_wallet_table_is_keyed_by_player_first() -> None:
    with psycopg.connect(admin_dsn()) as conn:
        rows = conn.execute(
            """
            SELECT c.relname, a.attname
            FROM pg_index i
            JOIN pg_class c ON c.oid = i.indrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0]
            WHERE n.nspname = 'wallet' AND i.indisprimary AND c.relname <> 'alembic_version'
            """
        ).fetchall()
    leading = dict(rows)
    assert set(leading) == {"accounts", "transactions", "entries", "outbox"}
    assert leading == {
        "accounts": "player_id",
        "transactions": "player_id",
        "entries": "player_id",
        "outbox": "shard_key",
    }
