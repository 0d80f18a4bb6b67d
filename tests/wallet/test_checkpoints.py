"""Signed checkpoints of the accounts' hash chains, written by the wallet itself on an
interval, expose what the chains alone cannot: a superuser who rewrites an entry and
recomputes every later hash and the account row, or cuts an account's tail and moves its
head back, and a checkpoint file altered afterwards. In a database of its own (the tampering
would break every later Reconcile of the shared test database)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import tests.conftest
from casino.wallet.v1 import wallet_pb2
from services.runtime import dbsetup, verdict_log
from services.runtime.process import ServiceProcess
from services.wallet import checkpoints
from services.wallet.ledger import Entry, Kind, chain_hash
from tests.conftest import SECRETS, TEST_DATABASE, Launcher, Pki
from tests.wallet.conftest import WalletClients, eur, new_id, wallet_extra

DATABASE = f"{TEST_DATABASE}_wallet_checkpoints"
SUPERUSER = f"postgresql://postgres@127.0.0.1:5432/{DATABASE}"  # trust on loopback


@pytest.fixture(scope="module")
def own_database() -> Iterator[str]:
    dbsetup.migrate(DATABASE, ["wallet"], SECRETS, recreate=True)
    yield DATABASE
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


@pytest.fixture
def checkpointing(
    tmp_path: Path, pki: Pki, own_database: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ServiceProcess]:
    # The launcher names the session's test database; this wallet gets its own.
    monkeypatch.setattr(tests.conftest, "TEST_DATABASE", own_database)
    process = Launcher(tmp_path, pki, [])("wallet", extra=wallet_extra(checkpoints=tmp_path))
    monkeypatch.undo()
    yield process
    process.terminate()


@pytest.fixture
async def stubs(checkpointing: ServiceProcess, pki: Pki) -> AsyncIterator[WalletClients]:
    c = WalletClients(checkpointing.ports["port"], pki)
    yield c
    await c.close()


def directory(tmp_path: Path) -> Path:
    return tmp_path / "checkpoints"


def files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.name.startswith("checkpoint-")}


def content(path: Path) -> dict[str, Any]:
    loaded = json.loads(path.read_text())
    assert isinstance(loaded, dict)
    return loaded


async def checkpoint_of(folder: Path, player: str, sequence: int, timeout: float = 15.0) -> Path:
    """The checkpoint file recording this player's EUR head at `sequence`."""

    def find() -> Path | None:
        for name in sorted(files(folder) if folder.exists() else ()):
            for head in content(folder / name)["heads"]:
                if (head["player_id"], head["currency"], head["last_sequence"]) == (
                    player,
                    "EUR",
                    sequence,
                ):
                    return folder / name
        return None

    deadline = time.monotonic() + timeout
    while (found := find()) is None:
        assert time.monotonic() < deadline, f"no checkpoint of {player} at {sequence}"
        await asyncio.sleep(0.05)
    return found


async def funded(stubs: WalletClients, deposits: int) -> str:
    player = new_id("player")
    await stubs.identity.OpenAccount(
        wallet_pb2.OpenAccountRequest(player_id=player, currency_code="EUR")
    )
    for _ in range(deposits):
        await stubs.payments.Deposit(
            wallet_pb2.DepositRequest(request_id=new_id("dep"), player_id=player, amount=eur(1000))
        )
    return player


async def kinds_for(stubs: WalletClients, account: str) -> list[tuple[str, int]]:
    """What a full-ledger Reconcile reports about one account (or checkpoint file)."""
    report = await stubs.backoffice.Reconcile(wallet_pb2.ReconcileRequest())
    return sorted((d.kind, d.sequence) for d in report.discrepancies if d.account == account)


async def plain_chain_check(stubs: WalletClients, player: str) -> list[str]:
    """A one-account Reconcile: balances, journal and hash chain, no checkpoints."""
    report = await stubs.backoffice.Reconcile(
        wallet_pb2.ReconcileRequest(player_id=player, currency_code="EUR")
    )
    return [d.kind for d in report.discrepancies]


