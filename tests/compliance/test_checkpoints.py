"""Signed checkpoints of the verdict log written by the service itself, on an interval,
with nobody calling VerifyVerdictLog: a superuser who cuts the log's tail and moves the head
back afterwards is caught by the next verification. In a database of its own (the cut
would break every later verification of the shared test database)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import tests.conftest
from casino.compliance.v1 import compliance_pb2 as pb
from services.runtime import dbsetup, verdict_log
from services.runtime.process import ServiceProcess
from tests.compliance.conftest import Simulator, compliance_extra, open_stubs
from tests.compliance.test_compliance_service import check, verified_player
from tests.conftest import SECRETS, TEST_DATABASE, Launcher, Pki

DATABASE = f"{TEST_DATABASE}_checkpoints"
ADMIN = f"postgresql://postgres@127.0.0.1:5432/{DATABASE}"  # trust on loopback: a superuser


@pytest.fixture(scope="module")
def own_database() -> Iterator[str]:
    dbsetup.migrate(DATABASE, ["compliance"], SECRETS, recreate=True)
    yield DATABASE
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


@pytest.fixture
def checkpointing(
    tmp_path: Path,
    pki: Pki,
    register: Simulator,
    own_database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[ServiceProcess]:
    # The launcher names the session's test database; this instance gets its own.
    monkeypatch.setattr(tests.conftest, "TEST_DATABASE", own_database)
    launcher = Launcher(tmp_path, pki, [])
    process = launcher(
        "compliance",
        extra=compliance_extra(register, tmp_path, settings="checkpoint_interval_seconds = 0.2"),
    )
    monkeypatch.undo()
    process.folder = tmp_path  # type: ignore[attr-defined]
    yield process
    process.terminate()


def head() -> tuple[int, bytes]:
    with psycopg.connect(ADMIN) as conn:
        row = conn.execute("SELECT seq, hash FROM compliance.verdict_head").fetchone()
    assert row is not None
    return int(row[0]), bytes(row[1])


def files(directory: Path) -> set[str]:
    return {path.name for path in directory.iterdir()}


async def checkpoint_at(directory: Path, seq: int, timeout: float = 15.0) -> Path:
    path = verdict_log.checkpoint_path(directory, seq)
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"no checkpoint of seq {seq} within {timeout}s"
        await asyncio.sleep(0.05)
    return path


async def test_checkpoints_are_written_without_a_call_and_expose_a_cut_tail(
    checkpointing: ServiceProcess, pki: Pki
) -> None:
    directory: Path = checkpointing.folder / "checkpoints"  # type: ignore[attr-defined]
    channels, stubs = open_stubs(checkpointing, pki)
    try:
        player = await verified_player(stubs, f"player-{uuid.uuid4().hex[:10]}")
        for _ in range(3):
            await check(stubs, player, pb.ACTION_BET, 100)
        seq, _ = head()
        # Nobody asked for it: the service signed the head it reached.
        written = await checkpoint_at(directory, seq)
        content = verdict_log.read_checkpoint(written)
        public_key = verdict_log.load_public_key(checkpointing.folder / "verdict-signing.pub")  # type: ignore[attr-defined]
        assert (
            verdict_log.check_checkpoint(
                content, public_key, verdict_log.log_name("compliance")
            ).seq
            == seq
        )

        # A superuser, bypassing the triggers, drops the last two verdicts and moves the head
        # back: what is left is a consistent, shorter chain.
        with psycopg.connect(ADMIN) as conn:
            kept = conn.execute(
                "SELECT hash FROM compliance.verdicts WHERE seq = %s", (seq - 2,)
            ).fetchone()
            assert kept is not None
            conn.execute("SET session_replication_role = replica")
            conn.execute("DELETE FROM compliance.verdicts WHERE seq > %s", (seq - 2,))
            conn.execute(
                "UPDATE compliance.verdict_head SET seq = %s, hash = %s", (seq - 2, kept[0])
            )
        before = files(directory)
        await asyncio.sleep(1.0)  # several intervals: the cut head is never signed
        assert files(directory) == before
        assert verdict_log.latest_checkpoint(directory) == written
        assert any(
            line.get("event") == "audit checkpoint failed" for line in checkpointing.log_lines()
        )

        report = await stubs["backoffice"].VerifyVerdictLog(pb.VerifyVerdictLogRequest())
        assert any(p.startswith(f"CHECKPOINT_MISMATCH at {seq}") for p in report.problems), (
            report.problems
        )
        assert report.checkpoint == ""  # a cut log gets no new checkpoint
    finally:
        for channel in channels:
            await channel.close()
