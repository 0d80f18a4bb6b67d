"""A tamper-evident, append-only log of decisions, one per service schema: compliance's
verdicts, the RNG's round records.

Every compliance decision (a *verdict*: ALLOW, DENY or merely RECORDED) is appended, in the
transaction that acts on it, to ``<schema>.verdicts``. What the log guarantees, and how:

* **Append-only.** The service role is granted SELECT and INSERT on the table, nothing else,
  and triggers refuse UPDATE, DELETE and TRUNCATE (``insufficient_privilege``) even to the
  table's owner. Only someone who can switch triggers off (a superuser, e.g. with
  ``SET session_replication_role = replica``) can alter rows, and that is *detected* below.
* **Gapless order.** Rows are numbered ``seq`` = 1, 2, 3... The one-row table
  ``<schema>.verdict_head`` holds the seq and hash of the last row; :func:`append` locks it
  (``SELECT ... FOR UPDATE``), so appends serialise and numbers never skip; one append may
  carry many verdicts (:func:`append_many`: a batch of decisions committed together). Triggers
  accept a row only if it extends the chain's last row (seq = last seq + 1, prev_hash = last
  hash), move the head onto the last row at the end of every INSERT, and let the head move
  only forward, onto the last row, so not even a buggy appender holding the service role's
  grants can fork or rewind the chain.
* **Hash chain.** This is a *linear* chain (not an RFC 6962 Merkle tree): an auditor re-runs
  the whole chain rather than checking inclusion proofs. Each row stores::

      hash = SHA-256(prev_hash || canonical)
      canonical = json.dumps({"action", "caller", "config_version", "create_time",
                              "decision", "inputs", "player_id", "reasons",
                              "rule_version", "verdict_id"},
                             sort_keys=True, separators=(",", ":")).encode()   # ASCII

  with ``verdict_id`` as the lowercase hyphenated UUID, ``create_time`` in UTC as
  ``YYYY-MM-DDTHH:MM:SS.ffffff+00:00``, ``player_id`` null when absent, and ``reasons`` and
  ``inputs`` exactly as PostgreSQL's jsonb returns them (:func:`append` lets the database
  normalise them before hashing, so the verifier recomputes the same bytes). ``prev_hash`` is
  the previous row's hash, 32 zero bytes for seq 1; ``seq`` is not hashed because the chain
  itself fixes each row's position: renumbering, reordering or removing rows breaks a link.
* **Signed checkpoints outside the database.** :func:`checkpoint` signs (Ed25519) the head's
  seq and hash and writes ``checkpoint-<seq>.json`` into a directory that should live where
  the database's administrators cannot write (another host, object storage with object
  lock). Before signing, it checks that the chain still extends the latest checkpoint already
  in the directory, so a rewritten log is never blessed, and it never overwrites a
  checkpoint with a different hash.
* **Verification.** :func:`verify` streams every row in seq order through a server-side cursor
  (constant memory), recomputes every hash and reports SEQUENCE_GAP, CHAIN_BROKEN (a
  prev_hash or hash that does not match) and HEAD_MISMATCH (head table vs last row); given a
  checkpoint, BAD_SIGNATURE (unparsable, wrong key or bad signature) and CHECKPOINT_MISMATCH
  (the row at the checkpoint's seq is missing or has another hash).

Limits: whoever can bypass the triggers can rewrite a row *and every hash after it* (and
the head) into a self-consistent chain, or drop rows from the end and rewind the head; only
a checkpoint taken before the rewrite exposes that. Checkpoint often, and keep them safe.

Command line (the DSN is read from a file, never from the environment or argv)::

    python -m services.runtime.verdict_log verify --dsn-file F --schema compliance \\
        --public-key F [--checkpoint FILE_OR_DIR]
    python -m services.runtime.verdict_log checkpoint --dsn-file F --schema compliance \\
        --private-key F --directory D
    python -m services.runtime.verdict_log keygen --private-key F --public-key F

``verify`` exits 0 when the log is intact, 1 when it found problems, 2 when it could not check.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from sqlalchemy import TextClause, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from services.runtime import db
from services.runtime.secrets import SecretFileError, read_secret, read_secret_bytes


def log_name(schema: str) -> str:
    """The log a checkpoint belongs to: one log per schema (compliance's verdicts, the RNG's
    round records), so a checkpoint of one is never taken for another's."""
    return f"{_ident(schema)}-verdicts"


GENESIS_HASH = bytes(32)
DECISIONS = ("ALLOW", "DENY", "RECORDED")
# The actions the service records today; informative (the column accepts any text).
ACTIONS = (
    "REGISTRATION",
    "DEPOSIT",
    "BET",
    "WITHDRAWAL",
    "GAME_LAUNCH",
    "LIMIT_CHANGE",
    "EXCLUSION",
    "KYC_UPDATE",
)

# Problem kinds reported by verify().
SEQUENCE_GAP = "SEQUENCE_GAP"
CHAIN_BROKEN = "CHAIN_BROKEN"
HEAD_MISMATCH = "HEAD_MISMATCH"
BAD_SIGNATURE = "BAD_SIGNATURE"
CHECKPOINT_MISMATCH = "CHECKPOINT_MISMATCH"

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_CHECKPOINT_FILE = re.compile(r"checkpoint-(\d+)\.json")
_COLUMNS = (
    "seq, verdict_id, player_id, action, decision, reasons, inputs, rule_version,"
    " config_version, caller, create_time, prev_hash, hash"
)
# A scan reads reasons and inputs as jsonb's text (parsed with the rest of the row in a
# worker thread, see _scan).
_SCAN_COLUMNS = _COLUMNS.replace("reasons, inputs", "CAST(reasons AS text), CAST(inputs AS text)")
_STREAM_BATCH = 1000
# Rows a scan's worker thread checks between offers of the GIL to the event loop.
_ROWS_PER_TURN = 8