def rechain(conn: psycopg.Connection[Any], player: str) -> None:
    """Recompute, as the wallet would have, every running balance and hash of the player's EUR
    chain and its account row: what a careful superuser does after editing history."""
    rows = conn.execute(
        "SELECT p.sequence, p.request_id, p.kind, p.amount, p.reserved_delta, p.create_time,"
        " h.account FROM wallet.entries p LEFT JOIN wallet.entries h ON h.player_id ="
        " p.player_id AND h.currency = p.currency AND h.sequence = p.sequence AND h.leg = 1"
        " WHERE p.player_id = %s AND p.currency = 'EUR' AND p.leg = 0 ORDER BY p.sequence",
        (player,),
    ).fetchall()
    posted = reserved = 0
    prev = bytes(32)
    for sequence, request_id, kind, amount, reserved_delta, create_time, house in rows:
        posted, reserved = posted + amount, reserved + reserved_delta
        digest = chain_hash(
            Entry(
                player, "EUR", sequence, request_id, Kind(kind), amount, reserved_delta,
                posted, reserved, house, create_time, prev,
            )
        )  # fmt: skip
        conn.execute(
            "UPDATE wallet.entries SET balance_after = %s, reserved_after = %s, prev_hash = %s,"
            " hash = %s WHERE player_id = %s AND currency = 'EUR' AND sequence = %s AND leg = 0",
            (posted, reserved, prev, digest, player, sequence),
        )
        prev = digest
    conn.execute(
        "UPDATE wallet.accounts SET posted = %s, reserved = %s, last_sequence = %s,"
        " last_hash = %s WHERE player_id = %s AND currency = 'EUR'",
        (posted, reserved, len(rows), prev, player),
    )


async def test_checkpoints_are_written_without_a_call_and_only_when_a_head_moved(
    stubs: WalletClients, checkpointing: ServiceProcess, tmp_path: Path
) -> None:
    folder = directory(tmp_path)
    player = await funded(stubs, 2)
    first = await checkpoint_of(folder, player, 2)
    keys = checkpoints.keyring([tmp_path / "wallet-signing.pub"])
    parsed = checkpoints.parse_checkpoint(first.read_bytes(), keys)
    assert parsed.heads  # signed, and its body is the one signed

    before = files(folder)
    await asyncio.sleep(1.0)  # five intervals with nothing posted: nothing written
    assert files(folder) == before

    await stubs.payments.Deposit(
        wallet_pb2.DepositRequest(request_id=new_id("dep"), player_id=player, amount=eur(5))
    )
    second = await checkpoint_of(folder, player, 3)
    newer = checkpoints.parse_checkpoint(second.read_bytes(), keys)
    # Only the head that moved, chained to the file before it.
    assert [h[:3] for h in newer.heads] == [(player, "EUR", 3)]
    previous = verdict_log.checkpoint_path(folder, newer.seq - 1).read_bytes()
    assert newer.previous == checkpoints.hashlib.sha256(previous).digest()

    report = await stubs.backoffice.Reconcile(wallet_pb2.ReconcileRequest())
    assert report.checkpoints_checked == len(files(folder)) >= 2
    assert report.checkpoint_heads_checked >= 2
    assert not [d for d in report.discrepancies if "checkpoint" in d.kind.lower()]


async def test_rewritten_entry_with_recomputed_chain_is_a_checkpoint_mismatch(
    stubs: WalletClients, checkpointing: ServiceProcess, tmp_path: Path
) -> None:
    player = await funded(stubs, 3)
    await checkpoint_of(directory(tmp_path), player, 3)

    # A superuser, bypassing the triggers, turns the second deposit of 1000 into 100 (both
    # legs and the journal, so every sum still holds) and recomputes the chain after it.
    with psycopg.connect(SUPERUSER) as conn:
        conn.execute("SET session_replication_role = replica")
        (request_id,) = conn.execute(
            "SELECT request_id FROM wallet.entries WHERE player_id = %s AND sequence = 2"
            " AND leg = 0",
            (player,),
        ).fetchone() or (None,)
        conn.execute(
            "UPDATE wallet.entries SET amount = CASE leg WHEN 0 THEN 100 ELSE -100 END"
            " WHERE player_id = %s AND currency = 'EUR' AND sequence = 2",
            (player,),
        )
        conn.execute(
            "UPDATE wallet.transactions SET amount = 100 WHERE player_id = %s AND request_id = %s",
            (player, request_id),
        )
        rechain(conn, player)

    assert await plain_chain_check(stubs, player) == []  # the chain alone cannot tell
    assert await kinds_for(stubs, f"players/{player}/accounts/EUR") == [
        (checkpoints.CHECKPOINT_MISMATCH, 3)
    ]


