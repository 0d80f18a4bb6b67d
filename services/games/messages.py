"""Protobuf to and from the games domain: bets and outcomes (the catalog's JSON), rounds (the
archive record's shape) and sessions. The generated types stop here."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

from casino.common.v1 import money_pb2
from casino.games.v1 import events_pb2
from casino.games.v1 import games_pb2 as pb
from services.games import catalog
from services.games.sessions import Session
from services.runtime.errors import InvalidArgument
from services.runtime.messages import timestamp

_DIRECTIONS = {pb.DICE_DIRECTION_UNDER: "UNDER", pb.DICE_DIRECTION_OVER: "OVER"}
_DIRECTION_VALUES = {v: k for k, v in _DIRECTIONS.items()}
_ROULETTE_PREFIX = "ROULETTE_BET_KIND_"
_STATES = {
    "OPEN": pb.ROUND_STATE_OPEN,
    "DEBITED": pb.ROUND_STATE_DEBITED,
    "DRAWN": pb.ROUND_STATE_DRAWN,
    "COMPLETED": pb.ROUND_STATE_COMPLETED,
    "VOIDED": pb.ROUND_STATE_VOIDED,
}
_GAMES = {"dice": pb.GAME_DICE, "roulette": pb.GAME_ROULETTE, "slot": pb.GAME_SLOT}


def bet_json(game_id: str, bet: pb.Bet) -> dict[str, Any]:
    """The bet as the catalog reads it; the bet must be for the session's game."""
    kind = bet.WhichOneof("game")
    if kind != game_id:
        raise InvalidArgument(
            "bet", f"this session plays {game_id}; the bet must be a {game_id} bet"
        )
    if kind == "dice":
        direction = _DIRECTIONS.get(bet.dice.direction)
        if direction is None:
            raise InvalidArgument("bet.dice.direction", "direction must be UNDER or OVER")
        return {"stake": bet.dice.stake_minor, "target": bet.dice.target, "direction": direction}
    if kind == "roulette":
        bets = []
        for i, b in enumerate(bet.roulette.bets):
            if b.kind == pb.ROULETTE_BET_KIND_UNSPECIFIED:
                raise InvalidArgument(f"bet.roulette.bets[{i}].kind", "kind is required")
            name = pb.RouletteBetKind.Name(b.kind).removeprefix(_ROULETTE_PREFIX)
            bets.append({"kind": name, "stake": b.stake_minor, "numbers": list(b.numbers)})
        return {"bets": bets}
    return {"line_bet": bet.slot.line_bet_minor}


def bet_message(game_id: str, bet: Mapping[str, Any]) -> pb.Bet:
    if game_id == "dice":
        return pb.Bet(
            dice=pb.DiceBet(
                stake_minor=bet["stake"],
                target=bet["target"],
                direction=_DIRECTION_VALUES[bet["direction"]],
            )
        )
    if game_id == "roulette":
        return pb.Bet(
            roulette=pb.RouletteSpin(
                bets=[
                    pb.RouletteBet(
                        kind=pb.RouletteBetKind.Value(_ROULETTE_PREFIX + b["kind"]),
                        stake_minor=b["stake"],
                        numbers=b["numbers"],
                    )
                    for b in bet["bets"]
                ]
            )
        )
    return pb.Bet(slot=pb.SlotSpin(line_bet_minor=bet["line_bet"]))


def outcome_message(game_id: str, outcome: Mapping[str, Any]) -> pb.Outcome:
    if game_id == "dice":
        return pb.Outcome(dice=pb.DiceOutcome(roll=outcome["roll"], won=outcome["won"]))
    if game_id == "roulette":
        return pb.Outcome(
            roulette=pb.RouletteOutcome(
                pocket=outcome["pocket"], bet_returns_minor=outcome["bet_returns"]
            )
        )
    return pb.Outcome(
        slot=pb.SlotOutcome(
            stops=outcome["stops"],
            rows=outcome["rows"],
            line_wins=[pb.SlotLineWin(payline=p, line_bets=n) for p, n in outcome["line_wins"]],
            scatters=outcome["scatters"],
            scatter_win_minor=outcome["scatter_win"],
        )
    )


