"""The verdict log against the real PostgreSQL, in a throwaway database of its own: appends
chain without gaps (also concurrently), the table refuses change by grant and by trigger,
and every alteration a superuser can still make is reported by verify()."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime as dt
import hashlib
import itertools
import json
import stat
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import TextClause, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from services.runtime import db
from services.runtime import verdict_log as vl
from services.runtime.secrets import SecretFileError
from services.runtime.verdict_log import (
    GENESIS_HASH,
    CheckpointConflict,
    CheckpointSigner,
    StoredVerdict,
    Verdict,
    VerifyReport,
    append,
    append_many,
    checkpoint,
    ensure_signing_key,
    get,
    leaf_hash,
    verdict_log_ddl,
    verify,
    write_checkpoint,
)
from tests.conftest import TEST_DATABASE

ROOT = Path(__file__).resolve().parents[2]
# Beside the session's test database (its own name per concurrent session).
DATABASE = f"{TEST_DATABASE}_verdicts"
SCHEMA = "compliance"
ROLE = "casino_compliance"
ADMIN = "postgres"  # trust authentication on loopback
SERVER = "127.0.0.1:5432"
T0 = dt.datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)


def url(user: str, database: str = DATABASE, driver: str = "postgresql+psycopg") -> str:
    return f"{driver}://{user}@{SERVER}/{database}"


# --------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with psycopg.connect(url(ADMIN, "postgres", "postgresql"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DATABASE}")
        # Roles are cluster-wide and may already exist (with a password set by dbsetup,
        # which we leave alone).
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone():
            # (DuplicateObject: created meanwhile by a concurrent migration.)
            with contextlib.suppress(psycopg.errors.DuplicateObject):
                conn.execute(f"CREATE ROLE {ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE")
    yield DATABASE
    with psycopg.connect(url(ADMIN, "postgres", "postgresql"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


@pytest.fixture(scope="module")
async def admin(database: str) -> AsyncIterator[AsyncEngine]:
    """The owner of the tables (a superuser, as the migration role is)."""
    engine = create_async_engine(url(ADMIN), poolclass=NullPool)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
async def service(database: str) -> AsyncIterator[AsyncEngine]:
    """The compliance service's own role, with a connection pool."""
    engine = create_async_engine(url(ROLE), pool_size=10, max_overflow=10, pool_timeout=60)
    yield engine
    await engine.dispose()


