"""Action checks (deposit, bet, withdrawal, game launch) decided in batches.

Every check is a verdict appended to the hash-chained log, and the log's head is one row
that every append locks until its transaction commits: decided one per transaction, checks
would queue on that lock and the bet path would pay for every commit in front of it. So
concurrent checks are coalesced: one worker takes what has queued up, decides all of it in
one transaction (player rows locked in id order, their usage read in one query, usage
recorded in one INSERT, the verdicts appended in one INSERT) and answers each check only
after that commit. The decisions are exactly those of deciding the checks one after
another: a player's second stake in a batch sees the first. The transaction is pipelined
(`db.pipelined_transaction`): with the players' states cached it is two round trips, the
lock (with the usage the cached limits call for, summed behind it) then the append with
the COMMIT, so the head stays locked for no round trip of its own.

What a check reads is small and mostly cached: the player's state row and limits are kept
in memory with the row's version; each batch locks the rows and reads only their versions,
and a state is reloaded only when its version moved (every change to a player or their
limits bumps it, in whichever process or replica made it).

A check is idempotent by (player_id, request_id): its request and verdict id are recorded
with its verdict, and a retry (found by the same statement that locks the players' rows)
gets the original verdict back and records nothing; the same request_id for a different
action, amount or currency is refused (IDEMPOTENCY_MISMATCH). Two checks with one key in a
batch are one decision. A retry racing its original in another batch fails that batch on the
record's key, and the batch is decided again, finding the original then."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import pickle
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from prometheus_client import Counter, Histogram
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.compliance import rules, store, verdicts
from services.compliance.policy import Policy
from services.compliance.rules import Action, Decision, LimitKind
from services.runtime import db, verdict_log
from services.runtime.errors import DomainError, IdempotencyMismatch, InvalidArgument

log = structlog.get_logger()

CHECK_BATCH = Histogram(
    "casino_compliance_check_batch_size",
    "Action checks decided together in one transaction.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
STATE_CACHE = Counter(
    "casino_compliance_state_cache_total",
    "Player states looked up for checks: hit (version unchanged) or miss (loaded).",
    ["result"],
)

SCHEMA = "compliance"
# Actions whose allowed amount counts against limits (and the CDD threshold).
_COUNTED = {Action.DEPOSIT: "DEPOSIT", Action.BET: "BET"}
# Actions the CDD threshold applies to (their verdicts record it, in the player's currency).
_CDD_ACTIONS = frozenset({Action.DEPOSIT, Action.WITHDRAWAL})
# How often a batch is decided again when a retried check raced its original (each time,
# the original has committed: a second attempt finds it, more only under repeated races).
_RACED_ATTEMPTS = 3


@dataclass(frozen=True)
class CheckRequest:
    player_id: str
    action: Action
    amount_minor: int
    slots: bool
    request_country: str
    request_id: str
    caller: str
    # The amount's currency; must be the player's jurisdiction's (may be empty for 0).
    currency: str = ""


@dataclass(frozen=True)
class Checked:
    verdict: verdict_log.StoredVerdict
    decision: Decision


@dataclass(frozen=True)
class CachedState:
    version: int
    state: rules.PlayerState
    limits: list[rules.LimitState]
    # As recorded in each verdict's inputs (built once per version, not once per check).
    recorded: dict[str, Any]

    @classmethod
    def of(
        cls, version: int, state: rules.PlayerState, limits: list[rules.LimitState]
    ) -> CachedState:
        recorded = {
            "state": verdict_log.json_safe(dataclasses.asdict(state)),
            "state_version": version,
            "limits": verdict_log.json_safe([dataclasses.asdict(x) for x in limits]),
        }
        return cls(version, state, limits, recorded)


class StateCache:
    """Players' check state by id, least recently used out first. Entries are only ever
    trusted against the version read under the batch's row lock.

    Entries are kept pickled, as (version, bytes): as live objects, each cached player is
    five or six objects the cyclic garbage collector walks in every full collection, and
    at the default capacity (100,000 players) one full collection took 224 ms, every check
    in flight waiting it out. Bytes and ints are not walked; unpickling an entry costs 6-15
    us per check."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[str, tuple[int, bytes]] = OrderedDict()

    def peek(self, player_id: str) -> CachedState | None:
        """The player's cached state, whatever its version (not yet to be trusted)."""
        entry = self._entries.get(player_id)
        if entry is None:
            return None
        cached: CachedState = pickle.loads(entry[1])  # noqa: S301 (our own bytes)
        return cached

    def confirm(
        self, player_id: str, peeked: CachedState | None, version: int
    ) -> CachedState | None:
        """`peeked` if it is of `version` (read under the row lock): a hit, and the player
        becomes the most recently used; None, a miss, otherwise."""
        if peeked is None or peeked.version != version:
            STATE_CACHE.labels("miss").inc()
            return None
        self._entries.move_to_end(player_id)
        STATE_CACHE.labels("hit").inc()
        return peeked

    def put(self, player_id: str, entry: CachedState) -> None:
        self._entries[player_id] = (entry.version, pickle.dumps(entry, pickle.HIGHEST_PROTOCOL))
        self._entries.move_to_end(player_id)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)


