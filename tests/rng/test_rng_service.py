"""The RNG service end to end: rounds, replay, sealed seeds, version pinning, the audit
chain, provably-fair rounds with the offline verifier, health and access."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import grpc
import psycopg
import pytest

from casino.rng.v1 import rng_pb2 as pb
from services.rng import draws, versions
from services.rng.sampling import SAMPLING_VERSION
from services.rng.sampling_v2 import SAMPLING_V2_VERSION
from services.rng.sealing import ROUND_SEED, Sealer, SealError, ensure_seal_key
from services.runtime.health import NOT_SERVING
from services.runtime.process import ServiceProcess
from services.runtime.status import error_info
from tests.conftest import ROOT, Launcher, Pki
from tests.rng.conftest import RngLauncher, StubsFor, rng_extra
from tests.wallet.conftest import admin_dsn

DICE = [pb.DrawSpec(integers=pb.IntegerDraw(low=1, high=6, count=3))]
DECK = [pb.DrawSpec(shuffle=pb.ShuffleDraw(size=52))]
EMPTY_RANGE = pb.IntegerDraw(low=5, high=1, count=1)
ROULETTE = [pb.DrawSpec(integers=pb.IntegerDraw(low=0, high=36, count=1))]


def reason(exc: grpc.aio.AioRpcError) -> str:
    info = error_info(exc)
    assert info is not None, f"no ErrorInfo in {exc!r}"
    return str(info.reason)


async def open_round(stub, game_id: str = "dice", inputs: bytes = b"target=50", **kw):  # type: ignore[no-untyped-def]
    response = await stub.OpenRound(
        pb.OpenRoundRequest(request_id=str(uuid.uuid4()), game_id=game_id, game_inputs=inputs, **kw)
    )
    return response.round


def values(response: pb.DrawResponse) -> list[list[int]]:
    return [list(r.values) for r in response.results]


def stored_round(round_id: str) -> tuple[bytes, bytes]:
    with psycopg.connect(admin_dsn()) as conn:
        row = conn.execute(
            "SELECT sealed_seed, game_inputs FROM rng.rounds WHERE round_id = %s", [round_id]
        ).fetchone()
    assert row is not None
    return bytes(row[0]), bytes(row[1])


async def test_round_draws_replay_to_the_archived_outcome(stubs) -> None:
    games = stubs["games"]
    r = await open_round(games)
    assert r.versions.generator == "drbg/chacha20-v1"
    assert r.versions.sampling == SAMPLING_VERSION
    assert r.state == pb.ROUND_STATE_OPEN
    first = await games.Draw(pb.DrawRequest(round_id=r.round_id, specs=DICE, draw_index=0))
    second = await games.Draw(pb.DrawRequest(round_id=r.round_id, specs=DECK, draw_index=1))
    assert all(1 <= v <= 6 for v in values(first)[0]) and len(values(first)[0]) == 3
    assert sorted(values(second)[0]) == list(range(52))
    # A retried draw returns what was drawn, never a new outcome.
    again = await games.Draw(pb.DrawRequest(round_id=r.round_id, specs=DICE, draw_index=0))
    assert values(again) == values(first)
    with pytest.raises(grpc.aio.AioRpcError) as skipped:
        await games.Draw(pb.DrawRequest(round_id=r.round_id, specs=DICE, draw_index=5))
    assert reason(skipped.value) == "DRAW_OUT_OF_ORDER"
    closed = await games.CloseRound(pb.CloseRoundRequest(round_id=r.round_id))
    assert closed.round.state == pb.ROUND_STATE_CLOSED and closed.round.draw_count == 2
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await games.Draw(pb.DrawRequest(round_id=r.round_id, specs=DICE, draw_index=2))
    assert reason(late.value) == "ROUND_CLOSED"

    replay = await stubs["backoffice"].ReplayRound(pb.ReplayRoundRequest(round_id=r.round_id))
    assert replay.matches
    assert [list(x.values) for x in replay.recomputed] == values(first) + values(second)
    assert [list(x.values) for x in replay.archived] == values(first) + values(second)


async def test_a_last_draw_closes_the_round_with_it_and_replays(stubs) -> None:
    games = stubs["games"]
    r = await open_round(games)
    request = pb.DrawRequest(round_id=r.round_id, specs=DICE, draw_index=0, close_round=True)
    drawn = await games.Draw(request)
    # A retry returns the draw, never a new one, though the round is now closed.
    assert values(await games.Draw(request)) == values(drawn)
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await games.Draw(pb.DrawRequest(round_id=r.round_id, specs=DICE, draw_index=1))
    assert reason(late.value) == "ROUND_CLOSED"
    closed = await games.CloseRound(pb.CloseRoundRequest(round_id=r.round_id))
    assert closed.round.state == pb.ROUND_STATE_CLOSED and closed.round.draw_count == 1
    replay = await stubs["backoffice"].ReplayRound(pb.ReplayRoundRequest(round_id=r.round_id))
    assert replay.matches and [list(x.values) for x in replay.archived] == values(drawn)


async def test_open_round_is_idempotent_by_request_id(stubs) -> None:
    request = pb.OpenRoundRequest(request_id=str(uuid.uuid4()), game_id="dice", game_inputs=b"x")
    a = await stubs["games"].OpenRound(request)
    b = await stubs["games"].OpenRound(request)
    assert a.round.round_id == b.round.round_id
    request.game_inputs = b"y"
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stubs["games"].OpenRound(request)
    assert reason(exc.value) == "IDEMPOTENCY_MISMATCH"


async def test_draws_derive_from_the_sealed_seed_which_needs_the_key(stubs, launch_rng) -> None:
    games = stubs["games"]
    r = await open_round(games, "roulette", b"bets=red")
    drawn = await games.Draw(pb.DrawRequest(round_id=r.round_id, specs=ROULETTE, draw_index=0))
    sealed, inputs = stored_round(r.round_id)
    # An auditor holding the key re-derives the draw offline.
    seed = Sealer(launch_rng.folder / "rng-seal.key").open(
        ROUND_SEED, uuid.UUID(r.round_id), sealed
    )
    source = draws.StreamSource("drbg/chacha20-v1", seed, "roulette", inputs)
    spec = draws.IntegerSpec(0, 36, 1)
    assert draws.replay(source, SAMPLING_VERSION, [[spec]]) == [values(drawn)]
    # Without the key (another key) the stored value does not open, and does not hold the seed.
    other = launch_rng.folder / "other-seal.key"
    ensure_seal_key(other)
    with pytest.raises(SealError):
        Sealer(other).open(ROUND_SEED, uuid.UUID(r.round_id), sealed)
    assert seed not in sealed
    # Nor does it open as another round's seed.
    with pytest.raises(SealError):
        Sealer(launch_rng.folder / "rng-seal.key").open(ROUND_SEED, uuid.uuid4(), sealed)


async def test_a_round_opened_under_v1_completes_under_v1_after_v2(
    stubs, launch_rng: RngLauncher, stubs_for: StubsFor
) -> None:
    r = await open_round(stubs["games"], "roulette", b"bets=zero")
    first = await stubs["games"].Draw(
        pb.DrawRequest(round_id=r.round_id, specs=ROULETTE, draw_index=0)
    )
    # Deploy v2: a new instance where new rounds open under sampling v2.
    v2 = launch_rng(f'sampling_version = "{SAMPLING_V2_VERSION}"')
    stubs_v2 = stubs_for(v2)
    listed = await stubs_v2["backoffice"].ListVersions(pb.ListVersionsRequest())
    by_version = {v.version: v for v in listed.versions}
    assert by_version[SAMPLING_V2_VERSION].current and not by_version[SAMPLING_VERSION].current
    for impl in versions.registry():
        assert by_version[impl.version].source_sha256 == impl.source_sha256
        assert (ROOT / by_version[impl.version].source_file).is_file()

    many = [pb.DrawSpec(integers=pb.IntegerDraw(low=0, high=36, count=200))]
    second = await stubs_v2["games"].Draw(
        pb.DrawRequest(round_id=r.round_id, specs=many, draw_index=1)
    )
    assert second.versions.sampling == SAMPLING_VERSION
    # The values are v1's, which differ from what v2 would make of the same stream.
    sealed, inputs = stored_round(r.round_id)
    seed = Sealer(launch_rng.folder / "rng-seal.key").open(
        ROUND_SEED, uuid.UUID(r.round_id), sealed
    )
    source = draws.StreamSource("drbg/chacha20-v1", seed, "roulette", inputs)
    specs = [[draws.IntegerSpec(0, 36, 1)], [draws.IntegerSpec(0, 36, 200)]]
    assert draws.replay(source, SAMPLING_VERSION, specs) == [values(first), values(second)]
    assert draws.replay(source, SAMPLING_V2_VERSION, specs) != [values(first), values(second)]
    await stubs_v2["games"].CloseRound(pb.CloseRoundRequest(round_id=r.round_id))
    replay = await stubs_v2["backoffice"].ReplayRound(pb.ReplayRoundRequest(round_id=r.round_id))
    assert replay.matches and replay.round.versions.sampling == SAMPLING_VERSION

    fresh = await open_round(stubs_v2["games"])
    assert fresh.versions.sampling == SAMPLING_V2_VERSION
    await stubs_v2["games"].Draw(pb.DrawRequest(round_id=fresh.round_id, specs=DICE))
    replay = await stubs["backoffice"].ReplayRound(pb.ReplayRoundRequest(round_id=fresh.round_id))
    assert replay.matches and replay.round.versions.sampling == SAMPLING_V2_VERSION


def seal_key_ids(*round_ids: str) -> list[str]:
    with psycopg.connect(admin_dsn()) as conn:
        return [
            conn.execute("SELECT seal_key_id FROM rng.rounds WHERE round_id = %s", [r]).fetchone()[
                0
            ]
            for r in round_ids
        ]


async def test_rounds_sealed_before_a_seal_key_rotation_still_replay(
    stubs, launch_rng: RngLauncher, stubs_for: StubsFor, pki: Pki, tmp_path: Path
) -> None:
    key_a = launch_rng.folder / "rng-seal.key"
    done = await open_round(stubs["games"], "roulette", b"bets=red")
    drawn = await stubs["games"].Draw(
        pb.DrawRequest(round_id=done.round_id, specs=ROULETTE, draw_index=0, close_round=True)
    )
    in_play = await open_round(stubs["games"], "dice", b"target=4")
    # Rotate: key B seals from now on; A is retired, kept only to open what it sealed.
    launcher = Launcher(tmp_path, pki, [])
    try:
        rotated = launcher(
            "rng", extra=rng_extra(tmp_path, settings=f'retired_seal_key_files = ["{key_a}"]')
        )
        after = stubs_for(rotated)
        replay = await after["backoffice"].ReplayRound(
            pb.ReplayRoundRequest(round_id=done.round_id)
        )
        assert replay.matches
        assert [list(r.values) for r in replay.recomputed] == values(drawn)
        # A round opened under A draws after the rotation, from its A-sealed seed.
        late = await after["games"].Draw(
            pb.DrawRequest(round_id=in_play.round_id, specs=DICE, draw_index=0, close_round=True)
        )
        replay = await after["backoffice"].ReplayRound(
            pb.ReplayRoundRequest(round_id=in_play.round_id)
        )
        assert replay.matches and [list(r.values) for r in replay.recomputed] == values(late)
        fresh = await open_round(after["games"], "dice", b"target=5")
        await after["games"].Draw(pb.DrawRequest(round_id=fresh.round_id, specs=DICE))
        replay = await after["backoffice"].ReplayRound(
            pb.ReplayRoundRequest(round_id=fresh.round_id)
        )
        assert replay.matches
        id_a, id_b = Sealer(key_a).key_id, Sealer(tmp_path / "rng-seal.key").key_id
        assert id_a != id_b
        assert seal_key_ids(done.round_id, in_play.round_id, fresh.round_id) == [id_a, id_a, id_b]
        # An RNG that does not hold B cannot open B's seeds: a finding about the round (its
        # key named), not an internal error.
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stubs["backoffice"].ReplayRound(pb.ReplayRoundRequest(round_id=fresh.round_id))
        assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        info = error_info(exc.value)
        assert info is not None and info.reason == "SEED_UNSEALABLE"
        assert info.metadata["seal_key_id"] == id_b
    finally:
        for process in launcher.started:
            process.terminate()


def verify_chain(folder: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    dsn_file = folder / "admin.dsn"
    dsn_file.write_text(admin_dsn())
    dsn_file.chmod(0o600)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "services.runtime.verdict_log",
            "verify",
            "--dsn-file",
            str(dsn_file),
            "--schema",
            "rng",
            "--public-key",
            str(folder / "rng-signing.pub"),
            *extra,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_tampering_with_a_stored_round_is_detected(stubs, launch_rng) -> None:
    games = stubs["games"]
    r = await open_round(games, "dice", b"target=10")
    await games.Draw(pb.DrawRequest(round_id=r.round_id, specs=DICE, draw_index=0))
    closed = await games.CloseRound(pb.CloseRoundRequest(round_id=r.round_id))
    assert closed.round.state == pb.ROUND_STATE_CLOSED
    checkpoints = launch_rng.folder / "checkpoints"
    # The service signs the head into the checkpoint folder (poll with a deadline).
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if verify_chain(launch_rng.folder, "--checkpoint", str(checkpoints)).returncode == 0:
            break
        await asyncio.sleep(0.2)
    result = verify_chain(launch_rng.folder, "--checkpoint", str(checkpoints))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "checkpoint at seq" in result.stdout

    # The round's stored inputs altered: replay no longer matches the audit chain.
    with psycopg.connect(admin_dsn()) as conn:
        conn.execute(
            "UPDATE rng.rounds SET game_inputs = 'target=99' WHERE round_id = %s", [r.round_id]
        )
    replay = await stubs["backoffice"].ReplayRound(pb.ReplayRoundRequest(round_id=r.round_id))
    assert not replay.matches

    # An audit record altered (bypassing the append-only triggers): the chain breaks. The
    # forged values are out of the dice's range, so the update always changes the row (a
    # real draw of 6, 6, 6 once made a "forgery" that changed nothing).
    with psycopg.connect(admin_dsn()) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(
            "UPDATE rng.verdicts SET inputs = jsonb_set(inputs, '{values}', '[[7,7,7]]')"
            " WHERE action = 'ROUND_DRAW' AND inputs->>'round_id' = %s",
            [r.round_id],
        )
    result = verify_chain(launch_rng.folder)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "CHAIN_BROKEN" in result.stdout


def run_verifier(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.rng.verify_fair", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_provably_fair_round_verifies_offline(stubs) -> None:
    games = stubs["games"]
    fair_key = f"player-{uuid.uuid4()}"
    committed = await games.CommitServerSeed(pb.CommitServerSeedRequest(fair_key=fair_key))
    assert len(committed.server_seed_commitment) == 64 and committed.next_nonce == 0
    r = await open_round(games, fair_key=fair_key, client_seed="lucky-7")
    assert r.versions.generator == "fair/hmac-sha256-v1"
    assert r.provably_fair.server_seed_commitment == committed.server_seed_commitment
    assert r.provably_fair.nonce == 0
    a = await games.Draw(pb.DrawRequest(round_id=r.round_id, specs=DICE, draw_index=0))
    b = await games.Draw(pb.DrawRequest(round_id=r.round_id, specs=DECK, draw_index=1))
    with pytest.raises(grpc.aio.AioRpcError) as in_use:
        await games.RevealServerSeed(pb.RevealServerSeedRequest(fair_key=fair_key))
    assert reason(in_use.value) == "SERVER_SEED_IN_USE"
    await games.CloseRound(pb.CloseRoundRequest(round_id=r.round_id))
    revealed = await games.RevealServerSeed(pb.RevealServerSeedRequest(fair_key=fair_key))
    assert revealed.revealed_commitment == committed.server_seed_commitment
    assert revealed.rounds == 1
    assert revealed.server_seed_commitment != committed.server_seed_commitment

    specs = json.dumps([{"integers": {"low": 1, "high": 6, "count": 3}}, {"shuffle": {"size": 52}}])
    expect = json.dumps(values(a) + values(b))
    common = ["--commitment", committed.server_seed_commitment, "--client-seed", "lucky-7"]
    ok = run_verifier(
        "--server-seed", revealed.revealed_server_seed, *common, "--nonce", "0",
        "--specs", specs, "--expect", expect,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "VERIFIED" in ok.stdout
    tampered_seed = ("0" if revealed.revealed_server_seed[0] != "0" else "1") + (
        revealed.revealed_server_seed[1:]
    )
    bad = run_verifier(
        "--server-seed", tampered_seed, *common, "--nonce", "0",
        "--specs", specs, "--expect", expect,
    )  # fmt: skip
    assert bad.returncode == 1 and "commitment MISMATCH" in bad.stdout
    # The next round under the key uses the new seed, from nonce 0.
    nxt = await open_round(games, fair_key=fair_key, client_seed="lucky-7")
    assert nxt.provably_fair.server_seed_commitment == revealed.server_seed_commitment


async def test_fair_round_needs_a_committed_seed(stubs) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await open_round(stubs["games"], fair_key=f"k-{uuid.uuid4()}", client_seed="c")
    assert reason(exc.value) == "SERVER_SEED_NOT_FOUND"


async def test_bad_requests_are_refused_and_change_nothing(stubs) -> None:
    games = stubs["games"]
    r = await open_round(games)
    bad = [
        pb.DrawRequest(round_id="not-a-uuid", specs=DICE),
        pb.DrawRequest(round_id=r.round_id),
        pb.DrawRequest(
            round_id=r.round_id,
            specs=[pb.DrawSpec(integers=pb.IntegerDraw(low=5, high=1, count=1))],
        ),
        pb.DrawRequest(round_id=r.round_id, specs=[pb.DrawSpec(shuffle=pb.ShuffleDraw(size=0))]),
    ]
    for request in bad:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await games.Draw(request)
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await games.Draw(pb.DrawRequest(round_id=str(uuid.uuid4()), specs=DICE))
    assert reason(missing.value) == "ROUND_NOT_FOUND"
    with pytest.raises(grpc.aio.AioRpcError) as no_key:
        await games.OpenRound(pb.OpenRoundRequest(game_id="dice"))
    assert reason(no_key.value) == "IDEMPOTENCY_KEY_REQUIRED"
    # Nothing was drawn by the refused calls: the round's first draw is still index 0.
    first = await games.Draw(pb.DrawRequest(round_id=r.round_id, specs=DICE, draw_index=0))
    assert first.draw_index == 0


async def test_only_games_draws_and_backoffice_replays(stubs) -> None:
    r = await open_round(stubs["games"])
    for call in (
        stubs["backoffice"].Draw(pb.DrawRequest(round_id=r.round_id, specs=DICE)),
        stubs["wallet"].OpenRound(pb.OpenRoundRequest(request_id="x", game_id="dice")),
        stubs["wallet"].ReplayRound(pb.ReplayRoundRequest(round_id=r.round_id)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call
        assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_failed_self_test_reports_not_serving_and_refuses_draws(
    launch_rng: RngLauncher, stubs_for: StubsFor
) -> None:
    broken = launch_rng('self_test_fail = "forced failure"')
    await broken.wait_health(NOT_SERVING)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await open_round(stubs_for(broken)["games"])
    assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
    assert reason(exc.value) == "RNG_UNHEALTHY"


async def test_an_unhealthy_rng_still_answers_what_it_decided_before(
    rng: ServiceProcess, launch_rng: RngLauncher, stubs_for: StubsFor
) -> None:
    # A caller recovering a round (games after a crash) must learn the round's id and the
    # draw already made even while the generator refuses new ones: else the stakes of
    # those rounds stay held until the RNG is healthy again.
    healthy = stubs_for(rng)["games"]
    request = pb.OpenRoundRequest(request_id=str(uuid.uuid4()), game_id="dice", game_inputs=b"t")
    opened = (await healthy.OpenRound(request)).round
    drawn = await healthy.Draw(pb.DrawRequest(round_id=opened.round_id, specs=DICE))
    broken = launch_rng('self_test_fail = "forced failure"')
    await broken.wait_health(NOT_SERVING)
    unhealthy = stubs_for(broken)["games"]
    assert (await unhealthy.OpenRound(request)).round.round_id == opened.round_id
    again = await unhealthy.Draw(pb.DrawRequest(round_id=opened.round_id, specs=DICE))
    assert values(again) == values(drawn)
    for refused in (
        unhealthy.Draw(pb.DrawRequest(round_id=opened.round_id, specs=DICE, draw_index=1)),
        open_round(unhealthy),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await refused
        assert reason(exc.value) == "RNG_UNHEALTHY"
