"""Signed checkpoints of a service's hash chain (the verdict-log machinery: the RNG's audit
chain, the games archive chain). A background worker signs the chain head (Ed25519) into a
directory outside the database on an interval, so rewriting history is exposed by the next
verification with a checkpoint:

    python -m services.runtime.verdict_log verify --dsn-file F --schema rng \\
        --public-key rng-signing.pub --checkpoint CHECKPOINT_DIR
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from services.runtime import verdict_log
from services.runtime.logs import get_logger

log = get_logger()


class ChainCheckpointer:
    def __init__(
        self,
        engine: AsyncEngine,
        schema: str,
        signing_key_file: Path,
        directory: Path,
        interval_seconds: float,
    ) -> None:
        self._engine = engine
        self._schema = schema
        self._signer = verdict_log.CheckpointSigner(signing_key_file)
        self._directory = Path(directory)
        self._interval = interval_seconds

    async def checkpoint_once(self) -> Path:
        """Sign the head; raises ChainError instead if the chain no longer extends the
        latest checkpoint."""
        async with self._engine.begin() as conn:
            return await verdict_log.checkpoint(conn, self._schema, self._signer, self._directory)

    async def run(self) -> None:
        self._directory.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                # Re-signing an unchanged head is a no-op (same file, same hash).
                await self.checkpoint_once()
            except Exception as exc:  # a broken chain must be loud, and must not be signed
                log.error("audit checkpoint failed", error=str(exc))
            await asyncio.sleep(self._interval)

    async def close(self) -> None:
        return None