def _ident(name: str) -> str:
    # Schema and role names come from code, but are spliced into SQL: keep them boring.
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"refusing unusual SQL identifier {name!r}")
    return name


# --------------------------------------------------------------------------------------------
# Schema


def verdict_log_functions(schema: str) -> list[str]:
    """The trigger functions guarding the chain, as CREATE OR REPLACE (a later migration
    re-runs them to upgrade an existing log)."""
    s = _ident(schema)
    return [
        f"""
        CREATE OR REPLACE FUNCTION {s}.verdicts_refuse_change() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '%.% is append-only', TG_TABLE_SCHEMA, TG_TABLE_NAME
                USING ERRCODE = 'insufficient_privilege';
        END $$
        """,
        # A row must extend the chain's last row, which is the head's row or one inserted
        # earlier by the same statement (a row-level BEFORE trigger sees the rows its
        # statement already inserted): a batch goes in with one INSERT.
        f"""
        CREATE OR REPLACE FUNCTION {s}.verdicts_extend_head() RETURNS trigger
        LANGUAGE plpgsql AS $$
        DECLARE
            last_seq  bigint;
            last_hash bytea;
        BEGIN
            SELECT v.seq, v.hash INTO last_seq, last_hash
                FROM {s}.verdicts v ORDER BY v.seq DESC LIMIT 1;
            IF NOT FOUND THEN
                SELECT h.seq, h.hash INTO last_seq, last_hash FROM {s}.verdict_head h;
            END IF;
            IF last_seq IS NULL OR NEW.seq <> last_seq + 1 OR NEW.prev_hash <> last_hash THEN
                RAISE EXCEPTION 'verdict seq % does not extend %.verdicts (last seq %)',
                    NEW.seq, TG_TABLE_SCHEMA, last_seq
                    USING ERRCODE = 'integrity_constraint_violation';
            END IF;
            RETURN NEW;
        END $$
        """,  # noqa: S608
        f"""
        CREATE OR REPLACE FUNCTION {s}.verdict_head_advance() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.seq <= OLD.seq
                OR NOT EXISTS (
                    SELECT 1 FROM {s}.verdicts v WHERE v.seq = NEW.seq AND v.hash = NEW.hash)
                -- max() walks the primary key from its end; "EXISTS (... seq > NEW.seq)"
                -- would scan the whole table under a generic plan.
                OR NEW.seq <> (SELECT max(v.seq) FROM {s}.verdicts v) THEN
                RAISE EXCEPTION '%.verdict_head only moves forward, onto the last verdict',
                    TG_TABLE_SCHEMA
                    USING ERRCODE = 'integrity_constraint_violation';
            END IF;
            RETURN NEW;
        END $$
        """,  # noqa: S608
        # The head follows every INSERT statement onto its last row, inside the statement:
        # no appender has to (or can forget to) move it.
        f"""
        CREATE OR REPLACE FUNCTION {s}.verdicts_move_head() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE {s}.verdict_head h SET seq = last.seq, hash = last.hash
                FROM (SELECT v.seq, v.hash FROM {s}.verdicts v ORDER BY v.seq DESC LIMIT 1) last
                WHERE h.seq <> last.seq;
            RETURN NULL;
        END $$
        """,  # noqa: S608
        f"""
        CREATE OR REPLACE TRIGGER verdicts_move_head AFTER INSERT ON {s}.verdicts
            FOR EACH STATEMENT EXECUTE FUNCTION {s}.verdicts_move_head()
        """,
    ]


def verdict_log_ddl(schema: str, role: str) -> list[str]:
    """Statements creating the verdict log in ``schema`` for the service role ``role`` (for the
    service's Alembic migration, run as the owning admin role; the schema must exist and
    ``role`` must have USAGE on it). Safe for ``op.execute``: no ``:name`` bind markers."""
    s, r = _ident(schema), _ident(role)
    return [
        f"""
        CREATE TABLE {s}.verdicts (
            seq            bigint      PRIMARY KEY CHECK (seq > 0),
            verdict_id     uuid        NOT NULL UNIQUE,
            player_id      text,
            action         text        NOT NULL,
            decision       text        NOT NULL CHECK (decision IN ('ALLOW', 'DENY', 'RECORDED')),
            reasons        jsonb       NOT NULL,
            inputs         jsonb       NOT NULL,
            rule_version   text        NOT NULL,
            config_version text        NOT NULL,
            caller         text        NOT NULL,
            create_time    timestamptz NOT NULL,
            prev_hash      bytea       NOT NULL CHECK (octet_length(prev_hash) = 32),
            hash           bytea       NOT NULL CHECK (octet_length(hash) = 32)
        )
        """,
        f"""
        CREATE TABLE {s}.verdict_head (
            id   boolean PRIMARY KEY DEFAULT true CHECK (id),
            seq  bigint  NOT NULL CHECK (seq >= 0),
            hash bytea   NOT NULL CHECK (octet_length(hash) = 32)
        )
        """,
        f"INSERT INTO {s}.verdict_head (id, seq, hash)"  # noqa: S608
        " VALUES (true, 0, decode(repeat('00', 32), 'hex'))",
        *verdict_log_functions(schema),
        f"""
        CREATE TRIGGER verdicts_append_only BEFORE UPDATE OR DELETE ON {s}.verdicts
            FOR EACH ROW EXECUTE FUNCTION {s}.verdicts_refuse_change()
        """,
        f"""
        CREATE TRIGGER verdicts_no_truncate BEFORE TRUNCATE ON {s}.verdicts
            FOR EACH STATEMENT EXECUTE FUNCTION {s}.verdicts_refuse_change()
        """,
        f"""
        CREATE TRIGGER verdicts_extend_head BEFORE INSERT ON {s}.verdicts
            FOR EACH ROW EXECUTE FUNCTION {s}.verdicts_extend_head()
        """,
        f"""
        CREATE TRIGGER verdict_head_advance BEFORE UPDATE ON {s}.verdict_head
            FOR EACH ROW EXECUTE FUNCTION {s}.verdict_head_advance()
        """,
        f"""
        CREATE TRIGGER verdict_head_keep BEFORE DELETE ON {s}.verdict_head
            FOR EACH ROW EXECUTE FUNCTION {s}.verdicts_refuse_change()
        """,
        f"""
        CREATE TRIGGER verdict_head_no_truncate BEFORE TRUNCATE ON {s}.verdict_head
            FOR EACH STATEMENT EXECUTE FUNCTION {s}.verdicts_refuse_change()
        """,
        # Append-only by grant as well as by trigger: no UPDATE, DELETE or TRUNCATE.
        f"GRANT SELECT, INSERT ON {s}.verdicts TO {r}",
        f"GRANT SELECT, UPDATE ON {s}.verdict_head TO {r}",
    ]


