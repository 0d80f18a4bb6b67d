"""The round archive as an auditor and a player see it: replay of every game from the RNG's
sealed seed, tamper detection on archived rounds and RNG records, 12 months of paged
history, round events on RabbitMQ, and provably-fair rounds verified offline."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator

import grpc
import psycopg
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from psycopg.types.json import Jsonb

from casino.games.v1 import events_pb2
from casino.games.v1 import games_pb2 as pb
from services.games.catalog import canonical_json
from services.runtime.outbox import EXCHANGE, declare_events_exchange
from services.runtime.status import error_info
from tests.conftest import ROOT
from tests.games.conftest import Clients, dice_bet, start_session
from tests.support.amqp import connect, delete_queues
from tests.wallet.conftest import admin_dsn

pytestmark = pytest.mark.asyncio

BETS = {
    "dice": dice_bet(stake=100, target=4000),
    "roulette": pb.Bet(
        roulette=pb.RouletteSpin(
            bets=[pb.RouletteBet(kind=pb.ROULETTE_BET_KIND_STRAIGHT, stake_minor=10, numbers=[7])]
        )
    ),
    "slot": pb.Bet(slot=pb.SlotSpin(line_bet_minor=2)),
}


async def play(stub, player: str, game_id: str) -> pb.Round:
    session = await start_session(stub, player, game_id)
    reply = await stub.PlayRound(
        pb.PlayRoundRequest(
            player_id=player,
            session_id=session.session_id,
            request_id=uuid.uuid4().hex,
            bet=BETS[game_id],
        )
    )
    return reply.round


NOW = dt.datetime.now(dt.UTC)


def ts(moment: dt.datetime) -> Timestamp:
    t = Timestamp()
    t.FromDatetime(moment)
    return t


def tamper(sql: str, *params: object) -> None:
    """What only a superuser can do: change rows behind the triggers' back."""
    with psycopg.connect(admin_dsn(), autocommit=False) as conn:
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(sql, params)
        conn.commit()


@pytest.fixture
def put_back() -> Iterator[Callable[..., None]]:
    """`put_back(table, where, *params)` before tampering: those rows, as they were, are
    restored after the test. The suites share the database, and others verify the same
    chains."""
    saved: list[tuple[str, str, tuple[object, ...], list[str], list[tuple[object, ...]]]] = []

    def keep(table: str, where: str, *params: object) -> None:
        with psycopg.connect(admin_dsn()) as conn:
            cursor = conn.execute(f"SELECT * FROM {table} WHERE {where}", params)
            columns = [c.name for c in cursor.description or ()]
            saved.append((table, where, params, columns, cursor.fetchall()))

    yield keep
    with psycopg.connect(admin_dsn(), autocommit=False) as conn:
        conn.execute("SET LOCAL session_replication_role = replica")
        for table, where, params, columns, rows in reversed(saved):
            conn.execute(f"DELETE FROM {table} WHERE {where}", params)
            marks = ", ".join(["%s"] * len(columns))
            for row in rows:
                values = [Jsonb(v) if isinstance(v, dict | list) else v for v in row]
                conn.execute(
                    f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})",
                    values,
                )
        conn.commit()


@pytest.mark.parametrize("game_id", ["dice", "roulette", "slot"])
async def test_replay_reproduces_the_archived_outcome_of_every_game(
    games, clients: Clients, game_id: str
) -> None:
    player = await clients.player()
    r = await play(clients.games(games), player, game_id)
    replay = await clients.games(games, "backoffice").ReplayRound(
        pb.ReplayRoundRequest(player_id=player, round_id=r.round_id)
    )
    assert replay.matches, replay.problems
    assert list(replay.recomputed_draws) == list(r.draws)
    assert replay.recomputed_outcome == r.outcome
    assert replay.recomputed_payout.amount_minor == r.payout.amount_minor
    assert replay.round.rng_versions.sampling == "sampling/rejection-v1"


