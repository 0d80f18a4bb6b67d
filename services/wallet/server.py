"""RPC surface of the wallet: validates and maps protobuf to ledger requests and back."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from prometheus_client import Gauge
from sqlalchemy.ext.asyncio import AsyncEngine

from casino.common.v1 import money_pb2
from casino.wallet.v1 import events_pb2, wallet_pb2, wallet_pb2_grpc
from services.runtime import verdict_log
from services.runtime.call import authenticated_caller, require_player
from services.runtime.config import ConfigError, domain_config
from services.runtime.errors import InvalidArgument
from services.runtime.fields import text_field
from services.runtime.messages import timestamp
from services.runtime.outbox import outbox_workers
from services.runtime.pagination import decode_page_token, encode_page_token, page_size
from services.runtime.server import ServiceRuntime
from services.wallet import checkpoints, reconcile, store
from services.wallet.cache import BalanceCache
from services.wallet.ledger import (
    AccountState,
    Kind,
    Request,
    optional_id,
    optional_instrument,
    require_amount,
    require_currency,
    require_id,
)
from services.wallet.postings import PostingResult, Postings
from services.wallet.store import StoredTransaction


@dataclass(frozen=True)
class WalletConfig:
    currencies: list[str] = field(default_factory=lambda: ["EUR", "GBP", "USD"])
    balance_cache_ttl_seconds: float = 5.0
    # Postings coalesced into one transaction at most, and batches in flight at once. One:
    # a second batch in flight halves the batches, and the per-batch cost (the driver's
    # work for three statements and two round trips) is much of a posting's CPU; on 2
    # cores one worker posted 35-50% more at 8-32 clients, with a lower P99, when a batch
    # took six round trips (bench/wallet_load.py).
    max_batch: int = 64
    batch_workers: int = 1
    # Publish the outbox from this process (one relay per deployment is enough; several
    # are safe: rows are claimed with SKIP LOCKED), to the broker of the [amqp] section.
    outbox_relay: bool = True
    # Published events are kept in the outbox this long, then pruned.
    outbox_retention_hours: float = 24.0
    # Events published per batch (one set of broker confirms, one UPDATE marking them).
    outbox_batch_size: int = 200
    # Signed checkpoints of the accounts' hash chains (checkpoints.py): every interval, the
    # heads that moved, signed with this Ed25519 key into a directory the database's
    # administrators cannot write (another host, a write-once bucket). 0: no checkpoints
    # written, none verified. A full-ledger Reconcile verifies them when on.
    checkpoint_interval_seconds: float = 60.0
    checkpoint_dir: Path = Path(".dev/checkpoints/wallet")
    signing_key_file: Path = Path(".dev/secrets/wallet-signing.key")
    public_key_file: Path = Path(".dev/secrets/wallet-signing.pub")
    # Public keys of signing keys rotated out: the checkpoints they signed still verify.
    retired_public_key_files: list[Path] = field(default_factory=list)
    # How far before the last checkpoint's newest entry the next one looks again: entries
    # commit a little after the time they carry, and replicas' clocks differ.
    checkpoint_overlap_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.checkpoint_interval_seconds < 0:
            raise ConfigError("wallet.checkpoint_interval_seconds must be 0 (off) or more")
        if self.checkpoint_overlap_seconds < 0:
            raise ConfigError("wallet.checkpoint_overlap_seconds must be 0 or more")

    @property
    def checkpoints(self) -> bool:
        return self.checkpoint_interval_seconds > 0


RECONCILE_DISCREPANCIES = Gauge(
    "casino_wallet_reconcile_discrepancies",
    "Discrepancies found by the last full-ledger Reconcile (must be 0).",
)

_KIND_TO_PROTO = {
    Kind.DEPOSIT: wallet_pb2.TRANSACTION_KIND_DEPOSIT,
    Kind.WITHDRAWAL_RESERVE: wallet_pb2.TRANSACTION_KIND_WITHDRAWAL_RESERVE,
    Kind.WITHDRAWAL_COMMIT: wallet_pb2.TRANSACTION_KIND_WITHDRAWAL_COMMIT,
    Kind.WITHDRAWAL_RELEASE: wallet_pb2.TRANSACTION_KIND_WITHDRAWAL_RELEASE,
    Kind.BET: wallet_pb2.TRANSACTION_KIND_BET,
    Kind.WIN: wallet_pb2.TRANSACTION_KIND_WIN,
    Kind.BET_ROLLBACK: wallet_pb2.TRANSACTION_KIND_BET_ROLLBACK,
    Kind.ADJUSTMENT: wallet_pb2.TRANSACTION_KIND_ADJUSTMENT,
}
_PROTO_TO_KIND = {v: k for k, v in _KIND_TO_PROTO.items()}


def balance_message(
    player_id: str, currency: str, account: AccountState, cached: bool = False
) -> wallet_pb2.Balance:
    return wallet_pb2.Balance(
        player_id=player_id,
        currency_code=currency,
        posted_minor=account.posted,
        reserved_minor=account.reserved,
        available_minor=account.available,
        sequence=account.sequence,
        cached=cached,
    )


def transaction_message(tx: StoredTransaction) -> wallet_pb2.Transaction:
    return wallet_pb2.Transaction(
        name=f"players/{tx.player_id}/transactions/{tx.request_id}",
        request_id=tx.request_id,
        player_id=tx.player_id,
        kind=_KIND_TO_PROTO[tx.kind],
        amount=money_pb2.Money(amount_minor=tx.amount, currency_code=tx.currency),
        reserved_delta_minor=tx.reserved_delta,
        sequence=tx.sequence or 0,
        round_id=tx.round_id,
        game_id=tx.game_id,
        provider=tx.provider,
        bet_request_id=tx.bet_request_id,
        withdrawal_id=tx.withdrawal_id,
        reason=tx.reason,
        operator_id=tx.operator_id,
        create_time=timestamp(tx.create_time),
        payment_instrument=tx.payment_instrument,
        refusal_reason=tx.refusal.reason if tx.refusal else "",
    )


def posting_message(result: PostingResult) -> wallet_pb2.Posting:
    tx = result.transaction
    return wallet_pb2.Posting(
        transaction=transaction_message(tx),
        balance=balance_message(tx.player_id, tx.currency, result.balance),
        replayed=result.replayed,
        nothing_to_undo=tx.nothing_to_undo,
    )


def encode_event(result: PostingResult, event_id: uuid.UUID) -> bytes:
    posting = posting_message(result)
    return events_pb2.TransactionPosted(
        event_id=str(event_id), transaction=posting.transaction, balance=posting.balance
    ).SerializeToString()


class WalletService(wallet_pb2_grpc.WalletServiceServicer):
    def __init__(
        self,
        engine: AsyncEngine,
        postings: Postings,
        currencies: frozenset[str],
        config: WalletConfig,
    ):
        self._engine = engine
        self._postings = postings
        self._currencies = currencies
        self._config = config

    def _currency(self, code: str, field_name: str = "currency_code") -> str:
        return require_currency(code, self._currencies, field_name)

    def _money(self, money: money_pb2.Money, **rules: bool) -> tuple[int, str]:
        amount = require_amount(money.amount_minor, "amount.amount_minor", **rules)
        return amount, self._currency(money.currency_code, "amount.currency_code")

    @staticmethod
    def _request(kind: Kind, request: Any, currency: str, amount: int = 0, **refs: str) -> Request:
        """The ledger request of any mutating RPC: its player, its key, its money, and what it
        refers to (each checked by the caller)."""
        return Request(
            kind,
            require_id("player_id", request.player_id),
            require_id("request_id", request.request_id),
            currency,
            amount,
            **refs,
        )

    async def _post(self, request: Request) -> wallet_pb2.Posting:
        return posting_message(await self._postings.post(request, authenticated_caller()))

    async def OpenAccount(
        self, request: wallet_pb2.OpenAccountRequest, context: grpc.aio.ServicerContext
    ) -> wallet_pb2.OpenAccountResponse:
        player = require_id("player_id", request.player_id)
        currency = self._currency(request.currency_code)
        account, created = await self._postings.open_account(player, currency)
        return wallet_pb2.OpenAccountResponse(
            balance=balance_message(player, currency, account), created=created
        )

    async def GetBalance(
        self, request: wallet_pb2.GetBalanceRequest, context: grpc.aio.ServicerContext
    ) -> wallet_pb2.GetBalanceResponse:
        player = require_id("player_id", request.player_id)
        require_player(player)
        currency = self._currency(request.currency_code)
        account, cached = await self._postings.balance(
            player, currency, allow_cached=request.allow_cached
        )
        return wallet_pb2.GetBalanceResponse(
            balance=balance_message(player, currency, account, cached)
        )

    async def Deposit(
        self, request: wallet_pb2.DepositRequest, context: grpc.aio.ServicerContext
    ) -> wallet_pb2.DepositResponse:
        amount, currency = self._money(request.amount)
        return wallet_pb2.DepositResponse(
            posting=await self._post(
                self._request(
                    Kind.DEPOSIT,
                    request,
                    currency,
                    amount,
                    payment_id=optional_id("payment_id", request.payment_id),
                    payment_instrument=optional_instrument(request.payment_instrument),
                )
            )
        )

    async def ReserveWithdrawal(
        self, request: wallet_pb2.ReserveWithdrawalRequest, context: grpc.aio.ServicerContext
    ) -> wallet_pb2.ReserveWithdrawalResponse:
        amount, currency = self._money(request.amount)
        return wallet_pb2.ReserveWithdrawalResponse(
            posting=await self._post(
                self._request(
                    Kind.WITHDRAWAL_RESERVE,
                    request,
                    currency,
                    amount,
                    withdrawal_id=require_id("withdrawal_id", request.withdrawal_id),
                    payment_instrument=optional_instrument(request.payment_instrument),
                )
            )
        )

    async def _finalise(
        self,
        kind: Kind,
        request: wallet_pb2.CommitWithdrawalRequest | wallet_pb2.ReleaseWithdrawalRequest,
    ) -> wallet_pb2.Posting:
        return await self._post(
            self._request(
                kind,
                request,
                self._currency(request.currency_code),
                withdrawal_id=require_id("withdrawal_id", request.withdrawal_id),
            )
        )

    async def CommitWithdrawal(
        self, request: wallet_pb2.CommitWithdrawalRequest, context: grpc.aio.ServicerContext
    ) -> wallet_pb2.CommitWithdrawalResponse:
        return wallet_pb2.CommitWithdrawalResponse(
            posting=await self._finalise(Kind.WITHDRAWAL_COMMIT, request)
        )

    async def ReleaseWithdrawal(
        self, request: wallet_pb2.ReleaseWithdrawalRequest, context: grpc.aio.ServicerContext
    ) -> wallet_pb2.ReleaseWithdrawalResponse:
        return wallet_pb2.ReleaseWithdrawalResponse(
            posting=await self._finalise(Kind.WITHDRAWAL_RELEASE, request)
        )

    async def PlaceBet(
        self, request: wallet_pb2.PlaceBetRequest, context: grpc.aio.ServicerContext
    ) -> wallet_pb2.PlaceBetResponse:
        amount, currency = self._money(request.amount)
        return wallet_pb2.PlaceBetResponse(
            posting=await self._post(
                self._request(
                    Kind.BET,
                    request,
                    currency,
                    amount,
                    round_id=require_id("round_id", request.round_id),
                    game_id=require_id("game_id", request.game_id),
                    provider=require_id("provider", request.provider),
                )
            )
        )

    async def SettleWin(
        self, request: wallet_pb2.SettleWinRequest, context: grpc.aio.ServicerContext
    ) -> wallet_pb2.SettleWinResponse:
        amount, currency = self._money(request.amount, allow_zero=True)
        return wallet_pb2.SettleWinResponse(
            posting=await self._post(
                self._request(
                    Kind.WIN,
                    request,
                    currency,
                    amount,
                    round_id=require_id("round_id", request.round_id),
                    bet_request_id=require_id("bet_request_id", request.bet_request_id),
                    game_id=optional_id("game_id", request.game_id),
                    provider=optional_id("provider", request.provider),
                )
            )
        )

    async def RollbackBet(
        self, request: wallet_pb2.RollbackBetRequest, context: grpc.aio.ServicerContext
    ) -> wallet_pb2.RollbackBetResponse:
        return wallet_pb2.RollbackBetResponse(
            posting=await self._post(
                self._request(
                    Kind.BET_ROLLBACK,
                    request,
                    self._currency(request.currency_code),
                    bet_request_id=require_id("bet_request_id", request.bet_request_id),
                    round_id=optional_id("round_id", request.round_id),
                    provider=optional_id("provider", request.provider),
                )
            )
        )

    async def AdjustBalance(
        self, request: wallet_pb2.AdjustBalanceRequest, context: grpc.aio.ServicerContext
    ) -> wallet_pb2.AdjustBalanceResponse:
        amount, currency = self._money(request.amount, signed=True)
        return wallet_pb2.AdjustBalanceResponse(
            posting=await self._post(
                self._request(
                    Kind.ADJUSTMENT,
                    request,
                    currency,
                    amount,
                    reason=text_field("reason", request.reason, limit=500),
                    operator_id=require_id("operator_id", request.operator_id),
                )
            )
        )

    async def ListTransactions(
        self, request: wallet_pb2.ListTransactionsRequest, context: grpc.aio.ServicerContext
    ) -> wallet_pb2.ListTransactionsResponse:
        player = require_id("player_id", request.player_id)
        require_player(player)
        size = page_size(request.page_size)
        try:
            kinds = sorted(_PROTO_TO_KIND[k].value for k in request.kinds)
        except KeyError:
            raise InvalidArgument("kinds", "unknown transaction kind") from None
        currency = self._currency(request.currency_code) if request.currency_code else None
        start = request.start_time.ToDatetime(dt.UTC) if request.HasField("start_time") else None
        end = request.end_time.ToDatetime(dt.UTC) if request.HasField("end_time") else None
        filters = {
            "player": player,
            "kinds": kinds,
            "currency": currency,
            "start": start,
            "end": end,
        }
        after = decode_page_token(request.page_token, filters)
        before = None
        if after:
            try:
                before = (dt.datetime.fromisoformat(after[0]), after[1])
            except (ValueError, IndexError):
                raise InvalidArgument("page_token", "page_token is corrupt") from None
        async with self._engine.begin() as conn:
            rows = await store.list_transactions(
                conn,
                player,
                kinds=kinds,
                currency=currency,
                start=start,
                end=end,
                before=before,
                limit=size + 1,
            )
        page, more = rows[:size], len(rows) > size
        token = ""
        if more:
            last = page[-1]
            token = encode_page_token(filters, [last.create_time.isoformat(), last.request_id])
        return wallet_pb2.ListTransactionsResponse(
            transactions=[transaction_message(t) for t in page], next_page_token=token
        )

    async def Reconcile(
        self, request: wallet_pb2.ReconcileRequest, context: grpc.aio.ServicerContext
    ) -> wallet_pb2.ReconcileResponse:
        player, currency = request.player_id, request.currency_code
        if bool(player) != bool(currency):
            raise InvalidArgument("player_id", "give both player_id and currency_code, or neither")
        if currency:
            self._currency(currency)
        report = reconcile.Report()
        async with self._engine.connect() as conn:
            await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                async for account, entries in store.stream_ledger(
                    conn, player or None, currency or None
                ):
                    reconcile.check_account(account, entries, report)
                reconcile.check_journal_without_entries(
                    await store.journal_without_entries(conn, player or None, currency or None),
                    report,
                )
        if not player:
            reconcile.check_currency_sums(report)
            if self._config.checkpoints:
                await checkpoints.verify(
                    self._engine,
                    self._config.checkpoint_dir,
                    [self._config.public_key_file, *self._config.retired_public_key_files],
                    report,
                )
            # The figure the alert watches: any non-zero value is a P1 incident.
            RECONCILE_DISCREPANCIES.set(len(report.discrepancies))
        return wallet_pb2.ReconcileResponse(
            accounts_checked=report.accounts_checked,
            entries_checked=report.entries_checked,
            checkpoints_checked=report.checkpoints_checked,
            checkpoint_heads_checked=report.checkpoint_heads_checked,
            discrepancies=[
                wallet_pb2.Discrepancy(
                    account=d.account,
                    kind=d.kind,
                    sequence=d.sequence,
                    expected=d.expected,
                    actual=d.actual,
                )
                for d in report.discrepancies
            ],
            totals=[
                wallet_pb2.CurrencyTotal(
                    currency_code=c, sum_minor=total, house_minor=dict(report.house.get(c, {}))
                )
                for c, total in sorted(report.currency_sums.items())
            ],
        )


async def build(runtime: ServiceRuntime) -> None:
    config = domain_config(runtime.config, WalletConfig)
    # Every posting batch joins its keys to the growing ledger: planned for its values each
    # time, never by a generic plan costed for the ledger as it once was (services.runtime.db).
    engine = runtime.database(custom_plans=True)
    redis = runtime.redis(required=False) if runtime.config.redis.url else None
    postings = Postings(
        engine,
        BalanceCache(redis, config.balance_cache_ttl_seconds),
        encode_event,
        max_batch=config.max_batch,
        workers=config.batch_workers,
    )
    runtime.add_background(postings)
    runtime.add_service(
        wallet_pb2.DESCRIPTOR.services_by_name["WalletService"],
        WalletService(engine, postings, frozenset(config.currencies), config),
        wallet_pb2_grpc.add_WalletServiceServicer_to_server,
    )
    if config.checkpoints:
        # Development keys are made here; production mounts them from the secret store.
        verdict_log.ensure_signing_key(config.signing_key_file, config.public_key_file)
        runtime.add_background(
            checkpoints.LedgerCheckpointer(
                engine,
                config.signing_key_file,
                config.checkpoint_dir,
                config.checkpoint_interval_seconds,
                config.checkpoint_overlap_seconds,
                config.retired_public_key_files,
            )
        )
    if config.outbox_relay:
        for worker in outbox_workers(
            engine,
            "wallet",
            runtime.broker(),
            config.outbox_retention_hours,
            batch_size=config.outbox_batch_size,
        ):
            runtime.add_background(worker)
