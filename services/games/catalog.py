"""The games this build serves: each game's math version, bets and outcomes as canonical JSON.

Pure (no I/O, no gRPC): the games service parses a bet with ``parse_bet``, asks the RNG for
integers in ``ranges(bet)`` and settles them with ``resolve``; rounds recorded under a
version are replayed with ``by_version(version)``, so every version ever shipped stays here.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any, TypeVar

from services.games.math import dice, roulette, slot
from services.games.math.outcome import Outcome
from services.runtime.errors import Code, DomainError, InvalidArgument, NotFound

__all__ = [
    "GAMES",
    "MATH",
    "MAX_ROULETTE_BETS",
    "GameMath",
    "UnknownMathVersion",
    "by_version",
    "canonical_json",
    "current",
    "rtp_percent",
]

MAX_ROULETTE_BETS = 50  # bets on one spin; keeps a round's bet and outcome JSON bounded

_T = TypeVar("_T")
_O = TypeVar("_O", bound=Outcome)


class UnknownMathVersion(DomainError):
    """A round was recorded under a math version this build does not implement: it cannot
    be settled or replayed here, which is the platform's fault, not the caller's."""

    code = Code.INTERNAL

    def __init__(self, version: str) -> None:
        super().__init__(
            "UNKNOWN_ALGORITHM_VERSION",
            f"game math version {version!r} is not implemented by this build",
            {"version": version},
        )


@dataclass(frozen=True)
class GameMath:
    """One version of one game's math, with its JSON forms. Subclasses fill in the methods;
    ``reference_rtp`` is computed on first use: the slot's takes counting 24.3 million stop
    combinations, seconds a service should not spend at import."""

    game_id: str  # "dice" | "roulette" | "slot"
    version: str  # the math module's VERSION, recorded with every round
    display_name: str
    product: str  # compliance product: "TABLE" or "SLOTS"
    provably_fair: bool
    min_round_interval_ms: int  # minimum spacing between rounds of one session

    @functools.cached_property
    def reference_rtp(self) -> Fraction:
        """Exact RTP of the game's reference bet."""
        return self._reference_rtp()

    def _reference_rtp(self) -> Fraction:
        raise NotImplementedError

    def parse_bet(self, data: Mapping[str, Any]) -> Any:
        """The math's bet object for a JSON bet; InvalidArgument (field ``bet.<name>``) for
        anything malformed."""
        raise NotImplementedError

    def bet_json(self, bet: Any) -> dict[str, Any]:
        """The canonical JSON form of a bet: ``parse_bet(bet_json(bet)) == bet``."""
        raise NotImplementedError

    def stake(self, bet: Any) -> int:
        """Minor units staked on the round."""
        raise NotImplementedError

    def ranges(self, bet: Any) -> tuple[int, ...]:
        """The range of each integer the round draws, in draw order."""
        raise NotImplementedError

    def resolve(self, bet: Any, draws: Sequence[int]) -> Outcome:
        """The round's outcome from the integers drawn in ``ranges(bet)``."""
        raise NotImplementedError

    def outcome_json(self, outcome: Outcome) -> dict[str, Any]:
        """The game-specific part of an outcome as JSON (stake, payout and draws are the
        Outcome's own fields)."""
        raise NotImplementedError

    def _own(self, outcome: Outcome, kind: type[_O]) -> _O:
        """``outcome``, if this math produced it (a replay must not describe another's)."""
        if not isinstance(outcome, kind) or outcome.version != self.version:
            raise TypeError(f"{self.version} cannot describe {outcome!r}")
        return outcome


# --- parsing helpers ----------------------------------------------------------------------


def _object(
    data: object, field: str, keys: set[str], optional: frozenset[str]
) -> Mapping[str, Any]:
    """``data`` if it is a JSON object with exactly ``keys`` (``optional`` may be absent)."""
    if not isinstance(data, Mapping):
        raise InvalidArgument(field, f"{field} must be an object")
    for key in data:
        if key not in keys:
            raise InvalidArgument(f"{field}.{key}", f"unknown field {key!r} in {field}")
    for key in sorted(keys - optional):
        if key not in data:
            raise InvalidArgument(f"{field}.{key}", f"{field}.{key} is required")
    return data


def _int(value: object, field: str) -> int:
    # bool is an int subclass, but JSON true is not a number.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(field, f"{field} must be an integer, got {value!r}")
    return value


