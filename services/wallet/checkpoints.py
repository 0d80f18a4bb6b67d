"""Signed checkpoints of the wallet's per-account hash chains, written outside the database,
so a ledger rewritten by someone who can bypass the append-only triggers (and recompute
every later hash and the account row) is still exposed by Reconcile.

Every interval a worker lists the head (player, currency, last sequence, last hash) of each
account whose head moved since the previous checkpoint and writes it as
``checkpoint-<n>.json`` into a directory that the database's administrators cannot write.
It reuses the verdict log's Ed25519 signer and file writer (``services.runtime.verdict_log``):
the signed ``hash`` is the SHA-256 of the file's body, which holds

* ``previous``: the SHA-256 of the previous checkpoint file's bytes (zeros for the first),
  so the checkpoints form a chain of their own and a removed or altered file shows;
* ``high_water``: the newest entry time the worker has seen; the next run looks at entries
  created after it minus an overlap (a transaction commits a little after the time it
  stamped, and replicas' clocks differ), through the partial index on entries(create_time);
* ``heads``: at most HEADS_PER_CHECKPOINT accounts (more moved: several files in one run).

Nothing is written when no head moved; a file is never overwritten. One writer at a time
across replicas (a transaction-scoped advisory lock), so replicas may share the directory.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy.ext.asyncio import AsyncEngine

from services.runtime import verdict_log
from services.runtime.logs import get_logger
from services.wallet import store
from services.wallet.reconcile import Discrepancy, Report, account_name

log = get_logger()

LOG = "wallet-ledger"
GENESIS_DIGEST = bytes(32)
# Bounds a file, hence what the writer and the verifier hold in memory at once.
HEADS_PER_CHECKPOINT = 2000
# Heads looked up per round trip when verifying.
LOOKUP_BATCH = 1000

# Discrepancy kinds Reconcile reports from checkpoints.
CHECKPOINT_MISMATCH = "CHECKPOINT_MISMATCH"
BAD_CHECKPOINT = "BAD_CHECKPOINT"

_HEAD_FIELDS = {"player_id", "currency", "last_sequence", "last_hash"}


class LedgerCheckpoint(NamedTuple):
    seq: int
    previous: bytes
    high_water: dt.datetime | None
    heads: list[tuple[str, str, int, bytes]]


class Tip(NamedTuple):
    """The latest checkpoint: where the next one continues from."""

    seq: int
    digest: bytes
    high_water: dt.datetime | None


def _iso(moment: dt.datetime | None) -> str:
    return "" if moment is None else moment.astimezone(dt.UTC).isoformat(timespec="microseconds")


def body_digest(previous: str, high_water: str, heads: Sequence[dict[str, Any]]) -> bytes:
    """What the signature covers (through the signed ``hash``): the body, canonical JSON."""
    body = {"previous": previous, "high_water": high_water, "heads": list(heads)}
    return hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode("ascii")
    ).digest()


def keyring(public_key_files: Sequence[Path]) -> dict[str, Any]:
    """The public keys checkpoints may be signed with, by key id: the wallet's current one and
    those retired by key rotations (files signed before a rotation stay verifiable)."""
    keys = [verdict_log.load_public_key(Path(path)) for path in public_key_files]
    return {verdict_log.key_id(key): key for key in keys}


def parse_checkpoint(raw: bytes, keys: Mapping[str, Any]) -> LedgerCheckpoint:
    """A checkpoint file's content if it is a wallet checkpoint signed by one of ``keys`` (by
    key id) whose body is the one signed; raises InvalidCheckpoint otherwise."""
    try:
        content = json.loads(raw)
    except ValueError:
        raise verdict_log.InvalidCheckpoint("not JSON") from None
    signer = content.get("key_id") if isinstance(content, dict) else None
    public_key = keys.get(signer) if isinstance(signer, str) else None
    if public_key is None:
        raise verdict_log.InvalidCheckpoint(
            f"signed by key {signer!r}, neither the wallet's nor a retired key it holds"
        )
    checked = verdict_log.check_checkpoint(content, public_key, LOG)
    previous, high_water, heads = (
        content.get("previous"),
        content.get("high_water"),
        content.get("heads"),
    )
    if not isinstance(previous, str) or not isinstance(high_water, str):
        raise verdict_log.InvalidCheckpoint("previous and high_water must be strings")
    if not isinstance(heads, list):
        raise verdict_log.InvalidCheckpoint("heads must be a list")
    if body_digest(previous, high_water, heads) != checked.hash:
        raise verdict_log.InvalidCheckpoint(
            "the body is not the one signed: heads or links were altered"
        )
    parsed: list[tuple[str, str, int, bytes]] = []
    try:
        for head in heads:
            if not isinstance(head, dict) or set(head) != _HEAD_FIELDS:
                raise ValueError(f"malformed head {head!r}")
            parsed.append(
                (
                    str(head["player_id"]),
                    str(head["currency"]),
                    int(head["last_sequence"]),
                    bytes.fromhex(head["last_hash"]),
                )
            )
        return LedgerCheckpoint(
            checked.seq,
            bytes.fromhex(previous),
            dt.datetime.fromisoformat(high_water) if high_water else None,
            parsed,
        )
    except (TypeError, ValueError) as exc:
        raise verdict_log.InvalidCheckpoint(str(exc)) from None


def _sequence_of(path: Path) -> int:
    return int(path.stem.removeprefix("checkpoint-"))


class LedgerCheckpointer:
    """The background worker writing checkpoints (see the module docstring)."""

    def __init__(
        self,
        engine: AsyncEngine,
        signing_key_file: Path,
        directory: Path,
        interval_seconds: float,
        overlap_seconds: float,
        retired_public_key_files: Sequence[Path] = (),
    ) -> None:
        self._engine = engine
        self._signer = verdict_log.CheckpointSigner(signing_key_file)
        # What the latest file may be signed with: this key, or one retired by a rotation.
        self._keys = {
            self._signer.key_id: self._signer.public_key,
            **keyring(retired_public_key_files),
        }
        self._directory = Path(directory)
        self._interval = interval_seconds
        self._overlap = dt.timedelta(seconds=overlap_seconds)
        # Heads already checkpointed whose entries are still inside the overlap window, so
        # finding them again writes nothing. Lost on restart: the first run after one may
        # list the last window's heads again, which is harmless.
        self._written: dict[tuple[str, str], tuple[int, dt.datetime]] = {}

    def _tip(self) -> Tip:
        path = verdict_log.latest_checkpoint(self._directory)
        if path is None:
            return Tip(0, GENESIS_DIGEST, None)
        raw = path.read_bytes()
        # A chain continues only from a checkpoint that verifies (under the current key or a
        # retired one): a tampered directory, or a rotation whose old public key was not
        # configured, stops the writer, loudly, rather than being chained onto.
        high_water = parse_checkpoint(raw, self._keys).high_water
        return Tip(_sequence_of(path), hashlib.sha256(raw).digest(), high_water)

    def _write(self, tip: Tip, heads: Sequence[store.Head], high_water: dt.datetime | None) -> Tip:
        records = [
            {
                "player_id": h.player_id,
                "currency": h.currency,
                "last_sequence": h.sequence,
                "last_hash": h.hash.hex(),
            }
            for h in heads
        ]
        previous, water = tip.digest.hex(), _iso(high_water)
        signed = self._signer.sign(
            LOG, tip.seq + 1, body_digest(previous, water, records), dt.datetime.now(dt.UTC)
        )
        path = verdict_log.write_checkpoint(
            self._directory, {**signed, "previous": previous, "high_water": water, "heads": records}
        )
        for h in heads:
            self._written[(h.player_id, h.currency)] = (h.sequence, h.create_time)
        return Tip(tip.seq + 1, hashlib.sha256(path.read_bytes()).digest(), high_water)

    async def checkpoint_once(self) -> list[Path]:
        """Write the checkpoints of the heads that moved; the files written (none when nothing
        moved or another replica is writing)."""
        written: list[Path] = []
        async with self._engine.begin() as conn:
            if not await store.lock_checkpoint_writer(conn):
                return written
            tip = await asyncio.to_thread(self._tip)
            since = None if tip.high_water is None else tip.high_water - self._overlap
            high_water = tip.high_water
            pending: list[store.Head] = []
            async for head in store.heads_since(conn, since):
                if high_water is None or head.create_time > high_water:
                    high_water = head.create_time
                done = self._written.get((head.player_id, head.currency))
                if done is not None and done[0] >= head.sequence:
                    continue
                pending.append(head)
                if len(pending) == HEADS_PER_CHECKPOINT:
                    # Heads come by account, not by time: only the run's last file may
                    # advance the high-water mark, or a crash here would skip the rest.
                    tip = await asyncio.to_thread(self._write, tip, pending, tip.high_water)
                    written.append(verdict_log.checkpoint_path(self._directory, tip.seq))
                    pending = []
            if pending:
                tip = await asyncio.to_thread(self._write, tip, pending, high_water)
                written.append(verdict_log.checkpoint_path(self._directory, tip.seq))
        if high_water is not None:
            floor = high_water - self._overlap
            self._written = {k: v for k, v in self._written.items() if v[1] > floor}
        return written

    async def run(self) -> None:
        self._directory.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                written = await self.checkpoint_once()
                if written:
                    log.info("ledger checkpoint written", files=[p.name for p in written])
            except Exception as exc:  # a broken checkpoint chain must be loud, never extended
                log.error("ledger checkpoint failed", error=str(exc))
            await asyncio.sleep(self._interval)

    async def close(self) -> None:
        return None


async def verify(
    engine: AsyncEngine, directory: Path, public_key_files: Sequence[Path], report: Report
) -> None:
    """Check every checkpoint in ``directory`` (signature, body, chain of files) and that each
    recorded head is still the entry at that (player, currency, sequence), adding
    BAD_CHECKPOINT and CHECKPOINT_MISMATCH discrepancies to ``report``. One file at a time,
    heads looked up LOOKUP_BATCH per round trip: memory does not grow with the ledger."""
    directory = Path(directory)
    # Listed before the database is read: every head in these files was committed before
    # the file was written, so the snapshot taken below sees it.
    latest = await asyncio.to_thread(verdict_log.latest_checkpoint, directory)
    last = 0 if latest is None else _sequence_of(latest)
    keys = keyring(public_key_files)

    def bad(seq: int, expected: str, actual: str) -> None:
        report.discrepancies.append(
            Discrepancy(f"checkpoints/checkpoint-{seq}.json", BAD_CHECKPOINT, seq, expected, actual)
        )

    async with engine.begin() as conn:
        expected_previous: bytes | None = GENESIS_DIGEST
        for seq in range(1, last + 1):
            path = verdict_log.checkpoint_path(directory, seq)
            try:
                raw = await asyncio.to_thread(path.read_bytes)
            except FileNotFoundError:
                bad(seq, "a checkpoint file", "missing: the chain of checkpoints is cut")
                expected_previous = None
                continue
            digest = hashlib.sha256(raw).digest()
            try:
                checkpoint = parse_checkpoint(raw, keys)
            except verdict_log.InvalidCheckpoint as exc:
                bad(seq, "a checkpoint signed by the wallet's key", str(exc))
                expected_previous = digest
                continue
            report.checkpoints_checked += 1
            if checkpoint.seq != seq:
                bad(seq, f"seq {seq}", f"seq {checkpoint.seq}")
            if expected_previous is not None and checkpoint.previous != expected_previous:
                bad(
                    seq,
                    f"previous {expected_previous.hex()} (checkpoint-{seq - 1}.json)",
                    f"previous {checkpoint.previous.hex()}",
                )
            expected_previous = digest
            heads = checkpoint.heads
            for start in range(0, len(heads), LOOKUP_BATCH):
                batch = heads[start : start + LOOKUP_BATCH]
                found = await store.entry_hashes(conn, [(p, c, s) for p, c, s, _ in batch])
                report.checkpoint_heads_checked += len(batch)
                for (player, currency, sequence, signed), stored in zip(batch, found, strict=True):
                    if stored != signed:
                        report.discrepancies.append(
                            Discrepancy(
                                account_name(player, currency),
                                CHECKPOINT_MISMATCH,
                                sequence,
                                f"{signed.hex()} (checkpoint-{seq}.json)",
                                "no entry" if stored is None else stored.hex(),
                            )
                        )