async def test_an_altered_archived_round_is_detected_by_replay_and_archive_verification(
    games, clients: Clients, put_back: Callable[..., None]
) -> None:
    player = await clients.player()
    r = await play(clients.games(games), player, "dice")
    backoffice = clients.games(games, "backoffice")
    close = r.close_time.ToDatetime(dt.UTC)
    window = (ts(close - dt.timedelta(seconds=1)), ts(close + dt.timedelta(seconds=1)))
    clean = await backoffice.VerifyArchive(
        pb.VerifyArchiveRequest(start_time=window[0], end_time=window[1])
    )
    assert clean.ok and clean.rounds_checked >= 1, clean.problems

    # A generous payout written into the archived record.
    put_back("games.round_archive", "round_id = %s", uuid.UUID(r.round_id))
    tamper(
        "UPDATE games.round_archive SET record = jsonb_set(record, '{payout_minor}', '100000')"
        " WHERE round_id = %s",
        uuid.UUID(r.round_id),
    )
    replay = await backoffice.ReplayRound(
        pb.ReplayRoundRequest(player_id=player, round_id=r.round_id)
    )
    assert not replay.matches
    assert any("hash" in p for p in replay.problems), replay.problems
    report = await backoffice.VerifyArchive(
        pb.VerifyArchiveRequest(start_time=window[0], end_time=window[1])
    )
    assert not report.ok
    assert ("RECORD_ALTERED", r.round_id) in {(p.kind, p.round_id) for p in report.problems}

    # Rehashing the forged record does not help: the chain holds the original hash.
    with psycopg.connect(admin_dsn()) as conn:
        (record,) = conn.execute(
            "SELECT record FROM games.round_archive WHERE round_id = %s", (uuid.UUID(r.round_id),)
        ).fetchone()
    tamper(
        "UPDATE games.round_archive SET record_hash = %s WHERE round_id = %s",
        hashlib.sha256(canonical_json(record)).digest(),
        uuid.UUID(r.round_id),
    )
    replay = await backoffice.ReplayRound(
        pb.ReplayRoundRequest(player_id=player, round_id=r.round_id)
    )
    assert "the archive chain holds another hash for this round" in replay.problems
    assert any("payout" in p for p in replay.problems), replay.problems


async def test_a_deleted_archived_round_is_reported_missing(
    games, clients: Clients, put_back: Callable[..., None]
) -> None:
    player = await clients.player()
    r = await play(clients.games(games), player, "roulette")
    put_back("games.round_archive", "round_id = %s", uuid.UUID(r.round_id))
    tamper("DELETE FROM games.round_archive WHERE round_id = %s", uuid.UUID(r.round_id))
    close = r.close_time.ToDatetime(dt.UTC)
    report = await clients.games(games, "backoffice").VerifyArchive(
        pb.VerifyArchiveRequest(
            start_time=ts(close - dt.timedelta(seconds=1)),
            end_time=ts(close + dt.timedelta(seconds=1)),
        )
    )
    assert ("ROUND_MISSING", r.round_id) in {(p.kind, p.round_id) for p in report.problems}


async def test_an_altered_rng_draw_record_is_detected_by_replay(
    games, clients: Clients, put_back: Callable[..., None]
) -> None:
    player = await clients.player()
    r = await play(clients.games(games), player, "dice")
    forged = (r.draws[0] + 1) % 10_000
    put_back("rng.verdicts", "action = 'ROUND_DRAW' AND inputs->>'round_id' = %s", r.rng_round_id)
    tamper(
        "UPDATE rng.verdicts SET inputs = jsonb_set(inputs, '{values}', %s::jsonb)"
        " WHERE action = 'ROUND_DRAW' AND inputs->>'round_id' = %s",
        json.dumps([[forged]]),
        r.rng_round_id,
    )
    replay = await clients.games(games, "backoffice").ReplayRound(
        pb.ReplayRoundRequest(player_id=player, round_id=r.round_id)
    )
    assert not replay.matches
    assert "the RNG's recomputed draws differ from its audit records" in replay.problems


async def test_replay_reports_a_seed_the_rng_cannot_unseal(
    games, clients: Clients, put_back: Callable[..., None]
) -> None:
    player = await clients.player()
    r = await play(clients.games(games), player, "dice")
    put_back("rng.rounds", "round_id = %s", uuid.UUID(r.rng_round_id))
    tamper(
        "UPDATE rng.rounds SET sealed_seed = set_byte(sealed_seed, 20, get_byte(sealed_seed, 20)"
        " # 255) WHERE round_id = %s",
        uuid.UUID(r.rng_round_id),
    )
    replay = await clients.games(games, "backoffice").ReplayRound(
        pb.ReplayRoundRequest(player_id=player, round_id=r.round_id)
    )
    assert not replay.matches
    assert any("SEED_UNSEALABLE" in p for p in replay.problems), replay.problems
    assert replay.round.round_id == r.round_id