# --------------------------------------------------------------------------------------------
# Verdicts and their hash


@dataclass(frozen=True)
class Verdict:
    """One compliance decision, as the service records it.

    ``reasons`` is a list of ``{"reason": str, "metadata": {str: str}}``; ``inputs`` is what
    the decision used (JSON: no NaN or infinities); ``create_time`` must be timezone-aware.
    """

    verdict_id: uuid.UUID
    player_id: str | None
    action: str
    decision: str
    reasons: list[dict[str, Any]]
    inputs: dict[str, Any]
    rule_version: str
    config_version: str
    caller: str
    create_time: datetime


@dataclass(frozen=True)
class StoredVerdict(Verdict):
    """A verdict as stored: its place in the chain and its hashes."""

    seq: int
    prev_hash: bytes
    hash: bytes


def _utc_iso(moment: datetime) -> str:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("create_time must be timezone-aware")
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def canonical_bytes(verdict: Verdict) -> bytes:
    """The canonical serialisation of every hashed field (see the module docstring)."""
    return json.dumps(
        {
            "verdict_id": str(verdict.verdict_id),
            "player_id": verdict.player_id,
            "action": verdict.action,
            "decision": verdict.decision,
            "reasons": verdict.reasons,
            "inputs": verdict.inputs,
            "rule_version": verdict.rule_version,
            "config_version": verdict.config_version,
            "caller": verdict.caller,
            "create_time": _utc_iso(verdict.create_time),
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode("ascii")


def leaf_hash(prev_hash: bytes, verdict: Verdict) -> bytes:
    """SHA-256 over the previous hash and the canonical serialisation of the verdict. Pure."""
    return hashlib.sha256(prev_hash + canonical_bytes(verdict)).digest()


def _verdict_fields(verdict: Verdict) -> dict[str, Any]:
    return {f.name: getattr(verdict, f.name) for f in dataclasses.fields(Verdict)}


def _validate(verdict: Verdict) -> None:
    if not isinstance(verdict.verdict_id, uuid.UUID):
        raise ValueError("verdict_id must be a uuid.UUID")
    if verdict.decision not in DECISIONS:
        raise ValueError(
            f"decision must be one of {', '.join(DECISIONS)}, not {verdict.decision!r}"
        )
    for name in ("action", "rule_version", "config_version", "caller"):
        value = getattr(verdict, name)
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} must be a non-empty string")
    if verdict.player_id is not None and (
        not isinstance(verdict.player_id, str) or not verdict.player_id
    ):
        raise ValueError("player_id must be a non-empty string or None")
    if not isinstance(verdict.create_time, datetime):
        raise ValueError("create_time must be a datetime")
    _utc_iso(verdict.create_time)
    if not isinstance(verdict.reasons, list):
        raise ValueError("reasons must be a list")
    for item in verdict.reasons:
        if (
            not isinstance(item, dict)
            or set(item) != {"reason", "metadata"}
            or not isinstance(item["reason"], str)
            or not item["reason"]
            or not isinstance(item["metadata"], dict)
            or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in item["metadata"].items()
            )
        ):
            raise ValueError(
                'each reason must be {"reason": non-empty str, "metadata": {str: str}}, '
                f"not {item!r}"
            )
    if not isinstance(verdict.inputs, dict) or not all(isinstance(k, str) for k in verdict.inputs):
        raise ValueError("inputs must be a dict with string keys")