def _usage_wanted(
    requests: list[CheckRequest], states: dict[str, CachedState]
) -> dict[str, dt.datetime | None]:
    """The players whose usage the batch's decisions read, with their last CDD clearance
    (where the CDD threshold's linking starts)."""
    return {
        r.player_id: states[r.player_id].state.cdd_cleared_at
        for r in requests
        if r.player_id in states and _needs_usage(r, states[r.player_id].limits)
    }


def _needs_usage(request: CheckRequest, limits: list[rules.LimitState]) -> bool:
    if request.action is Action.DEPOSIT:
        return True  # the CDD threshold links deposits, whatever the limits
    if request.action is Action.BET:
        return any(limit.kind in (LimitKind.STAKE, LimitKind.LOSS) for limit in limits)
    return False


def _same_request(record: store.CheckRecord, request: CheckRequest) -> bool:
    """The same check: what it asks, and where, for what product and by whom (a record from
    before those were kept is compared on what it has)."""
    asked = (record.action, record.amount_minor, record.currency) == (
        request.action.value,
        request.amount_minor,
        request.currency,
    )
    context = [
        (record.request_country, request.request_country),
        (record.slots, request.slots),
        (record.caller, request.caller),
    ]
    return asked and all(kept is None or kept == given for kept, given in context)


def _record_of(request: CheckRequest, verdict: verdict_log.Verdict) -> store.CheckRecord:
    return store.CheckRecord(
        request.action.value,
        request.amount_minor,
        request.currency,
        verdict.verdict_id,
        request.request_country,
        request.slots,
        request.caller,
    )


class IdempotencyKeyExpired(DomainError):
    """A request_id whose check was decided longer ago than a retry can be: a verdict is
    about its moment, so an old one is not handed out again and a new check needs a new
    request_id."""

    def __init__(self, key: str, seconds: float) -> None:
        super().__init__(
            "IDEMPOTENCY_KEY_EXPIRED",
            "this request_id was used for a check too long ago to be a retry; use a new one",
            {"idempotency_key": key, "replay_seconds": str(int(seconds))},
        )


def _decision_of(verdict: verdict_log.Verdict) -> Decision:
    return Decision(
        verdict.decision == "ALLOW",
        [rules.Reason(r["reason"], dict(r["metadata"])) for r in verdict.reasons],
    )