def _time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def round_message(fields: Mapping[str, Any], digest: bytes | None = None) -> pb.Round:
    """A round from its record (`rounds.round_fields` / the archive's JSON)."""
    game_id, currency = fields["game_id"], fields["currency"]
    message = pb.Round(
        name=f"players/{fields['player_id']}/rounds/{fields['round_id']}",
        round_id=fields["round_id"],
        player_id=fields["player_id"],
        session_id=fields["session_id"],
        request_id=fields["request_id"],
        game_id=game_id,
        math_version=fields["math_version"],
        state=_STATES[fields["state"]],
        bet=bet_message(game_id, fields["bet"]),
        stake=money_pb2.Money(amount_minor=fields["stake_minor"], currency_code=currency),
        payout=money_pb2.Money(amount_minor=fields["payout_minor"] or 0, currency_code=currency),
        draws=fields["draws"] or [],
        bet_verdict_id=fields["bet_verdict_id"],
        bet_transaction_id=fields["bet_transaction_id"] or "",
        settle_transaction_id=fields["settle_transaction_id"] or "",
        balance_after_minor=fields["balance_after_minor"] or 0,
        void_reason=fields["void_reason"] or "",
        record_hash=digest.hex() if digest else "",
    )
    if fields["outcome"] is not None:
        message.outcome.CopyFrom(outcome_message(game_id, fields["outcome"]))
    rng = fields["rng"]
    if rng["round_id"]:
        message.rng_round_id = rng["round_id"]
        message.rng_versions.CopyFrom(
            pb.RngVersions(generator=rng["generator"] or "", sampling=rng["sampling"] or "")
        )
    fair = fields["fair"]
    if fair:
        message.provably_fair.CopyFrom(
            pb.ProvablyFairRound(
                server_seed_commitment=fair["commitment"] or "",
                client_seed=fair["client_seed"] or "",
                nonce=fair["nonce"] or 0,
            )
        )
    for name, value in (("open_time", fields["open_time"]), ("close_time", fields["close_time"])):
        moment = _time(value)
        if moment is not None:
            getattr(message, name).CopyFrom(timestamp(moment))
    return message


def round_archived_event(record: Mapping[str, Any], digest: bytes, event_id: uuid.UUID) -> bytes:
    return events_pb2.RoundArchived(
        event_id=str(event_id), round=round_message(record, digest)
    ).SerializeToString()


def session_message(s: Session) -> pb.Session:
    return pb.Session(
        name=f"players/{s.player_id}/gameSessions/{s.session_id}",
        session_id=s.session_id,
        player_id=s.player_id,
        game_id=s.game_id,
        currency_code=s.currency,
        start_time=timestamp(s.start_time),
        expire_time=timestamp(s.expire_time),
        balance_minor=s.balance_minor,
        rounds_played=s.rounds_played,
        staked_minor=s.staked_minor,
        won_minor=s.won_minor,
        net_position_minor=s.net_position_minor,
        reality_check=pb.RealityCheck(
            interval_minutes=s.reality_interval_minutes,
            next_check_time=timestamp(s.next_check_time),
        ),
        client_seed=s.client_seed,
        server_seed_commitment=s.fair_commitment,
        request_country_code=s.country,
        ended=s.ended,
    )


def game_message(math: catalog.GameMath, min_stake: int, max_stake: int) -> pb.GameInfo:
    return pb.GameInfo(
        name=f"games/{math.game_id}",
        game_id=math.game_id,
        game=_GAMES[math.game_id],
        display_name=math.display_name,
        math_version=math.version,
        rtp_percent=catalog.rtp_percent(math.reference_rtp),
        rtp_fraction=f"{math.reference_rtp.numerator}/{math.reference_rtp.denominator}",
        min_stake_minor=min_stake,
        max_stake_minor=max_stake,
        min_round_interval_ms=math.min_round_interval_ms,
        provably_fair=math.provably_fair,
    )