ALTERED_RECORDS = {
    "rng round id": ("{rng,round_id}", '"not-a-round"', "is not a round id"),
    "unknown rng round": ("{rng,round_id}", f'"{uuid.UUID(int=7)}"', "ROUND_NOT_FOUND"),
    "math version": ("{math_version}", '"dice/v0"', "'dice/v0' is not implemented"),
    "bet": ("{bet}", '{"stake": "lots"}', "the outcome cannot be recomputed"),
    "bet shape": ("{bet}", '"all-in"', "the outcome cannot be recomputed"),
    "draws": ("{draws}", '"seven"', "the archived draws are not a list of integers"),
}


@pytest.mark.parametrize("altered", ALTERED_RECORDS)
async def test_replay_reports_an_archived_record_altered_past_replaying(
    games, clients: Clients, put_back: Callable[..., None], altered: str
) -> None:
    path, value, named = ALTERED_RECORDS[altered]
    player = await clients.player()
    r = await play(clients.games(games), player, "dice")
    put_back("games.round_archive", "round_id = %s", uuid.UUID(r.round_id))
    tamper(
        "UPDATE games.round_archive SET record = jsonb_set(record, %s::text[], %s::jsonb)"
        " WHERE round_id = %s",
        path,
        value,
        uuid.UUID(r.round_id),
    )
    replay = await clients.games(games, "backoffice").ReplayRound(
        pb.ReplayRoundRequest(player_id=player, round_id=r.round_id)
    )
    assert not replay.matches
    assert "the archived record does not hash to its stored hash" in replay.problems
    assert any(named in p for p in replay.problems[1:]), replay.problems
    assert replay.round.round_id == r.round_id


async def test_out_of_range_times_are_invalid_arguments_naming_the_field(
    games, clients: Clients
) -> None:
    stub = clients.games(games)
    backoffice = clients.games(games, "backoffice")
    player = await clients.player()
    far = Timestamp(seconds=10**15)
    calls = {
        "start_time": [
            stub.ListRounds(pb.ListRoundsRequest(player_id=player, start_time=far)),
            stub.ListRounds(
                pb.ListRoundsRequest(player_id=player, start_time=Timestamp(seconds=0, nanos=-5))
            ),
            backoffice.VerifyArchive(
                pb.VerifyArchiveRequest(start_time=Timestamp(seconds=-(10**12)), end_time=ts(NOW))
            ),
        ],
        "end_time": [
            stub.ListRounds(pb.ListRoundsRequest(player_id=player, end_time=far)),
            backoffice.VerifyArchive(
                pb.VerifyArchiveRequest(start_time=Timestamp(seconds=0), end_time=far)
            ),
            backoffice.VerifyArchive(
                pb.VerifyArchiveRequest(
                    start_time=Timestamp(seconds=0), end_time=Timestamp(seconds=1, nanos=10**9)
                )
            ),
        ],
    }
    for field, pending in calls.items():
        for call in pending:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call
            info = error_info(raised.value)
            assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value
            assert info is not None and info.metadata["field"] == field


async def test_history_pages_newest_first_over_twelve_months(games, clients: Clients) -> None:
    stub = clients.games(games)
    player = await clients.player()
    played = [await play(stub, player, "dice") for _ in range(3)]
    # An archived round from eleven months ago, as the archive holds it (its month's
    # partition was created ahead of time by the service).
    with psycopg.connect(admin_dsn()) as conn:
        (record,) = conn.execute(
            "SELECT record FROM games.round_archive WHERE round_id = %s",
            (uuid.UUID(played[0].round_id),),
        ).fetchone()
    old_close = dt.datetime.now(dt.UTC) - dt.timedelta(days=335)
    old_id = str(uuid.uuid4())
    record = {
        **record,
        "round_id": old_id,
        "close_time": old_close.isoformat(timespec="microseconds"),
    }
    with psycopg.connect(admin_dsn()) as conn:
        conn.execute(
            "INSERT INTO games.round_archive"
            " (player_id, close_time, round_id, game_id, state, record, record_hash)"
            " VALUES (%s, %s, %s, 'dice', 'COMPLETED', %s, %s)",
            (
                player,
                old_close,
                old_id,
                json.dumps(record),
                hashlib.sha256(canonical_json(record)).digest(),
            ),
        )
    seen: list[str] = []
    token = ""
    while True:
        page = await stub.ListRounds(
            pb.ListRoundsRequest(player_id=player, page_size=2, page_token=token)
        )
        seen += [r.round_id for r in page.rounds]
        token = page.next_page_token
        if not token:
            break
    assert seen == [r.round_id for r in reversed(played)] + [old_id]
    # A time filter, and a token presented with another filter is refused.
    recent = await stub.ListRounds(
        pb.ListRoundsRequest(
            player_id=player, start_time=ts(dt.datetime.now(dt.UTC) - dt.timedelta(days=30))
        )
    )
    assert [r.round_id for r in recent.rounds] == [r.round_id for r in reversed(played)]
    first = await stub.ListRounds(pb.ListRoundsRequest(player_id=player, page_size=1))
    with pytest.raises(Exception) as raised:
        await stub.ListRounds(
            pb.ListRoundsRequest(player_id=player, game_id="slot", page_token=first.next_page_token)
        )
    assert "page_token" in str(raised.value)