def json_safe(value: Any) -> Any:
    """``value`` with dates and times as ISO 8601 strings, for a verdict's inputs."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def _json_text(value: object, name: str) -> str:
    try:
        return json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} is not JSON: {exc}") from None


def _stored(row: Sequence[Any]) -> StoredVerdict:
    (
        seq,
        verdict_id,
        player_id,
        action,
        decision,
        reasons,
        inputs,
        rule_version,
        config_version,
        caller,
        create_time,
        prev_hash,
        hash_,
    ) = row
    return StoredVerdict(
        verdict_id=verdict_id,
        player_id=player_id,
        action=action,
        decision=decision,
        reasons=reasons,
        inputs=inputs,
        rule_version=rule_version,
        config_version=config_version,
        caller=caller,
        create_time=create_time,
        seq=seq,
        prev_hash=bytes(prev_hash),
        hash=bytes(hash_),
    )


# --------------------------------------------------------------------------------------------
# Appending and reading


async def append(conn: AsyncConnection, schema: str, verdict: Verdict) -> StoredVerdict:
    """Append one verdict; see :func:`append_many`."""
    (stored,) = await append_many(conn, schema, [verdict])
    return stored


class Writes(NamedTuple):
    """Other rows the caller writes in the append's statement (its round trip): CTEs, e.g.
    ``"requests AS (INSERT INTO ...)"`` (several separated by commas), and their bound
    parameters (any name but ``rows``). The SQL should be a constant: a statement is built
    once per schema and SQL."""

    ctes: str
    params: Mapping[str, Any]


async def append_many(
    conn: AsyncConnection,
    schema: str,
    verdicts: Sequence[Verdict],
    also: Writes | None = None,
) -> list[StoredVerdict]:
    """Append ``verdicts``, in order, in the caller's transaction (which the caller commits;
    the rows exist if and only if that transaction commits), in one round trip whatever
    their number (two when their inputs need jsonb's normalising). Holds the head's row
    lock until then, so keep the transaction short. Run it at READ COMMITTED (the default):
    under REPEATABLE READ or SERIALIZABLE, concurrent appends fail with serialization errors
    the caller must retry.

    Raises ValueError for a malformed verdict, before touching the database; a duplicate
    ``verdict_id`` raises IntegrityError (unique violation) from the database. `also`'s rows
    are written by the same statement, so they exist if and only if the verdicts do.

    The returned verdicts carry ``reasons`` and ``inputs`` as jsonb normalised them, i.e.
    exactly what :func:`get` returns and what the hash covers."""
    if not verdicts:
        return []
    append = _Append.of(schema, verdicts, also)
    if append.needs_normalising:
        normalise, params = append.normalise
        append = append.normalised((await conn.execute(normalise, params)).all())
    return append.stored((await conn.execute(append.insert, append.params)).all())


async def queue_append(
    pipeline: db.Pipeline,
    schema: str,
    verdicts: Sequence[Verdict],
    also: Writes | None = None,
) -> db.Queued[list[StoredVerdict]]:
    """:func:`append_many` in a pipelined transaction: the append is queued, to go out with
    the COMMIT (the head's lock is then held for no round trip of its own), and its result
    read once committed; inputs that need jsonb's normalising cost a round trip first."""
    if not verdicts:
        return db.Queued.of([])
    append = _Append.of(schema, verdicts, also)
    if append.needs_normalising:
        normalise, params = append.normalise
        append = append.normalised(await (await pipeline.queue(normalise, params, list)).result())
    return await pipeline.queue(append.insert, append.params, append.stored)


@dataclass(frozen=True)
class _Append:
    """One append's statement and parameters, and the reading of its result."""

    schema: str
    verdicts: list[Verdict]
    also: Writes | None

    @classmethod
    def of(cls, schema: str, verdicts: Sequence[Verdict], also: Writes | None) -> _Append:
        for verdict in verdicts:
            _validate(verdict)
        return cls(schema, list(verdicts), also)

    @property
    def _statements(self) -> _AppendStatements:
        return _append_statements(_ident(self.schema), self.also.ctes if self.also else "")

    @property
    def needs_normalising(self) -> bool:
        # What jsonb hands back equals what goes in (no floats, no non-string keys, no
        # tuples): the values are hashed as they are. Otherwise the hash must cover what
        # jsonb will hand back to the verifier (e.g. 1e16 comes back as an int): PostgreSQL
        # normalises the JSON first.
        return not all(_jsonb_stable(v.inputs) for v in self.verdicts)

    @property
    def normalise(self) -> tuple[TextClause, dict[str, Any]]:
        return self._statements.normalise, {
            "reasons": [_json_text(v.reasons, "reasons") for v in self.verdicts],
            "inputs": [_json_text(v.inputs, "inputs") for v in self.verdicts],
        }

    def normalised(self, rows: Sequence[Any]) -> _Append:
        verdicts = [
            dataclasses.replace(v, reasons=row[0], inputs=row[1])
            for v, row in zip(self.verdicts, rows, strict=True)
        ]
        return dataclasses.replace(self, verdicts=verdicts)

    @property
    def insert(self) -> TextClause:
        return self._statements.insert

    @property
    def params(self) -> dict[str, Any]:
        # One statement locks the head, links each verdict to the one before it (the same
        # SHA-256 as leaf_hash, over the canonical bytes computed here) and inserts them
        # all. The batch travels as one JSON document: encoded by the json module in C and
        # decoded by PostgreSQL, where a list per column would be dumped element by element.
        batch = [
            {
                "ord": ord_,
                "verdict_id": str(v.verdict_id),
                "player_id": v.player_id,
                "action": v.action,
                "decision": v.decision,
                "reasons": v.reasons,
                "inputs": v.inputs,
                "rule_version": v.rule_version,
                "config_version": v.config_version,
                "caller": v.caller,
                "create_time": _utc_iso(v.create_time),
                "canonical": canonical_bytes(v).decode("ascii"),
            }
            for ord_, v in enumerate(self.verdicts, 1)
        ]
        return {**(self.also.params if self.also else {}), "rows": _json_text(batch, "verdicts")}

    def stored(self, rows: Sequence[Any]) -> list[StoredVerdict]:
        chained = sorted(tuple(row) for row in rows)
        if len(chained) != len(self.verdicts):
            raise RuntimeError(
                f"{self.schema}.verdict_head has no row: the verdict log was not migrated"
            )
        return [
            StoredVerdict(**_verdict_fields(v), seq=seq, prev_hash=bytes(prev), hash=bytes(digest))
            for v, (seq, prev, digest) in zip(self.verdicts, chained, strict=True)
        ]


class _AppendStatements(NamedTuple):
    normalise: TextClause
    insert: TextClause


@functools.cache
def _append_statements(s: str, also: str) -> _AppendStatements:
    """Built once per schema and `also` (building a text clause parses it)."""
    return _AppendStatements(
        normalise=text(
            "SELECT CAST(n.r AS jsonb), CAST(n.i AS jsonb) FROM"
            " unnest(CAST(:reasons AS text[]), CAST(:inputs AS text[]))"
            " WITH ORDINALITY AS n(r, i, ord) ORDER BY n.ord"
        ),
        insert=text(
            f"WITH RECURSIVE {also + ', ' if also else ''}"  # noqa: S608
            "r AS MATERIALIZED (SELECT * FROM"
            " jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(ord int, verdict_id uuid,"
            " player_id text, action text, decision text, reasons jsonb, inputs jsonb,"
            " rule_version text, config_version text, caller text, create_time timestamptz,"
            " canonical text)),"
            f" head AS (SELECT seq, hash FROM {s}.verdict_head FOR UPDATE),"
            " chain AS (SELECT 0 AS ord, seq, hash FROM head UNION ALL"
            " SELECT c.ord + 1, c.seq + 1, sha256(c.hash || convert_to(r.canonical, 'UTF8'))"
            " FROM chain c JOIN r ON r.ord = c.ord + 1)"
            f" INSERT INTO {s}.verdicts ({_COLUMNS})"
            " SELECT c.seq, r.verdict_id, r.player_id, r.action, r.decision, r.reasons,"
            " r.inputs, r.rule_version, r.config_version, r.caller, r.create_time, p.hash,"
            " c.hash FROM r JOIN chain c ON c.ord = r.ord JOIN chain p ON p.ord = r.ord - 1"
            " ORDER BY r.ord RETURNING seq, prev_hash, hash"
        ),
    )


def _jsonb_stable(value: Any) -> bool:
    """Does jsonb hand ``value`` back unchanged? Not floats (1e16 comes back an int), not
    non-string keys (they come back strings), not tuples (they come back lists)."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _jsonb_stable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_jsonb_stable(v) for v in value)
    return value is None or isinstance(value, str | int)


async def get(conn: AsyncConnection, schema: str, verdict_id: uuid.UUID) -> StoredVerdict | None:
    """The stored verdict with this id, or None."""
    row = (await conn.execute(_get_statement(_ident(schema)), {"id": verdict_id})).one_or_none()
    return None if row is None else _stored(row)


async def queue_get(
    pipeline: db.Pipeline, schema: str, verdict_id: uuid.UUID
) -> db.Queued[StoredVerdict | None]:
    """:func:`get` in a pipelined transaction."""
    return await pipeline.queue(
        _get_statement(_ident(schema)),
        {"id": verdict_id},
        lambda rows: _stored(rows[0]) if rows else None,
    )


@functools.cache
def _get_statement(s: str) -> TextClause:
    return text(f"SELECT {_COLUMNS} FROM {s}.verdicts WHERE verdict_id = :id")  # noqa: S608


async def _read_head(conn: AsyncConnection, schema: str) -> tuple[int, bytes] | None:
    row = (
        await conn.execute(text(f"SELECT seq, hash FROM {_ident(schema)}.verdict_head"))  # noqa: S608
    ).one_or_none()
    return None if row is None else (int(row[0]), bytes(row[1]))


# --------------------------------------------------------------------------------------------
# Keys and checkpoints


class CheckpointError(Exception):
    """A checkpoint could not be written."""


class CheckpointConflict(CheckpointError):
    """A checkpoint for that seq already exists with another hash: the log was rewritten."""


class ChainError(CheckpointError):
    """The log does not extend the latest checkpoint; nothing was signed."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{p.kind} at seq {p.seq}: {p.detail}" for p in problems))