class ActionChecks:
    def __init__(
        self,
        engine: AsyncEngine,
        policy: Policy,
        clock: Callable[[], dt.datetime],
        *,
        max_batch: int = 128,
        lanes: int = 1,
        cache_capacity: int = 100_000,
        replay_seconds: float = 600.0,
    ) -> None:
        self._engine = db.autocommit(engine)  # for pipelined transactions
        # How long a decided check is answered again to a retry of its request_id.
        self._replay = dt.timedelta(seconds=replay_seconds)
        # Batches in flight at once: while one waits for its commit, the next is read and
        # decided (it queues on the verdict head, or on a player's row, only if it must).
        self._lanes = lanes
        # Which configuration (jurisdiction) and flagged rules apply to each player.
        self._policy = policy
        self._now = clock
        self._max_batch = max_batch
        self.cache = StateCache(cache_capacity)
        self._queue: asyncio.Queue[tuple[CheckRequest, asyncio.Future[Checked]]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """The batching worker, as a background worker of the service runtime."""
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run(), name="compliance-checks")
        await asyncio.shield(self._worker)

    async def check(self, request: CheckRequest) -> Checked:
        if self._worker is None or self._worker.done():
            # Not (or no longer) running under the runtime: a dead worker must not leave
            # checks hanging until their deadline.
            self._worker = asyncio.create_task(self._run(), name="compliance-checks")
        future: asyncio.Future[Checked] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((request, future))
        # A caller that gives up does not cancel the decision: it is recorded either way.
        return await asyncio.shield(future)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    async def _run(self) -> None:
        await asyncio.gather(*(self._lane() for _ in range(self._lanes)))

    async def _lane(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._settle(batch)

    async def _settle(self, batch: list[tuple[CheckRequest, asyncio.Future[Checked]]]) -> None:
        CHECK_BATCH.observe(len(batch))
        try:
            results = await self._decide([request for request, _ in batch])
        except DBAPIError as exc:
            if len(batch) > 1 and not exc.connection_invalidated:
                # Something in the batch, not the database, failed it: decide each alone so
                # one bad check cannot fail the others.
                log.warning("check batch failed; deciding singly", error=str(exc.orig))
                for item in batch:
                    await self._settle([item])
                return
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except Exception as exc:  # answered to each caller by the RPC surface's error mapping
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, DomainError):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _states(
        self,
        pipeline: db.Pipeline,
        locking: db.Queued[tuple[dict[str, int], dict[tuple[str, str], store.CheckRecord]]],
        peeked: dict[str, CachedState | None],
    ) -> tuple[dict[str, CachedState], dict[tuple[str, str], store.CheckRecord]]:
        """The players' states, from the cache where the version read under the row lock is
        the cached one, with the checks already recorded under the batch's keys."""
        versions, records = await locking.result()
        states: dict[str, CachedState] = {}
        stale = []
        for player_id, version in versions.items():
            cached = self.cache.confirm(player_id, peeked.get(player_id), version)
            if cached is None:
                stale.append(player_id)
            else:
                states[player_id] = cached
        if stale:
            loading = await store.players(pipeline, stale)
            limits = await (await store.limits_of(pipeline, stale)).result()
            loaded = await loading.result()
            for player_id in stale:
                version, state = loaded[player_id]
                entry = CachedState.of(version, state, limits.get(player_id, []))
                self.cache.put(player_id, entry)
                states[player_id] = entry
        return states, records

    async def _decide(self, requests: list[CheckRequest]) -> list[Checked | DomainError]:
        attempt = 1
        while True:
            try:
                return await self._decide_once(requests)
            except IntegrityError as exc:
                if (
                    attempt >= _RACED_ATTEMPTS
                    or db.violated_constraint(exc) != store.CHECK_REQUESTS_KEY
                ):
                    raise
                log.info("a retried check raced its original; deciding the batch again")
                attempt += 1

    async def _decide_once(self, requests: list[CheckRequest]) -> list[Checked | DomainError]:
        now = self._now()
        keys = sorted({(r.player_id, r.request_id) for r in requests})
        players = sorted({r.player_id for r in requests})
        peeked = {p: self.cache.peek(p) for p in players}
        # The usage the cached states say the batch needs, summed in the lock's round trip
        # (queued behind the lock, it sees what committed before the lock was granted); it
        # is used if the states turn out current, and summed again otherwise.
        guessed = _usage_wanted(requests, {p: c for p, c in peeked.items() if c is not None})
        # Two round trips when the states are cached: the lock with the versions, records
        # and usage, then the verdicts and records with the COMMIT.
        async with db.pipelined_transaction(self._engine) as pipeline:
            locking = await store.lock_versions(pipeline, players, keys)
            summing = (
                await store.usage_totals(pipeline, sorted(guessed), now, guessed)
                if guessed
                else None
            )
            states, records = await self._states(pipeline, locking, peeked)
            wanted = _usage_wanted(requests, states)
            usage: dict[str, rules.UsageTotals] = {}
            if summing is not None and wanted.items() <= guessed.items():
                summed = await summing.result()
                usage = {p: summed[p] for p in wanted}
            elif wanted:
                usage = await (
                    await store.usage_totals(pipeline, sorted(wanted), now, wanted)
                ).result()
            counted: list[tuple[str, str, str, int]] = []
            checked: list[tuple[str, str, store.CheckRecord]] = []
            cdd_players: list[str] = []
            pending: list[verdict_log.Verdict] = []
            decisions: list[Decision] = []
            refused: dict[int, DomainError] = {}
            # Retries: of a check recorded before (its record), or of one earlier in this
            # batch (its index).
            replays: dict[int, store.CheckRecord] = {}
            same_as: dict[int, int] = {}
            decided: dict[tuple[str, str], int] = {}
            for i, request in enumerate(requests):
                key = (request.player_id, request.request_id)
                if key in records or key in decided:
                    # A retry: the original's answer, nothing decided or recorded again.
                    original = records.get(key) or checked[decided[key]][2]
                    if not _same_request(original, request):
                        refused[i] = IdempotencyMismatch(request.request_id)
                    elif original.at is not None and now - original.at > self._replay:
                        refused[i] = IdempotencyKeyExpired(
                            request.request_id, self._replay.total_seconds()
                        )
                    elif key in records:
                        replays[i] = original
                    else:
                        same_as[i] = decided[key]
                    continue
                cached = states.get(request.player_id)
                state = cached.state if cached else None
                gated_here = state is not None and request.player_id in cdd_players
                if state is not None and gated_here:
                    # An earlier check of this batch set the CDD gate: this one meets it, as
                    # it would decided after that one committed.
                    state = dataclasses.replace(state, cdd_required=True)
                # The player's jurisdiction (its configuration) and the flagged rules on
                # for them.
                policy = self._policy.for_player(state)
                config = policy.config
                amount_given = request.amount_minor or request.currency
                if state is not None and amount_given and request.currency != config.currency:
                    # Bad input: no decision, nothing counted, nothing recorded.
                    refused[i] = InvalidArgument(
                        "amount.currency_code",
                        f"this player's amounts are checked in {config.currency}",
                    )
                    continue
                totals = usage.get(request.player_id, rules.UsageTotals())
                decision = rules.action_check(
                    state,
                    request.action,
                    amount_minor=request.amount_minor,
                    slots=request.slots,
                    request_country=request.request_country,
                    limits=cached.limits if cached else [],
                    usage=totals,
                    now=now,
                    config=config,
                    enabled_rules=policy.enabled_rules,
                )
                counted_action = _COUNTED.get(request.action)
                if state is not None and decision.allow and counted_action:
                    counted.append(
                        (
                            request.player_id,
                            request.request_id,
                            counted_action,
                            request.amount_minor,
                        )
                    )
                    if request.player_id in usage:  # a later check in the batch reads it
                        usage[request.player_id] = totals.plus(
                            rules.Usage(counted_action, request.amount_minor, now), now
                        )
                cdd = (
                    state is not None
                    and decision.allow
                    and not state.cdd_required
                    and request.player_id not in cdd_players
                    and rules.crosses_cdd_threshold(
                        request.action, request.amount_minor, totals, policy.cdd_threshold_minor
                    )
                )
                if cdd:
                    # This action goes through; the next ones wait for due diligence.
                    cdd_players.append(request.player_id)
                verdict = verdicts.verdict(
                    player_id=request.player_id,
                    action=request.action,
                    decision=decision.verdict,
                    reasons=decision.reasons,
                    inputs={
                        **_inputs(request, cached, totals, cdd, gated_here),
                        **policy.inputs(),
                        **(
                            {"cdd_threshold_minor": policy.cdd_threshold_minor}
                            if request.action in _CDD_ACTIONS
                            else {}
                        ),
                    },
                    config_version=config.version,
                    caller=request.caller,
                    now=now,
                )
                decided[key] = len(pending)
                checked.append(
                    (request.player_id, request.request_id, _record_of(request, verdict))
                )
                decisions.append(decision)
                pending.append(verdict)
            # Retries read their originals before anything is written (a round trip of its
            # own, only for a batch with retries): one missing fails the batch uncommitted.
            originals = {
                i: await verdict_log.queue_get(pipeline, SCHEMA, record.verdict_id)
                for i, record in replays.items()
            }
            replayed = {i: _original(await q.result(), replays[i]) for i, q in originals.items()}
            if cdd_players:
                await store.queue_require_cdd(pipeline, cdd_players, now)
            # The checks are recorded by the statement appending their verdicts.
            appended = await verdict_log.queue_append(
                pipeline, SCHEMA, pending, also=store.record_checks(checked, counted, now)
            )
        # Committed: the answers are read now.
        answered = [Checked(v, d) for v, d in zip(await appended.result(), decisions, strict=True)]
        results: list[Checked | DomainError] = []
        position = 0
        for i in range(len(requests)):
            if i in refused:
                results.append(refused[i])
            elif i in replayed:
                results.append(replayed[i])
            elif i in same_as:
                results.append(answered[same_as[i]])
            else:
                results.append(answered[position])
                position += 1
        return results


def _original(verdict: verdict_log.StoredVerdict | None, record: store.CheckRecord) -> Checked:
    if verdict is None:  # the log is append-only: a recorded check's verdict is there
        raise RuntimeError(f"verdict {record.verdict_id} of a recorded check is missing")
    return Checked(verdict, _decision_of(verdict))


def _inputs(
    request: CheckRequest,
    cached: CachedState | None,
    totals: rules.UsageTotals,
    cdd: bool,
    gated_in_batch: bool = False,
) -> dict[str, Any]:
    return {
        "amount_minor": request.amount_minor,
        "slots": request.slots,
        "request_country": request.request_country,
        "request_id": request.request_id,
        **(cached.recorded if cached else {"state": None, "limits": []}),
        "usage": {f"{a}/{p.value}": w.total_minor for (a, p), w in totals.windows.items()},
        "cdd_gate_set": cdd,
        # The recorded state predates the gate an earlier check of the batch set.
        **({"cdd_gate_set_earlier_in_batch": True} if gated_in_batch else {}),
    }