async def test_each_archived_round_is_published_as_an_event(games, clients: Clients) -> None:
    queue_name = f"test.games.rounds.{uuid.uuid4().hex[:8]}"
    connection = await connect()
    try:
        channel = await connection.channel()
        await declare_events_exchange(channel)
        queue = await channel.declare_queue(queue_name, durable=False, auto_delete=True)
        await queue.bind(EXCHANGE, routing_key="games.round.*")
        player = await clients.player()
        r = await play(clients.games(games), player, "dice")
        deadline = asyncio.get_running_loop().time() + 15
        event = None
        while event is None and asyncio.get_running_loop().time() < deadline:
            message = await queue.get(fail=False)
            if message is None:
                await asyncio.sleep(0.1)
                continue
            await message.ack()
            candidate = events_pb2.RoundArchived.FromString(message.body)
            if candidate.round.round_id == r.round_id:
                event = (message, candidate)
        assert event is not None, "no RoundArchived event for the round"
        message, archived = event
        assert message.routing_key == "games.round.completed"
        assert message.type == "casino.games.v1.RoundArchived"
        assert archived.round.payout == r.payout and len(archived.round.record_hash) == 64
        assert uuid.UUID(archived.event_id) and message.message_id == archived.event_id
    finally:
        await connection.close()
        await delete_queues(queue_name)


async def test_a_provably_fair_dice_round_verifies_offline_and_a_tampered_seed_does_not(
    games, clients: Clients
) -> None:
    stub = clients.games(games)
    player = await clients.player()
    seed = await stub.GetFairSeed(pb.GetFairSeedRequest(player_id=player, game_id="dice"))
    session = await start_session(stub, player, "dice", client_seed="my-lucky-seed")
    assert session.server_seed_commitment == seed.server_seed_commitment
    r = (
        await stub.PlayRound(
            pb.PlayRoundRequest(
                player_id=player,
                session_id=session.session_id,
                request_id=uuid.uuid4().hex,
                bet=dice_bet(),
            )
        )
    ).round
    assert r.provably_fair.server_seed_commitment == seed.server_seed_commitment
    assert r.provably_fair.client_seed == "my-lucky-seed"
    assert r.provably_fair.nonce == seed.next_nonce
    revealed = await stub.RotateFairSeed(pb.RotateFairSeedRequest(player_id=player, game_id="dice"))
    assert revealed.revealed_commitment == seed.server_seed_commitment
    assert revealed.server_seed_commitment != seed.server_seed_commitment

    def verify(server_seed: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable, "-m", "services.rng.verify_fair",
                "--server-seed", server_seed,
                "--commitment", r.provably_fair.server_seed_commitment,
                "--client-seed", r.provably_fair.client_seed,
                "--nonce", str(r.provably_fair.nonce),
                "--specs", json.dumps([{"integers": {"low": 0, "high": 9999, "count": 1}}]),
                "--expect", json.dumps([list(r.draws)]),
            ],
            cwd=ROOT, capture_output=True, text=True,
        )  # fmt: skip

    good = verify(revealed.revealed_server_seed)
    assert good.returncode == 0 and "VERIFIED" in good.stdout, good.stdout + good.stderr
    forged = revealed.revealed_server_seed[:-2] + (
        "00" if revealed.revealed_server_seed[-2:] != "00" else "01"
    )
    bad = verify(forged)
    assert bad.returncode == 1 and "commitment MISMATCH" in bad.stdout
