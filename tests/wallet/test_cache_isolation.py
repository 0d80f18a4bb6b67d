"""The display cache can never stop postings: whatever its write raises after a batch
committed, the callers have their answers and the next batch is posted."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Mapping

from services.runtime import db
from services.runtime.config import DatabaseConfig
from services.runtime.process import ServiceProcess
from services.wallet.cache import BalanceCache
from services.wallet.ledger import AccountState, Kind, Request
from services.wallet.postings import Postings
from services.wallet.server import encode_event
from tests.conftest import SECRETS, database_url


class BrokenCache(BalanceCache):
    def __init__(self) -> None:
        super().__init__(None, 5.0)
        self.writes = 0

    async def put(self, balances: Mapping[tuple[str, str], AccountState]) -> None:
        self.writes += 1
        raise RuntimeError("a bug in the cache path")


async def test_a_failing_cache_write_neither_fails_the_answer_nor_stops_the_worker(
    wallet: ServiceProcess,  # a running wallet: its schema is migrated
) -> None:
    engine = db.create_engine(
        DatabaseConfig(
            url=database_url("wallet"), password_file=SECRETS / "postgres" / "casino_wallet"
        ),
        "test",
    )
    cache = BrokenCache()
    postings = Postings(engine, cache, encode_event)
    worker = asyncio.create_task(postings.run())
    try:
        player = f"cache-{uuid.uuid4().hex[:8]}"
        await postings.open_account(player, "EUR")
        for amount in (100, 250):
            deposit = Request(
                Kind.DEPOSIT, player, uuid.uuid4().hex, "EUR", amount, payment_id=uuid.uuid4().hex
            )
            result = await asyncio.wait_for(postings.post(deposit, "payments"), 10)
            assert not result.replayed
        assert result.balance.posted == 350
        assert cache.writes == 2
        assert not worker.done()
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
        await engine.dispose()