@pytest.fixture
async def log(admin: AsyncEngine) -> str:
    """A fresh, empty verdict log in schema `compliance`, migrated as the admin."""
    async with admin.begin() as conn:
        await conn.execute(text(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE"))
        await conn.execute(text(f"CREATE SCHEMA {SCHEMA}"))
        await conn.execute(text(f"REVOKE ALL ON SCHEMA {SCHEMA} FROM PUBLIC"))
        await conn.execute(text(f"GRANT USAGE ON SCHEMA {SCHEMA} TO {ROLE}"))
        for statement in verdict_log_ddl(SCHEMA, ROLE):
            await conn.execute(text(statement))
    return SCHEMA


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("verdict-keys")
    private, public = folder / "signing.key", folder / "signing.pub"
    ensure_signing_key(private, public)
    return private, public


@pytest.fixture(scope="module")
def signer(keys: tuple[Path, Path]) -> CheckpointSigner:
    return CheckpointSigner(keys[0])


@pytest.fixture
def public_key(keys: tuple[Path, Path]) -> Path:
    return keys[1]


# --------------------------------------------------------------------------------------------
# Helpers


def make_verdict(i: int, **changes: Any) -> Verdict:
    verdict = Verdict(
        verdict_id=uuid.uuid4(),
        player_id=f"player-{i % 7}" if i % 5 else None,
        action=vl.ACTIONS[i % len(vl.ACTIONS)],
        decision=("DENY", "ALLOW", "RECORDED")[i % 3],
        reasons=[
            {"reason": "DEPOSIT_LIMIT_EXCEEDED", "metadata": {"limit": "10000", "period": "DAY"}}
        ]
        if i % 3 == 0
        else [],
        inputs={
            "amount_minor": 1000 * i,
            "country": "GB",
            "score": 0.75,
            "huge": 1e16,  # jsonb hands this back as an int: the hash must survive that
            "nested": {"b": [1, 2, {"z": None}], "a": True, "é": "naïve ✓"},
        },
        rule_version="rules-2025.03",
        config_version="cfg-7",
        caller="spiffe://casino.local/payments",
        create_time=T0 + dt.timedelta(seconds=i, microseconds=i),
    )
    return dataclasses.replace(verdict, **changes)


async def append_all(engine: AsyncEngine, count: int) -> list[StoredVerdict]:
    async with engine.begin() as conn:
        return [await append(conn, SCHEMA, make_verdict(i)) for i in range(count)]


async def check(
    engine: AsyncEngine, public_key: Path, checkpoint_file: Path | None = None
) -> VerifyReport:
    async with engine.connect() as conn:
        return await verify(conn, SCHEMA, public_key, checkpoint_file)


def kinds(report: VerifyReport) -> list[tuple[str, int | None]]:
    return [(p.kind, p.seq) for p in report.problems]


async def as_superuser_bypassing_triggers(admin: AsyncEngine, *statements: str) -> None:
    async with admin.begin() as conn:
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        for statement in statements:
            await conn.execute(text(statement))


async def rewrite_from(admin: AsyncEngine, seq: int, **changes: Any) -> None:
    """What a careful attacker does: alter row `seq`, then recompute every hash after it and
    the head, so the chain is self-consistent again."""
    async with admin.begin() as conn:
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        rows = (
            await conn.execute(
                text(f"SELECT verdict_id FROM {SCHEMA}.verdicts WHERE seq >= :s ORDER BY seq"),
                {"s": seq},
            )
        ).all()
        stored = [await get(conn, SCHEMA, r.verdict_id) for r in rows]
        prev = stored[0].prev_hash  # type: ignore[union-attr]
        for i, row in enumerate(stored):
            assert row is not None
            if i == 0:
                row = dataclasses.replace(row, **changes)
            digest = leaf_hash(prev, row)
            await conn.execute(
                text(
                    f"UPDATE {SCHEMA}.verdicts SET reasons = CAST(:reasons AS jsonb),"
                    " decision = :decision, prev_hash = :prev, hash = :hash WHERE seq = :seq"
                ),
                {
                    "reasons": json.dumps(row.reasons),
                    "decision": row.decision,
                    "prev": prev,
                    "hash": digest,
                    "seq": row.seq,
                },
            )
            prev = digest
        await conn.execute(text(f"UPDATE {SCHEMA}.verdict_head SET hash = :h"), {"h": prev})


def sql_error(exc: pytest.ExceptionInfo[DBAPIError]) -> BaseException:
    assert exc.value.orig is not None
    return exc.value.orig


# --------------------------------------------------------------------------------------------
# The hash


def test_leaf_hash_is_the_documented_canonical_sha256() -> None:
    verdict = Verdict(
        verdict_id=uuid.UUID("12345678-1234-5678-1234-567812345678"),
        player_id="p1",
        action="DEPOSIT",
        decision="DENY",
        reasons=[{"reason": "LIMIT", "metadata": {"limit": "100"}}],
        inputs={"b": 1, "a": "é"},
        rule_version="r1",
        config_version="c1",
        caller="payments",
        create_time=dt.datetime(2025, 1, 2, 5, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    )
    canonical = (
        '{"action":"DEPOSIT","caller":"payments","config_version":"c1",'
        '"create_time":"2025-01-02T03:04:05.000000+00:00","decision":"DENY",'
        '"inputs":{"a":"\\u00e9","b":1},"player_id":"p1",'
        '"reasons":[{"metadata":{"limit":"100"},"reason":"LIMIT"}],"rule_version":"r1",'
        '"verdict_id":"12345678-1234-5678-1234-567812345678"}'
    )
    prev = bytes(range(32))
    assert vl.canonical_bytes(verdict) == canonical.encode()
    assert leaf_hash(prev, verdict) == hashlib.sha256(prev + canonical.encode()).digest()
    # Pure: the same instant in another zone, or dict keys in another order, hash the same.
    same = dataclasses.replace(
        verdict,
        create_time=dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        inputs={"a": "é", "b": 1},
    )
    assert leaf_hash(prev, same) == leaf_hash(prev, verdict)


def test_leaf_hash_covers_every_field_and_the_previous_hash() -> None:
    verdict = make_verdict(1)
    base = leaf_hash(GENESIS_HASH, verdict)
    changed: dict[str, Any] = {
        "verdict_id": uuid.uuid4(),
        "player_id": "someone-else",
        "action": "BET",
        "decision": "ALLOW" if verdict.decision != "ALLOW" else "DENY",
        "reasons": [{"reason": "OTHER", "metadata": {}}],
        "inputs": {**verdict.inputs, "amount_minor": 1},
        "rule_version": "rules-2",
        "config_version": "cfg-8",
        "caller": "games",
        "create_time": verdict.create_time + dt.timedelta(microseconds=1),
    }
    assert set(changed) == {f.name for f in dataclasses.fields(Verdict)}
    for name, value in changed.items():
        assert leaf_hash(GENESIS_HASH, dataclasses.replace(verdict, **{name: value})) != base, name
    assert leaf_hash(b"\x01" * 32, verdict) != base
    with pytest.raises(ValueError, match="timezone"):
        leaf_hash(GENESIS_HASH, dataclasses.replace(verdict, create_time=dt.datetime(2025, 1, 1)))


def test_ddl_has_no_bind_markers_and_refuses_odd_identifiers() -> None:
    for statement in verdict_log_ddl(SCHEMA, ROLE):
        assert not text(statement).compile().params, statement
    with pytest.raises(ValueError):
        verdict_log_ddl("compliance; DROP TABLE x", ROLE)


# --------------------------------------------------------------------------------------------
# Appending


async def test_appends_are_numbered_without_gaps_and_chained(
    log: str, service: AsyncEngine, public_key: Path
) -> None:
    stored = await append_all(service, 25)
    assert [s.seq for s in stored] == list(range(1, 26))
    assert stored[0].prev_hash == GENESIS_HASH
    for before, after in itertools.pairwise(stored):
        assert after.prev_hash == before.hash
    for s in stored:
        assert s.hash == leaf_hash(s.prev_hash, s)
    async with service.connect() as conn:
        assert await get(conn, SCHEMA, stored[7].verdict_id) == stored[7]
        assert await get(conn, SCHEMA, uuid.uuid4()) is None
        head = (await conn.execute(text(f"SELECT seq, hash FROM {SCHEMA}.verdict_head"))).one()
    assert (head.seq, bytes(head.hash)) == (25, stored[-1].hash)
    # jsonb normalised the inputs before hashing; what append returns is what is stored.
    assert stored[3].inputs["huge"] == 10**16 and isinstance(stored[3].inputs["huge"], int)

    report = await check(service, public_key)
    assert report.ok, report.render()
    assert (report.rows_checked, report.head_seq, report.problems) == (25, 25, [])


async def test_an_empty_log_verifies(log: str, service: AsyncEngine, public_key: Path) -> None:
    report = await check(service, public_key)
    assert report.ok and report.rows_checked == 0 and report.head_seq == 0


async def test_a_rolled_back_append_leaves_no_gap(
    log: str, service: AsyncEngine, public_key: Path
) -> None:
    await append_all(service, 2)
    async with service.connect() as conn:
        await append(conn, SCHEMA, make_verdict(2))
        await conn.rollback()
    stored = await append_all(service, 1)
    assert stored[0].seq == 3
    assert (await check(service, public_key)).ok


async def test_malformed_verdicts_are_refused_before_the_database(
    log: str, service: AsyncEngine
) -> None:
    bad: list[dict[str, Any]] = [
        {"decision": "MAYBE"},
        {"create_time": dt.datetime(2025, 1, 1)},  # naive
        {"reasons": [{"reason": "X"}]},  # no metadata
        {"reasons": [{"reason": "X", "metadata": {"limit": 5}}]},  # metadata not str
        {"inputs": {"x": float("nan")}},
        {"inputs": {"when": dt.datetime.now(dt.UTC)}},  # not JSON
        {"caller": ""},
        {"player_id": ""},
    ]
    async with service.begin() as conn:
        for changes in bad:
            with pytest.raises(ValueError):
                await append(conn, SCHEMA, make_verdict(1, **changes))
        assert (await append(conn, SCHEMA, make_verdict(1))).seq == 1


async def test_a_duplicate_verdict_id_is_refused(log: str, service: AsyncEngine) -> None:
    first = (await append_all(service, 1))[0]
    with pytest.raises(DBAPIError) as exc:
        async with service.begin() as conn:
            await append(conn, SCHEMA, make_verdict(2, verdict_id=first.verdict_id))
    assert isinstance(sql_error(exc), psycopg.errors.UniqueViolation)


async def test_concurrent_appends_make_one_gapless_chain(
    log: str, service: AsyncEngine, public_key: Path
) -> None:
    async def one(i: int) -> StoredVerdict:
        async with service.begin() as conn:
            return await append(conn, SCHEMA, make_verdict(i))

    stored = await asyncio.gather(*(one(i) for i in range(50)))
    assert sorted(s.seq for s in stored) == list(range(1, 51))
    by_seq = {s.seq: s for s in stored}
    for seq in range(2, 51):
        assert by_seq[seq].prev_hash == by_seq[seq - 1].hash
    report = await check(service, public_key)
    assert report.ok, report.render()
    assert report.rows_checked == 50


async def test_batches_and_single_appends_interleave_into_one_chain(
    log: str, service: AsyncEngine, public_key: Path
) -> None:
    """A batch of decisions goes in with one INSERT; concurrent batches and single appends
    still make one gapless chain, and each batch's verdicts keep their order."""

    async def batch(start: int) -> list[StoredVerdict]:
        async with service.begin() as conn:
            return await append_many(conn, SCHEMA, [make_verdict(start + i) for i in range(7)])

    async def single(i: int) -> list[StoredVerdict]:
        async with service.begin() as conn:
            return [await append(conn, SCHEMA, make_verdict(i))]

    results = await asyncio.gather(
        *(batch(100 * k) for k in range(6)), *(single(1000 + i) for i in range(8))
    )
    stored = [v for result in results for v in result]
    assert sorted(v.seq for v in stored) == list(range(1, 51))
    for result in results:
        seqs = [v.seq for v in result]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    async with service.connect() as conn:
        assert await append_many(conn, SCHEMA, []) == []
        for v in stored:
            assert await get(conn, SCHEMA, v.verdict_id) == v
    report = await check(service, public_key)
    assert report.ok, report.render()
    assert report.rows_checked == 50


async def test_values_jsonb_keeps_as_they_are_are_hashed_as_given(
    log: str, service: AsyncEngine, public_key: Path
) -> None:
    """Inputs without floats, tuples or non-string keys skip the normalising round trip;
    what is stored still reads back, and verifies, exactly as hashed."""
    plain = {
        "amount_minor": 10**20,
        "flags": [True, False, None],
        "nested": {"b": [1, {"z": 'naïve ✓ "quoted" \\ slash'}], "a": ""},
    }
    verdicts = [make_verdict(i, inputs={**plain, "i": i}) for i in range(5)]
    async with service.begin() as conn:
        stored = await append_many(conn, SCHEMA, verdicts)
    assert [v.inputs for v in stored] == [v.inputs for v in verdicts]
    async with service.connect() as conn:
        for v in stored:
            assert await get(conn, SCHEMA, v.verdict_id) == v
    report = await check(service, public_key)
    assert report.ok, report.render()


async def test_pipelined_appends_chain_on_with_the_others(
    log: str, service: AsyncEngine, public_key: Path
) -> None:
    """`queue_append` (the compliance check's batch): queued to go out with the COMMIT,
    read once committed; inputs jsonb would change (floats) are normalised first, in the
    same transaction; it links on from, and is linked to by, appends of the other kind."""
    await append_all(service, 2)
    pipelined = db.autocommit(service)
    needs_normalising = [make_verdict(i) for i in range(2, 5)]  # 1e16 comes back an int
    as_given = [make_verdict(i, inputs={"amount_minor": i}) for i in range(5, 7)]
    stored: list[StoredVerdict] = []
    for verdicts in (needs_normalising, as_given):
        async with db.pipelined_transaction(pipelined) as pipeline:
            appended = await vl.queue_append(pipeline, SCHEMA, verdicts)
        stored += await appended.result()
    stored += await append_all(service, 1)
    assert [s.seq for s in stored] == list(range(3, 9))
    assert stored[0].inputs["huge"] == 10**16 and isinstance(stored[0].inputs["huge"], int)
    for before, after in itertools.pairwise(stored):
        assert after.prev_hash == before.hash
    async with db.pipelined_transaction(pipelined) as pipeline:
        found = await vl.queue_get(pipeline, SCHEMA, stored[1].verdict_id)
        missing = await vl.queue_get(pipeline, SCHEMA, uuid.uuid4())
    assert (await found.result(), await missing.result()) == (stored[1], None)
    report = await check(service, public_key)
    assert report.ok and report.rows_checked == 8, report.render()


async def test_a_batch_with_one_bad_row_appends_nothing(log: str, service: AsyncEngine) -> None:
    good = make_verdict(1)
    with pytest.raises(ValueError):
        async with service.begin() as conn:
            await append_many(conn, SCHEMA, [good, make_verdict(2, decision="MAYBE")])
    async with service.connect() as conn:
        assert await get(conn, SCHEMA, good.verdict_id) is None
    (first,) = await append_all(service, 1)
    assert first.seq == 1


# --------------------------------------------------------------------------------------------
# Refusing change


@pytest.mark.parametrize(
    "statement",
    [
        f"UPDATE {SCHEMA}.verdicts SET decision = 'ALLOW' WHERE seq = 1",
        f"DELETE FROM {SCHEMA}.verdicts WHERE seq = 1",
        f"TRUNCATE {SCHEMA}.verdicts",
        f"DELETE FROM {SCHEMA}.verdict_head",
    ],
)
async def test_the_service_role_cannot_change_the_log(
    log: str, service: AsyncEngine, statement: str
) -> None:
    await append_all(service, 2)
    with pytest.raises(DBAPIError) as exc:
        async with service.begin() as conn:
            await conn.execute(text(statement))
    assert isinstance(sql_error(exc), psycopg.errors.InsufficientPrivilege)


@pytest.mark.parametrize(
    "statement",
    [
        f"UPDATE {SCHEMA}.verdicts SET reasons = '[]' WHERE seq = 1",
        f"DELETE FROM {SCHEMA}.verdicts WHERE seq = 2",
        f"TRUNCATE {SCHEMA}.verdicts",
        f"DELETE FROM {SCHEMA}.verdict_head",
        f"TRUNCATE {SCHEMA}.verdict_head",
    ],
)
async def test_even_the_owner_is_refused_by_the_trigger(
    log: str, service: AsyncEngine, admin: AsyncEngine, statement: str
) -> None:
    await append_all(service, 2)
    with pytest.raises(DBAPIError) as exc:
        async with admin.begin() as conn:
            await conn.execute(text(statement))
    error = sql_error(exc)
    assert isinstance(error, psycopg.errors.InsufficientPrivilege)
    assert "append-only" in str(error)


async def test_the_database_only_accepts_rows_and_heads_that_extend_the_chain(
    log: str, service: AsyncEngine
) -> None:
    stored = await append_all(service, 3)
    insert = text(
        f"INSERT INTO {SCHEMA}.verdicts (seq, verdict_id, action, decision, reasons, inputs,"
        " rule_version, config_version, caller, create_time, prev_hash, hash) VALUES"
        " (:seq, :id, 'BET', 'ALLOW', '[]', '{}', 'r', 'c', 'x', now(), :prev, :hash)"
    )
    attempts: list[tuple[TextClause, dict[str, Any]]] = [
        (insert, {"seq": 5, "id": uuid.uuid4(), "prev": stored[-1].hash, "hash": bytes(32)}),
        (insert, {"seq": 4, "id": uuid.uuid4(), "prev": stored[0].hash, "hash": bytes(32)}),
        (text(f"UPDATE {SCHEMA}.verdict_head SET seq = 1, hash = :h"), {"h": stored[0].hash}),
        (text(f"UPDATE {SCHEMA}.verdict_head SET seq = 4, hash = :h"), {"h": bytes(32)}),
    ]
    for statement, params in attempts:
        with pytest.raises(DBAPIError) as exc:
            async with service.begin() as conn:
                await conn.execute(statement, params)
        assert isinstance(sql_error(exc), psycopg.errors.IntegrityConstraintViolation)


# --------------------------------------------------------------------------------------------
# Detecting what a superuser can still do


@pytest.mark.parametrize(
    "assignment",
    [
        "reasons = '[]'",
        "reasons = jsonb_set(reasons, '{0,metadata,limit}', '\"99999\"')",
        "decision = 'ALLOW'",
        "inputs = inputs || '{\"amount_minor\": 1}'",
        "player_id = 'player-innocent'",
        "create_time = create_time + interval '1 microsecond'",
        "rule_version = 'rules-2024'",
    ],
)
async def test_an_altered_row_breaks_the_chain_at_its_seq(
    log: str, service: AsyncEngine, admin: AsyncEngine, public_key: Path, assignment: str
) -> None:
    stored = await append_all(service, 10)
    assert stored[3].decision == "DENY" and stored[3].reasons  # seq 4
    await as_superuser_bypassing_triggers(
        admin, f"UPDATE {SCHEMA}.verdicts SET {assignment} WHERE seq = 4"
    )
    report = await check(service, public_key)
    assert not report.ok
    assert kinds(report) == [("CHAIN_BROKEN", 4)], report.render()


async def test_a_deleted_row_is_a_gap_and_a_broken_link(
    log: str, service: AsyncEngine, admin: AsyncEngine, public_key: Path
) -> None:
    await append_all(service, 10)
    await as_superuser_bypassing_triggers(admin, f"DELETE FROM {SCHEMA}.verdicts WHERE seq = 5")
    report = await check(service, public_key)
    assert set(kinds(report)) == {("SEQUENCE_GAP", 6), ("CHAIN_BROKEN", 6)}, report.render()
    assert report.rows_checked == 9


async def test_a_deleted_last_row_is_a_head_mismatch(
    log: str, service: AsyncEngine, admin: AsyncEngine, public_key: Path
) -> None:
    await append_all(service, 10)
    await as_superuser_bypassing_triggers(admin, f"DELETE FROM {SCHEMA}.verdicts WHERE seq = 10")
    report = await check(service, public_key)
    assert kinds(report) == [("HEAD_MISMATCH", 10)], report.render()


async def test_renumbering_after_a_deletion_breaks_the_chain(
    log: str, service: AsyncEngine, admin: AsyncEngine, public_key: Path
) -> None:
    await append_all(service, 6)
    await as_superuser_bypassing_triggers(
        admin,
        f"DELETE FROM {SCHEMA}.verdicts WHERE seq = 3",
        f"UPDATE {SCHEMA}.verdicts SET seq = seq - 1 WHERE seq > 3",
        f"UPDATE {SCHEMA}.verdict_head SET seq = seq - 1",
    )
    report = await check(service, public_key)
    assert kinds(report) == [("CHAIN_BROKEN", 3)], report.render()


async def test_a_row_inserted_beyond_the_head_is_reported(
    log: str, service: AsyncEngine, admin: AsyncEngine, public_key: Path
) -> None:
    stored = await append_all(service, 3)
    extra = make_verdict(9)
    async with admin.begin() as conn:
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        await conn.execute(
            text(
                f"INSERT INTO {SCHEMA}.verdicts (seq, verdict_id, action, decision, reasons,"
                " inputs, rule_version, config_version, caller, create_time, prev_hash, hash)"
                " VALUES (4, :id, 'BET', 'ALLOW', '[]', '{}', 'r', 'c', 'x', :t, :prev, :hash)"
            ),
            {"id": extra.verdict_id, "t": T0, "prev": stored[-1].hash, "hash": bytes(32)},
        )
    report = await check(service, public_key)
    assert kinds(report) == [("HEAD_MISMATCH", 4)], report.render()


# --------------------------------------------------------------------------------------------
# Checkpoints


async def test_a_signed_checkpoint_verifies(
    log: str,
    service: AsyncEngine,
    signer: CheckpointSigner,
    keys: tuple[Path, Path],
    public_key: Path,
    tmp_path: Path,
) -> None:
    private, public = keys
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    assert ensure_signing_key(private, public) == signer.key_id  # idempotent

    stored = await append_all(service, 5)
    async with service.connect() as conn:
        written = await checkpoint(conn, SCHEMA, signer, tmp_path / "checkpoints")
    assert written == tmp_path / "checkpoints" / "checkpoint-5.json"
    assert stat.S_IMODE(written.stat().st_mode) == 0o644
    content = json.loads(written.read_text())
    assert set(content) == {"log", "seq", "hash", "time", "key_id", "signature"}
    assert content["log"] == "compliance-verdicts"
    assert (content["seq"], content["hash"]) == (5, stored[-1].hash.hex())
    assert content["key_id"] == signer.key_id and len(signer.key_id) == 16
    assert (
        vl.check_checkpoint(content, vl.load_public_key(public_key), vl.log_name(SCHEMA)).seq == 5
    )

    report = await check(service, public_key, written)
    assert report.ok, report.render()
    assert report.checkpoint_seq == 5

    # The log grows past the checkpoint; the old checkpoint still holds, a new one is taken.
    await append_all(service, 3)
    assert (await check(service, public_key, written)).ok
    async with service.connect() as conn:
        later = await checkpoint(conn, SCHEMA, signer, tmp_path / "checkpoints")
        again = await checkpoint(conn, SCHEMA, signer, tmp_path / "checkpoints")
    assert later.name == "checkpoint-8.json" and again == later
    assert vl.latest_checkpoint(tmp_path / "checkpoints") == later
    assert (await check(service, public_key, later)).ok
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]


async def test_a_scan_leaves_the_event_loop_free_while_it_checks(
    log: str, service: AsyncEngine
) -> None:
    # A service's periodic checkpoint scans every row since the last one on the loop its
    # calls run on: checked there, a batch of 1,000 rows held every call for its length.
    async with service.begin() as conn:
        for start in range(0, 3000, 500):
            await append_many(conn, SCHEMA, [make_verdict(i) for i in range(start, start + 500)])
    report = VerifyReport()
    held: list[int] = []  # rows checked between two turns of the loop
    scanning = True

    async def loop_turns() -> None:
        seen = 0
        while scanning:
            await asyncio.sleep(0.0005)
            held.append(report.rows_checked - seen)
            seen = report.rows_checked

    turns = asyncio.create_task(loop_turns())
    async with service.connect() as conn:
        last_seq, _, _ = await vl._scan(conn, SCHEMA, (0, GENESIS_HASH), None, report)
    scanning = False
    await turns

    assert (last_seq, report.rows_checked, report.ok) == (3000, 3000, True)
    assert max(held) < vl._STREAM_BATCH // 4, held


@pytest.mark.parametrize("forgery", ["signature", "hash", "seq", "time", "garbage", "other-key"])
async def test_a_modified_checkpoint_has_a_bad_signature(
    log: str,
    service: AsyncEngine,
    signer: CheckpointSigner,
    public_key: Path,
    tmp_path: Path,
    forgery: str,
) -> None:
    stored = await append_all(service, 4)
    async with service.connect() as conn:
        written = await checkpoint(conn, SCHEMA, signer, tmp_path / "checkpoints")
    content = json.loads(written.read_text())
    if forgery == "signature":
        raw = bytearray(base64.b64decode(content["signature"]))
        raw[10] ^= 0x01
        content["signature"] = base64.b64encode(bytes(raw)).decode()
    elif forgery == "hash":
        content["hash"] = stored[1].hash.hex()
    elif forgery == "seq":
        content["seq"] = 2
    elif forgery == "time":
        content["time"] = "2020-01-01T00:00:00.000000+00:00"
    elif forgery == "other-key":
        other = tmp_path / "other"
        ensure_signing_key(other / "k", other / "k.pub")
        content = CheckpointSigner(other / "k").sign(
            vl.log_name(SCHEMA), 4, stored[-1].hash, dt.datetime.now(dt.UTC)
        )
    forged = tmp_path / "forged.json"
    forged.write_text("{not json" if forgery == "garbage" else json.dumps(content))
    report = await check(service, public_key, forged)
    assert kinds(report) == [("BAD_SIGNATURE", None)], report.render()


async def test_a_checkpoint_taken_before_a_rewrite_exposes_it(
    log: str,
    service: AsyncEngine,
    admin: AsyncEngine,
    signer: CheckpointSigner,
    public_key: Path,
    tmp_path: Path,
) -> None:
    await append_all(service, 10)
    async with service.connect() as conn:
        written = await checkpoint(conn, SCHEMA, signer, tmp_path / "checkpoints")
    assert (await check(service, public_key, written)).ok

    # Flip a DENY to ALLOW and recompute every later hash: the chain alone looks fine...
    await rewrite_from(admin, 4, decision="ALLOW", reasons=[])
    assert (await check(service, public_key)).ok
    # ...but not against the signed checkpoint.
    report = await check(service, public_key, written)
    assert kinds(report) == [("CHECKPOINT_MISMATCH", 10)], report.render()
    # And the checkpointer refuses to bless the rewritten log.
    async with service.connect() as conn:
        with pytest.raises(vl.ChainError) as exc:
            await checkpoint(conn, SCHEMA, signer, tmp_path / "checkpoints")
    assert [p.kind for p in exc.value.problems] == ["CHECKPOINT_MISMATCH"]


async def test_a_checkpoint_detects_rows_dropped_from_the_end(
    log: str,
    service: AsyncEngine,
    admin: AsyncEngine,
    signer: CheckpointSigner,
    public_key: Path,
    tmp_path: Path,
) -> None:
    stored = await append_all(service, 8)
    async with service.connect() as conn:
        written = await checkpoint(conn, SCHEMA, signer, tmp_path)
    # Drop the last three rows and rewind the head: a consistent, shorter chain.
    async with admin.begin() as conn:
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        await conn.execute(text(f"DELETE FROM {SCHEMA}.verdicts WHERE seq > 5"))
        await conn.execute(
            text(f"UPDATE {SCHEMA}.verdict_head SET seq = 5, hash = :h"), {"h": stored[4].hash}
        )
    assert (await check(service, public_key)).ok
    report = await check(service, public_key, written)
    assert kinds(report) == [("CHECKPOINT_MISMATCH", 8)], report.render()


async def test_a_checkpointed_row_that_was_deleted_is_reported(
    log: str,
    service: AsyncEngine,
    admin: AsyncEngine,
    signer: CheckpointSigner,
    public_key: Path,
    tmp_path: Path,
) -> None:
    await append_all(service, 4)
    async with service.connect() as conn:
        written = await checkpoint(conn, SCHEMA, signer, tmp_path)
    await append_all(service, 2)
    await as_superuser_bypassing_triggers(admin, f"DELETE FROM {SCHEMA}.verdicts WHERE seq = 4")
    report = await check(service, public_key, written)
    assert set(kinds(report)) == {
        ("SEQUENCE_GAP", 5),
        ("CHAIN_BROKEN", 5),
        ("CHECKPOINT_MISMATCH", 4),
    }, report.render()


def test_a_checkpoint_is_never_overwritten_with_another_hash(
    signer: CheckpointSigner, tmp_path: Path
) -> None:
    now = dt.datetime.now(dt.UTC)
    first = write_checkpoint(tmp_path, signer.sign(vl.log_name(SCHEMA), 3, b"\x01" * 32, now))
    assert (
        write_checkpoint(tmp_path, signer.sign(vl.log_name(SCHEMA), 3, b"\x01" * 32, now)) == first
    )
    with pytest.raises(CheckpointConflict):
        write_checkpoint(tmp_path, signer.sign(vl.log_name(SCHEMA), 3, b"\x02" * 32, now))
    assert json.loads(first.read_text())["hash"] == "01" * 32


def test_the_signing_key_must_be_private(tmp_path: Path) -> None:
    private, public = tmp_path / "k", tmp_path / "k.pub"
    ensure_signing_key(private, public)
    private.chmod(0o644)
    with pytest.raises(SecretFileError):
        CheckpointSigner(private)


# --------------------------------------------------------------------------------------------
# The command line


async def run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.runtime.verdict_log",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_command_line_verifies_and_checkpoints(
    log: str, service: AsyncEngine, admin: AsyncEngine, tmp_path: Path
) -> None:
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text(url(ROLE, driver="postgresql") + "\n")
    dsn_file.chmod(0o600)
    private, public = tmp_path / "keys" / "signing.key", tmp_path / "keys" / "signing.pub"
    checkpoints = tmp_path / "checkpoints"
    db = ["--dsn-file", str(dsn_file), "--schema", SCHEMA]

    code, out, err = await run_cli(
        "keygen", "--private-key", str(private), "--public-key", str(public)
    )
    assert code == 0, err
    await append_all(service, 6)
    code, out, err = await run_cli(
        "checkpoint", *db, "--private-key", str(private), "--directory", str(checkpoints)
    )
    assert code == 0, err
    assert out.strip() == str(checkpoints / "checkpoint-6.json")

    verify_args = ["verify", *db, "--public-key", str(public), "--checkpoint", str(checkpoints)]
    code, out, err = await run_cli(*verify_args)
    assert code == 0, out + err
    assert "6 rows checked" in out and out.strip().endswith("OK")

    await as_superuser_bypassing_triggers(
        admin, f"UPDATE {SCHEMA}.verdicts SET decision = 'DENY' WHERE seq = 2"
    )
    code, out, err = await run_cli(*verify_args)
    assert code == 1, out + err
    assert "CHAIN_BROKEN at seq 2" in out and "FAILED" in out

    # The DSN is a secret: a file others can read is refused, and nothing leaks.
    dsn_file.chmod(0o644)
    code, out, err = await run_cli(*verify_args)
    assert code == 2 and "readable by group/others" in err


def test_a_checkpoint_of_another_log_is_refused(tmp_path: Path) -> None:
    """One log per schema: the RNG's round-record checkpoints never pass for compliance's."""
    ensure_signing_key(tmp_path / "k", tmp_path / "k.pub")
    signer = CheckpointSigner(tmp_path / "k")
    now = dt.datetime.now(dt.UTC)
    rng = signer.sign(vl.log_name("rng"), 3, b"\x01" * 32, now)
    assert vl.check_checkpoint(rng, signer.public_key, vl.log_name("rng")).seq == 3
    with pytest.raises(vl.InvalidCheckpoint, match="rng-verdicts"):
        vl.check_checkpoint(rng, signer.public_key, vl.log_name(SCHEMA))