async def test_cut_tail_with_head_moved_back_is_a_checkpoint_mismatch(
    stubs: WalletClients, checkpointing: ServiceProcess, tmp_path: Path
) -> None:
    player = await funded(stubs, 3)
    await checkpoint_of(directory(tmp_path), player, 3)

    # A superuser drops the last deposit (entries and journal) and moves the head back.
    with psycopg.connect(SUPERUSER) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(
            "DELETE FROM wallet.transactions t USING wallet.entries e WHERE e.player_id = %s"
            " AND e.sequence = 3 AND e.leg = 0 AND t.player_id = e.player_id"
            " AND t.request_id = e.request_id",
            (player,),
        )
        conn.execute(
            "DELETE FROM wallet.entries WHERE player_id = %s AND currency = 'EUR' AND sequence = 3",
            (player,),
        )
        rechain(conn, player)

    assert await plain_chain_check(stubs, player) == []
    report = await stubs.backoffice.Reconcile(wallet_pb2.ReconcileRequest())
    found = [d for d in report.discrepancies if d.account == f"players/{player}/accounts/EUR"]
    assert [(d.kind, d.sequence, d.actual) for d in found] == [
        (checkpoints.CHECKPOINT_MISMATCH, 3, "no entry")
    ]


async def test_tampered_checkpoint_file_is_reported_and_never_extended(
    stubs: WalletClients, checkpointing: ServiceProcess, tmp_path: Path
) -> None:
    folder = directory(tmp_path)
    player = await funded(stubs, 1)
    path = await checkpoint_of(folder, player, 1)
    await asyncio.sleep(0.5)  # let the writer settle on this file as its latest
    latest = verdict_log.latest_checkpoint(folder)
    assert latest is not None

    # Someone with write access to the directory hides a head from the latest checkpoint.
    altered = content(latest)
    altered["heads"] = [h for h in altered["heads"] if h["player_id"] != player] or [
        {**altered["heads"][0], "last_sequence": 99}
    ]
    latest.write_text(json.dumps(altered, sort_keys=True, indent=2) + "\n")
    before = files(folder)

    await stubs.payments.Deposit(
        wallet_pb2.DepositRequest(request_id=new_id("dep"), player_id=player, amount=eur(5))
    )
    await asyncio.sleep(1.0)
    assert files(folder) == before  # the writer refuses to chain onto a tampered file
    assert any(
        line.get("event") == "ledger checkpoint failed" for line in checkpointing.log_lines()
    )
    account = f"checkpoints/{latest.name}"
    assert await kinds_for(stubs, account) == [
        (checkpoints.BAD_CHECKPOINT, int(latest.stem.split("-")[1]))
    ]
    assert path.exists()


async def test_checkpoints_signed_before_a_key_rotation_still_verify(
    stubs: WalletClients,
    checkpointing: ServiceProcess,
    tmp_path: Path,
    pki: Pki,
    own_database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = directory(tmp_path)
    player = await funded(stubs, 1)
    signed_by_old = await checkpoint_of(folder, player, 1)
    checkpointing.terminate()
    # The signing key is rotated: the old pair is kept aside, a new one is made at start.
    for suffix in (".key", ".pub"):
        (tmp_path / f"wallet-signing{suffix}").rename(tmp_path / f"wallet-signing-old{suffix}")
    retired = f'retired_public_key_files = ["{tmp_path / "wallet-signing-old.pub"}"]\n'

    def start(extra: str) -> ServiceProcess:
        monkeypatch.setattr(tests.conftest, "TEST_DATABASE", own_database)
        launched = Launcher(tmp_path / f"run-{len(extra)}", pki, [])(
            "wallet", extra=wallet_extra(checkpoints=tmp_path, wallet=extra)
        )
        monkeypatch.undo()
        return launched

    (tmp_path / f"run-{len(retired)}").mkdir()
    rotated = start(retired)
    clients = WalletClients(rotated.ports["port"], pki)
    try:
        await clients.payments.Deposit(
            wallet_pb2.DepositRequest(request_id=new_id("dep"), player_id=player, amount=eur(5))
        )
        # The writer goes on from the old key's file, under the new key.
        signed_by_new = await checkpoint_of(folder, player, 2)
        assert content(signed_by_new)["key_id"] != content(signed_by_old)["key_id"]
        report = await clients.backoffice.Reconcile(wallet_pb2.ReconcileRequest())
        assert report.checkpoints_checked == len(files(folder))
        assert not [d for d in report.discrepancies if "CHECKPOINT" in d.kind]
    finally:
        await clients.close()
        rotated.terminate()
    # Without the retired key, what it signed cannot be trusted.
    (tmp_path / "run-0").mkdir()
    forgetful = start("")
    clients = WalletClients(forgetful.ports["port"], pki)
    try:
        report = await clients.backoffice.Reconcile(wallet_pb2.ReconcileRequest())
        bad = {d.account for d in report.discrepancies if d.kind == checkpoints.BAD_CHECKPOINT}
        assert f"checkpoints/{signed_by_old.name}" in bad
    finally:
        await clients.close()
        forgetful.terminate()