def _str(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(field, f"{field} must be a string, got {value!r}")
    return value


def _refield(error: InvalidArgument, prefix: str) -> InvalidArgument:
    """The math's own refusal, with its field named as the caller sent it."""
    return InvalidArgument(f"{prefix}.{error.field}", error.message)


def _expect(bet: Any, kind: type[_T]) -> _T:
    if not isinstance(bet, kind):
        raise TypeError(f"expected a {kind.__name__}, got {bet!r}")
    return bet


# --- dice -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _DiceMath(GameMath):
    def _reference_rtp(self) -> Fraction:
        return dice.nominal_rtp()

    def parse_bet(self, data: Mapping[str, Any]) -> dice.DiceBet:
        _object(data, "bet", {"stake", "target", "direction"}, frozenset())
        stake = _int(data["stake"], "bet.stake")
        target = _int(data["target"], "bet.target")
        direction = _str(data["direction"], "bet.direction")
        if direction not in {d.value for d in dice.Direction}:
            raise InvalidArgument(
                "bet.direction", f"direction must be UNDER or OVER, got {direction!r}"
            )
        try:
            return dice.DiceBet(stake=stake, target=target, direction=dice.Direction(direction))
        except InvalidArgument as refused:
            raise _refield(refused, "bet") from None

    def bet_json(self, bet: Any) -> dict[str, Any]:
        bet = _expect(bet, dice.DiceBet)
        # The house edge is part of the version, not of the bet: a bet at another edge has
        # no JSON form here (it would parse back at the default edge).
        if bet.house_edge != dice.DEFAULT_HOUSE_EDGE:
            raise ValueError(f"{self.version} bets are at house edge {dice.DEFAULT_HOUSE_EDGE}")
        return {"stake": bet.stake, "target": bet.target, "direction": bet.direction.value}

    def stake(self, bet: Any) -> int:
        return _expect(bet, dice.DiceBet).stake

    def ranges(self, bet: Any) -> tuple[int, ...]:
        return dice.ranges(_expect(bet, dice.DiceBet))

    def resolve(self, bet: Any, draws: Sequence[int]) -> Outcome:
        return dice.resolve(_expect(bet, dice.DiceBet), draws)

    def outcome_json(self, outcome: Outcome) -> dict[str, Any]:
        (roll,) = self._own(outcome, Outcome).draws
        return {"roll": roll, "won": outcome.payout > 0}


# --- roulette -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _RouletteMath(GameMath):
    def _reference_rtp(self) -> Fraction:
        return roulette.rtp(roulette.BetKind.STRAIGHT)

    def parse_bet(self, data: Mapping[str, Any]) -> tuple[roulette.RouletteBet, ...]:
        _object(data, "bet", {"bets"}, frozenset())
        items = data["bets"]
        if isinstance(items, str | bytes) or not isinstance(items, Sequence):
            raise InvalidArgument("bet.bets", "bet.bets must be a list")
        if not items:
            raise InvalidArgument("bet.bets", "at least one bet is required")
        if len(items) > MAX_ROULETTE_BETS:
            raise InvalidArgument(
                "bet.bets", f"at most {MAX_ROULETTE_BETS} bets per spin, got {len(items)}"
            )
        return tuple(self._parse_one(item, f"bet.bets[{i}]") for i, item in enumerate(items))

    @staticmethod
    def _parse_one(item: object, field: str) -> roulette.RouletteBet:
        item = _object(item, field, {"kind", "stake", "numbers"}, frozenset({"numbers"}))
        kind = _str(item["kind"], f"{field}.kind")
        if kind not in {k.value for k in roulette.BetKind}:
            raise InvalidArgument(f"{field}.kind", f"unknown bet kind {kind!r}")
        stake = _int(item["stake"], f"{field}.stake")
        numbers = item.get("numbers", [])
        if isinstance(numbers, str | bytes) or not isinstance(numbers, Sequence):
            raise InvalidArgument(f"{field}.numbers", f"{field}.numbers must be a list")
        parsed = tuple(_int(n, f"{field}.numbers") for n in numbers)
        try:
            return roulette.RouletteBet(roulette.BetKind(kind), stake, parsed)
        except InvalidArgument as refused:
            raise _refield(refused, field) from None

    def bet_json(self, bet: Any) -> dict[str, Any]:
        return {
            "bets": [
                {"kind": b.kind.value, "stake": b.stake, "numbers": list(b.numbers)}
                for b in self._bets(bet)
            ]
        }

    def stake(self, bet: Any) -> int:
        return sum(b.stake for b in self._bets(bet))

    def ranges(self, bet: Any) -> tuple[int, ...]:
        return roulette.ranges(self._bets(bet))

    def resolve(self, bet: Any, draws: Sequence[int]) -> Outcome:
        return roulette.resolve(self._bets(bet), draws)

    def outcome_json(self, outcome: Outcome) -> dict[str, Any]:
        outcome = self._own(outcome, roulette.RouletteOutcome)
        return {"pocket": outcome.pocket, "bet_returns": list(outcome.bet_returns)}

    @staticmethod
    def _bets(bet: Any) -> tuple[roulette.RouletteBet, ...]:
        if not isinstance(bet, tuple | list) or not all(
            isinstance(b, roulette.RouletteBet) for b in bet
        ):
            raise TypeError(f"expected a sequence of RouletteBet, got {bet!r}")
        return tuple(bet)


# --- slot -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SlotMath(GameMath):
    # The machine is part of the version: slot/v1 is slot.MACHINE, always.
    def _reference_rtp(self) -> Fraction:
        return slot.rtp(slot.MACHINE)

    def parse_bet(self, data: Mapping[str, Any]) -> slot.SlotBet:
        _object(data, "bet", {"line_bet"}, frozenset())
        line_bet = _int(data["line_bet"], "bet.line_bet")
        try:
            return slot.SlotBet(line_bet=line_bet)
        except InvalidArgument as refused:
            raise _refield(refused, "bet") from None

    def bet_json(self, bet: Any) -> dict[str, Any]:
        return {"line_bet": _expect(bet, slot.SlotBet).line_bet}

    def stake(self, bet: Any) -> int:
        return _expect(bet, slot.SlotBet).line_bet * len(slot.MACHINE.paylines)

    def ranges(self, bet: Any) -> tuple[int, ...]:
        return slot.ranges(_expect(bet, slot.SlotBet), slot.MACHINE)

    def resolve(self, bet: Any, draws: Sequence[int]) -> Outcome:
        return slot.resolve(_expect(bet, slot.SlotBet), draws, slot.MACHINE)

    def outcome_json(self, outcome: Outcome) -> dict[str, Any]:
        spin = self._own(outcome, slot.SlotOutcome)
        return {
            "stops": list(spin.stops),
            # The window is stored per reel; players read it row by row, top row first.
            "rows": [" ".join(column[row] for column in spin.window) for row in range(slot.ROWS)],
            "line_wins": [[win.line, win.line_bets] for win in spin.line_wins],
            "scatters": spin.scatters,
            "scatter_win": spin.scatter_win,
        }


# --- the catalog ----------------------------------------------------------------------------

_DICE_V1 = _DiceMath(
    game_id="dice",
    version=dice.VERSION,
    display_name="Dice",
    product="TABLE",
    provably_fair=True,
    min_round_interval_ms=0,
)
_ROULETTE_V1 = _RouletteMath(
    game_id="roulette",
    version=roulette.VERSION,
    display_name="European Roulette",
    product="TABLE",
    provably_fair=False,
    min_round_interval_ms=0,
)
_SLOT_V1 = _SlotMath(
    game_id="slot",
    version=slot.VERSION,
    display_name="Five-Reel Slot",
    product="SLOTS",
    provably_fair=False,
    min_round_interval_ms=2500,  # UKGC: at least 2.5 s between the starts of slot spins
)

# The current version of each game, in display order.
GAMES: tuple[GameMath, ...] = (_DICE_V1, _ROULETTE_V1, _SLOT_V1)

# Every version this build implements, current or not: old rounds replay under their own.
MATH: dict[str, GameMath] = {game.version: game for game in (_DICE_V1, _ROULETTE_V1, _SLOT_V1)}

_CURRENT: dict[str, GameMath] = {game.game_id: game for game in GAMES}


def current(game_id: str) -> GameMath:
    """The version of ``game_id`` new rounds are played under."""
    try:
        return _CURRENT[game_id]
    except KeyError:
        raise NotFound("GAME_NOT_FOUND", f"no game {game_id!r}", {"game_id": game_id}) from None


def by_version(version: str) -> GameMath:
    """The math a round recorded under ``version`` was played with."""
    try:
        return MATH[version]
    except KeyError:
        raise UnknownMathVersion(version) from None


def canonical_json(value: Any) -> bytes:
    """One byte string per value, whatever the key order: what is hashed and stored."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def rtp_percent(rtp: Fraction) -> str:
    """``rtp`` as a percentage with 4 decimals, rounded half to even, exactly (no float)."""
    # round() of a Fraction is exact and rounds half to even.
    ten_thousandths = round(rtp * 100 * 10_000)
    return str(Decimal(ten_thousandths).scaleb(-4))