class InvalidCheckpoint(ValueError):
    """A checkpoint that is malformed, for another log or key, or badly signed."""


def key_id(public_key: Ed25519PublicKey) -> str:
    """First 16 hex digits of the SHA-256 of the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _public_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM (SubjectPublicKeyInfo) file."""
    key = serialization.load_pem_public_key(Path(path).read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} does not hold an Ed25519 public key")
    return key


def _load_private_key(path: Path) -> Ed25519PrivateKey:
    # read_secret_bytes refuses a key file readable by group or others.
    key = serialization.load_pem_private_key(read_secret_bytes(path), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return key


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def ensure_signing_key(private_path: Path, public_path: Path) -> str:
    """A development signing keypair: creates the private key (PEM, PKCS8, unencrypted, mode
    0600) if it does not exist, (re)writes the public key (PEM, mode 0644) to match it, and
    returns the key id. Production keys come from the secret store instead."""
    private_path, public_path = Path(private_path), Path(public_path)
    if not private_path.exists():
        private_path.parent.mkdir(parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
    public_key = _load_private_key(private_path).public_key()
    pem_public = _public_pem(public_key)
    if not public_path.exists() or public_path.read_bytes() != pem_public:
        public_path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(public_path, pem_public, 0o644)
    return key_id(public_key)


def _signed_message(fields: Mapping[str, Any]) -> bytes:
    return json.dumps(
        {k: fields[k] for k in ("log", "seq", "hash", "time", "key_id")},
        sort_keys=True,
        separators=(",", ":"),
    ).encode("ascii")


class CheckpointSigner:
    """Signs checkpoints of the chain head with an Ed25519 private key read from a PEM file
    (PKCS8, unencrypted, not readable by group or others)."""

    def __init__(self, private_key_path: Path) -> None:
        self._key = _load_private_key(Path(private_key_path))
        self.public_key: Ed25519PublicKey = self._key.public_key()
        self.key_id: str = key_id(self.public_key)

    def sign(self, log: str, seq: int, head_hash: bytes, at: datetime) -> dict[str, Any]:
        """``{"log", "seq", "hash" (hex), "time", "key_id", "signature" (base64)}``, the
        signature being over the canonical JSON of the other five fields."""
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise ValueError("seq must be a non-negative integer")
        if len(head_hash) != 32:
            raise ValueError("head_hash must be 32 bytes")
        fields: dict[str, Any] = {
            "log": log,
            "seq": seq,
            "hash": head_hash.hex(),
            "time": _utc_iso(at),
            "key_id": self.key_id,
        }
        signature = self._key.sign(_signed_message(fields))
        return {**fields, "signature": base64.b64encode(signature).decode("ascii")}


class CheckedCheckpoint(NamedTuple):
    seq: int
    hash: bytes
    time: str
    key_id: str


def check_checkpoint(
    checkpoint: object, public_key: Ed25519PublicKey, log_of: str
) -> CheckedCheckpoint:
    """The checkpoint's seq and hash if it is a well-formed checkpoint of this log, signed by
    ``public_key``; raises InvalidCheckpoint otherwise."""
    if not isinstance(checkpoint, dict):
        raise InvalidCheckpoint("a checkpoint is a JSON object")
    missing = {"log", "seq", "hash", "time", "key_id", "signature"} - set(checkpoint)
    if missing:
        raise InvalidCheckpoint(f"missing fields: {', '.join(sorted(missing))}")
    log, seq, hash_hex = checkpoint["log"], checkpoint["seq"], checkpoint["hash"]
    time, signer, signature = checkpoint["time"], checkpoint["key_id"], checkpoint["signature"]
    if log != log_of:
        raise InvalidCheckpoint(f"checkpoint of log {log!r}, not {log_of!r}")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise InvalidCheckpoint("seq is not a non-negative integer")
    if not isinstance(hash_hex, str) or not re.fullmatch(r"[0-9a-f]{64}", hash_hex):
        raise InvalidCheckpoint("hash is not 64 lowercase hex digits")
    if not isinstance(time, str) or not isinstance(signer, str) or not isinstance(signature, str):
        raise InvalidCheckpoint("time, key_id and signature must be strings")
    expected = key_id(public_key)
    if signer != expected:
        raise InvalidCheckpoint(f"signed by key {signer}, the public key given is {expected}")
    try:
        raw_signature = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidCheckpoint("signature is not base64") from None
    try:
        public_key.verify(raw_signature, _signed_message(checkpoint))
    except InvalidSignature:
        raise InvalidCheckpoint("the signature does not verify") from None
    return CheckedCheckpoint(seq, bytes.fromhex(hash_hex), time, signer)


def checkpoint_path(directory: Path, seq: int) -> Path:
    return Path(directory) / f"checkpoint-{seq}.json"


def latest_checkpoint(directory: Path) -> Path | None:
    """The checkpoint file with the highest seq in ``directory``, if any."""
    directory = Path(directory)
    if not directory.is_dir():
        return None
    best: tuple[int, Path] | None = None
    for entry in directory.iterdir():
        match = _CHECKPOINT_FILE.fullmatch(entry.name)
        if match and (best is None or int(match[1]) > best[0]):
            best = (int(match[1]), entry)
    return None if best is None else best[1]


def read_checkpoint(path: Path) -> object:
    """The JSON content of a checkpoint file (not checked: see check_checkpoint)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_checkpoint(directory: Path, checkpoint: dict[str, Any]) -> Path:
    """Write ``checkpoint-<seq>.json`` (mode 0644) atomically: a temporary file, fsync, rename.
    An existing checkpoint for the same seq is kept: if it records the same hash the call
    is a no-op, otherwise it raises CheckpointConflict (evidence is never overwritten)."""
    seq = checkpoint["seq"]
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise ValueError("checkpoint seq must be a non-negative integer")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = checkpoint_path(directory, seq)
    if target.exists():
        try:
            existing = read_checkpoint(target)
        except (OSError, ValueError) as exc:
            raise CheckpointConflict(f"{target} exists and is unreadable: {exc}") from None
        if (
            isinstance(existing, dict)
            and existing.get("log") == checkpoint.get("log")
            and existing.get("hash") == checkpoint.get("hash")
        ):
            return target
        old = existing.get("hash") if isinstance(existing, dict) else None
        raise CheckpointConflict(
            f"{target} records hash {old} for seq {seq}, not {checkpoint.get('hash')}:"
            " the log was rewritten"
        )
    data = (json.dumps(checkpoint, sort_keys=True, indent=2) + "\n").encode("ascii")
    _write_atomically(target, data, 0o644)
    return target


async def checkpoint(
    conn: AsyncConnection, schema: str, signer: CheckpointSigner, directory: Path
) -> Path:
    """Sign the current head and write it into ``directory``; returns the file.

    If the directory already holds checkpoints, the chain from the latest one up to the head
    is checked first (only those rows), and ChainError is raised instead of signing a log
    that no longer extends it; CheckpointConflict if a different checkpoint exists for the
    same seq."""
    head = await _read_head(conn, schema)
    if head is None:
        raise CheckpointError(f"{schema}.verdict_head has no row")
    head_seq, head_hash = head
    previous_path = latest_checkpoint(directory)
    if previous_path is not None:
        try:
            previous = await asyncio.to_thread(read_checkpoint, previous_path)
            if isinstance(previous, dict) and previous.get("key_id") == signer.key_id:
                checked = check_checkpoint(previous, signer.public_key, log_name(schema))
            else:  # signed before a key rotation: trust its seq and hash as filed
                if not isinstance(previous, dict):
                    raise InvalidCheckpoint("a checkpoint is a JSON object")
                checked = CheckedCheckpoint(
                    int(previous["seq"]), bytes.fromhex(str(previous["hash"])), "", ""
                )
        except (OSError, KeyError, TypeError, ValueError) as exc:  # InvalidCheckpoint too
            raise ChainError(
                [Problem(BAD_SIGNATURE, None, f"latest checkpoint {previous_path}: {exc}")]
            ) from None
        report = VerifyReport(head_seq=head_seq)
        await _check_extends(conn, schema, checked, head, report)
        if not report.ok:
            raise ChainError(report.problems)
    signed = signer.sign(log_name(schema), head_seq, head_hash, datetime.now(UTC))
    return await asyncio.to_thread(write_checkpoint, Path(directory), signed)


# --------------------------------------------------------------------------------------------
# Verification


class Problem(NamedTuple):
    kind: str
    seq: int | None
    detail: str


@dataclass
class VerifyReport:
    rows_checked: int = 0
    problems: list[Problem] = field(default_factory=list)
    head_seq: int | None = None
    checkpoint_seq: int | None = None
    # Problems beyond max_problems are counted, not kept, so memory stays bounded.
    problems_omitted: int = 0
    max_problems: int = field(default=1000, repr=False)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.problems_omitted

    def add(self, kind: str, seq: int | None, detail: str) -> None:
        if len(self.problems) < self.max_problems:
            self.problems.append(Problem(kind, seq, detail))
        else:
            self.problems_omitted += 1

    def render(self) -> str:
        lines = [f"verdict log: {self.rows_checked} rows checked, head at seq {self.head_seq}"]
        if self.checkpoint_seq is not None:
            lines.append(f"checkpoint at seq {self.checkpoint_seq} checked")
        lines += [
            f"{p.kind} at seq {'-' if p.seq is None else p.seq}: {p.detail}" for p in self.problems
        ]
        if self.problems_omitted:
            lines.append(f"... and {self.problems_omitted} more problems")
        total = len(self.problems) + self.problems_omitted
        lines.append("OK" if self.ok else f"FAILED: {total} problem(s)")
        return "\n".join(lines)


@dataclass
class _ScanPosition:
    """Where a scan is: the last seq and stored hash seen, and the watched row's hash."""

    seq: int
    hash: bytes
    watched: bytes | None = None


async def _scan(
    conn: AsyncConnection,
    schema: str,
    after: tuple[int, bytes],
    upto: int | None,
    report: VerifyReport,
    watch: int | None = None,
) -> tuple[int, bytes, bytes | None]:
    """Check the rows after ``after`` (a seq and the hash it should have) up to ``upto``
    (all rows if None), in seq order, through a server-side cursor. Returns the last seq and
    stored hash seen, and the stored hash of the row at seq ``watch`` if it was seen.

    Checking a row is CPU (its JSON parsed, serialised again and hashed): a service's
    periodic checkpoint scans every row since the last one, thousands a minute, and done on
    the event loop it held the service's every call for that long (a compliance check
    waited 0.4 s behind a 15 s checkpoint, 2 s behind a 60 s one, under load). So the rows
    are fetched on the loop and checked, a batch at a time, in a worker thread."""
    s = _ident(schema)
    bound = "" if upto is None else " AND seq <= :upto"
    result = await conn.stream(
        text(f"SELECT {_SCAN_COLUMNS} FROM {s}.verdicts WHERE seq > :after{bound} ORDER BY seq"),  # noqa: S608
        {"after": after[0], "upto": upto} if upto is not None else {"after": after[0]},
        execution_options={"yield_per": _STREAM_BATCH},
    )
    position = _ScanPosition(*after)
    async for rows in result.partitions(_STREAM_BATCH):
        await asyncio.to_thread(_check_rows, [tuple(r) for r in rows], position, report, watch)
    return position.seq, position.hash, position.watched


def _check_rows(
    rows: list[tuple[Any, ...]], position: _ScanPosition, report: VerifyReport, watch: int | None
) -> None:
    """Check consecutive scanned rows against the position before them, moving it on."""
    for i, row in enumerate(rows):
        if i % _ROWS_PER_TURN == 0:
            # Hand the GIL to the event loop if it is waiting: otherwise it waits up to the
            # interpreter's switch interval (5 ms) at each of its wake-ups.
            time.sleep(0)
        # reasons and inputs as psycopg's jsonb loader would have made them: json.loads of
        # the same text.
        stored = _stored((*row[:5], json.loads(row[5]), json.loads(row[6]), *row[7:]))
        report.rows_checked += 1
        last_seq, last_hash = position.seq, position.hash
        if stored.seq != last_seq + 1:
            missing = f"{last_seq + 1}..{stored.seq - 1}" if stored.seq > last_seq + 2 else ""
            report.add(
                SEQUENCE_GAP,
                stored.seq,
                f"expected seq {last_seq + 1}, found {stored.seq}"
                + (f" (missing {missing})" if missing else ""),
            )
        if stored.prev_hash != last_hash:
            report.add(
                CHAIN_BROKEN,
                stored.seq,
                f"prev_hash {stored.prev_hash.hex()} is not the hash of seq {last_seq}"
                f" ({last_hash.hex()})",
            )
        try:
            recomputed = leaf_hash(stored.prev_hash, stored)
        except (TypeError, ValueError) as exc:
            report.add(CHAIN_BROKEN, stored.seq, f"cannot serialise the row: {exc}")
        else:
            if recomputed != stored.hash:
                report.add(
                    CHAIN_BROKEN,
                    stored.seq,
                    f"stored hash {stored.hash.hex()} != recomputed {recomputed.hex()}:"
                    " the row's content was altered",
                )
        if stored.seq == watch:
            position.watched = stored.hash
        # Continue from the stored hash: one altered row is one problem, not a cascade.
        position.seq, position.hash = stored.seq, stored.hash


def _compare_head(
    report: VerifyReport, head: tuple[int, bytes], last_seq: int, last_hash: bytes
) -> None:
    if (last_seq, last_hash) != head:
        report.add(
            HEAD_MISMATCH,
            head[0],
            f"head is seq {head[0]} hash {head[1].hex()}, last row is seq {last_seq}"
            f" hash {last_hash.hex()}",
        )


def _compare_checkpoint(
    report: VerifyReport, checked: CheckedCheckpoint, head_seq: int | None, found: bytes | None
) -> None:
    if checked.seq == 0:
        found = GENESIS_HASH
    if head_seq is not None and checked.seq > head_seq:
        report.add(
            CHECKPOINT_MISMATCH,
            checked.seq,
            f"checkpoint at seq {checked.seq} is beyond the head (seq {head_seq}):"
            " rows were removed",
        )
    elif found is None:
        report.add(CHECKPOINT_MISMATCH, checked.seq, "the checkpointed row is missing")
    elif found != checked.hash:
        report.add(
            CHECKPOINT_MISMATCH,
            checked.seq,
            f"checkpoint signed hash {checked.hash.hex()} at {checked.time},"
            f" the row has {found.hex()}: the log was rewritten",
        )


async def _check_extends(
    conn: AsyncConnection,
    schema: str,
    checked: CheckedCheckpoint,
    head: tuple[int, bytes],
    report: VerifyReport,
) -> None:
    """Does the chain from the checkpointed row up to the head hold? (Rows after it only.)"""
    if checked.seq > head[0]:
        _compare_checkpoint(report, checked, head[0], None)
        return
    found: bytes | None = GENESIS_HASH
    if checked.seq > 0:
        found = (
            await conn.execute(
                text(f"SELECT hash FROM {_ident(schema)}.verdicts WHERE seq = :seq"),  # noqa: S608
                {"seq": checked.seq},
            )
        ).scalar_one_or_none()
        found = None if found is None else bytes(found)
    _compare_checkpoint(report, checked, head[0], found)
    if report.ok:
        last_seq, last_hash, _ = await _scan(
            conn, schema, (checked.seq, checked.hash), head[0], report
        )
        _compare_head(report, head, last_seq, last_hash)


async def verify(
    conn: AsyncConnection,
    schema: str,
    public_key_path: Path,
    checkpoint_path: Path | None = None,
    *,
    max_problems: int = 1000,
) -> VerifyReport:
    """Recompute the whole chain and, if given, check a signed checkpoint against it.

    Reads the head first, then the rows up to it: rows are immutable and appended with the
    head in one transaction, so this is consistent at any isolation level while appends go
    on. Rows beyond a head that does not cover them are reported as HEAD_MISMATCH. The
    connection's transaction is left open (read-only work) for the caller to end."""
    public_key = load_public_key(Path(public_key_path))
    report = VerifyReport(max_problems=max_problems)
    checked: CheckedCheckpoint | None = None
    if checkpoint_path is not None:
        try:
            content = await asyncio.to_thread(read_checkpoint, Path(checkpoint_path))
            checked = check_checkpoint(content, public_key, log_name(schema))
        except (OSError, ValueError) as exc:  # InvalidCheckpoint and JSON errors included
            report.add(BAD_SIGNATURE, None, f"checkpoint {checkpoint_path}: {exc}")
        else:
            report.checkpoint_seq = checked.seq
    head = await _read_head(conn, schema)
    if head is None:
        report.add(HEAD_MISMATCH, None, f"{schema}.verdict_head has no row")
    else:
        report.head_seq = head[0]
    watch = None if checked is None else checked.seq
    last_seq, last_hash, found = await _scan(
        conn, schema, (0, GENESIS_HASH), None if head is None else head[0], report, watch
    )
    if head is not None:
        _compare_head(report, head, last_seq, last_hash)
        beyond = (
            await conn.execute(
                text(f"SELECT max(seq) FROM {_ident(schema)}.verdicts WHERE seq > :seq"),  # noqa: S608
                {"seq": head[0]},
            )
        ).scalar_one()
        if beyond is not None:
            # Maybe appended since we read the head; only rows the head still misses count.
            fresh = await _read_head(conn, schema)
            if fresh is None or fresh[0] < beyond:
                report.add(
                    HEAD_MISMATCH,
                    int(beyond),
                    f"rows up to seq {beyond} lie beyond the head (seq"
                    f" {None if fresh is None else fresh[0]})",
                )
    if checked is not None:
        _compare_checkpoint(report, checked, None if head is None else head[0], found)
    return report


# --------------------------------------------------------------------------------------------
# Command line


def _database_url(dsn_file: Path) -> URL:
    dsn = read_secret(dsn_file)
    try:
        url = make_url(dsn)
    except ArgumentError:
        # The message would quote the DSN, password included.
        raise ValueError(f"{dsn_file} does not hold a database URL") from None
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url


async def _run_verify(args: argparse.Namespace, checkpoint_file: Path | None) -> int:
    engine = create_async_engine(_database_url(args.dsn_file), poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            report = await verify(conn, args.schema, args.public_key, checkpoint_file)
    finally:
        await engine.dispose()
    if checkpoint_file is not None:
        print(f"checkpoint file: {checkpoint_file}")
    print(report.render())
    return 0 if report.ok else 1


async def _run_checkpoint(args: argparse.Namespace) -> int:
    signer = CheckpointSigner(args.private_key)
    engine = create_async_engine(_database_url(args.dsn_file), poolclass=NullPool)
    try:
        async with engine.begin() as conn:
            path = await checkpoint(conn, args.schema, signer, args.directory)
    finally:
        await engine.dispose()
    print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.runtime.verdict_log",
        description="Verify, checkpoint and key the compliance verdict log.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_verify = sub.add_parser("verify", help="recompute the chain; exit 1 on problems")
    p_verify.add_argument("--dsn-file", type=Path, required=True, help="file holding the DSN")
    p_verify.add_argument("--schema", default="compliance")
    p_verify.add_argument("--public-key", type=Path, required=True)
    p_verify.add_argument(
        "--checkpoint", type=Path, help="a checkpoint file, or a directory (its latest is used)"
    )
    p_checkpoint = sub.add_parser("checkpoint", help="sign the current head into a directory")
    p_checkpoint.add_argument("--dsn-file", type=Path, required=True)
    p_checkpoint.add_argument("--schema", default="compliance")
    p_checkpoint.add_argument("--private-key", type=Path, required=True)
    p_checkpoint.add_argument("--directory", type=Path, required=True)
    p_keygen = sub.add_parser("keygen", help="create a development signing keypair")
    p_keygen.add_argument("--private-key", type=Path, required=True)
    p_keygen.add_argument("--public-key", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "keygen":
            print(ensure_signing_key(args.private_key, args.public_key))
            return 0
        if args.command == "checkpoint":
            return asyncio.run(_run_checkpoint(args))
        checkpoint_file: Path | None = args.checkpoint
        if checkpoint_file is not None and checkpoint_file.is_dir():
            checkpoint_file = latest_checkpoint(checkpoint_file)
            if checkpoint_file is None:
                raise ValueError(f"no checkpoint-<seq>.json in {args.checkpoint}")
        return asyncio.run(_run_verify(args, checkpoint_file))
    except (SecretFileError, OSError, ValueError, CheckpointError, SQLAlchemyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
