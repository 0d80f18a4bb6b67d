"""A 5-reel, 3-row video slot with 10 paylines, a wild and a scatter (version ``slot/v1``).

The machine is data (``SlotMachine``: reel strips, paylines, paytable, scatter pays). A spin
draws one stop per reel, ``uniform_int(stream, len(strip))`` for reels 1..5 in order; the
window shows ``strip[(stop + row) % len(strip)]`` for rows 0..2 (top to bottom).

Pay rules:
- The bet is ``line_bet`` minor units on each of the ``len(paylines)`` lines; the stake is
  ``line_bet * len(paylines)``.
- A line pays left to right from reel 1. The wild substitutes for every symbol except the
  scatter. A line's run is the longest prefix made of wilds and its first non-wild symbol;
  it pays ``paytable[symbol][run]`` line bets for runs of 3, 4 or 5. A run of wilds alone
  also pays as ``wild_pays_as``; the line pays the better of the two. The scatter never
  pays on a line.
- Scatters pay anywhere in the window: ``scatter_pays[count]`` times the stake.

The exact RTP and variance come from the full distribution of the spin's return over every
combination of reel stops (the product of the strip lengths, 30**5 = 24,300,000 for ``MACHINE``).
Combinations are counted, not visited one by one: reel by reel, combinations that reach the
same state (each line's still-undecided prefix, the scatter count, the pay already decided)
are merged with their multiplicity, which gives the same exact integer counts as visiting
every combination (the unit tests check this against brute force on small machines).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from services.games.math.outcome import ByteStream, Outcome, draw
from services.runtime.errors import InvalidArgument

VERSION = "slot/v1"
ROWS = 3
REELS = 5

WILD = "W"
SCATTER = "S"


# eq=False: a machine is hashed by identity, so its exact moments can be cached per machine.
@dataclass(frozen=True, eq=False)
class SlotMachine:
    strips: tuple[tuple[str, ...], ...]  # one symbol list per reel, read downwards, wrapping
    paylines: tuple[tuple[int, ...], ...]  # the row (0..2) on each reel, per line
    paytable: Mapping[str, Mapping[int, int]]  # symbol -> run length -> line bets won
    scatter_pays: Mapping[int, int]  # scatters in the window -> stakes won
    wild_pays_as: str

    def __post_init__(self) -> None:
        if len(self.strips) != REELS or any(len(strip) < ROWS for strip in self.strips):
            raise ValueError(f"a machine has {REELS} reel strips of at least {ROWS} symbols")
        for line in self.paylines:
            if len(line) != REELS or not all(0 <= row < ROWS for row in line):
                raise ValueError(f"payline {line} must give a row 0..{ROWS - 1} per reel")
        if len(set(self.paylines)) != len(self.paylines):
            raise ValueError("paylines must be distinct")
        known = set(self.paytable) | {WILD, SCATTER}
        for strip in self.strips:
            if unknown := set(strip) - known:
                raise ValueError(f"strip symbols without a pay rule: {sorted(unknown)}")
        if self.wild_pays_as not in self.paytable:
            raise ValueError("wild_pays_as must be a paying symbol")

    @functools.cached_property
    def windows(self) -> tuple[tuple[tuple[str, ...], ...], ...]:
        """Per reel, per stop: the symbols shown on rows 0..2."""
        return tuple(
            tuple(
                tuple(strip[(stop + row) % len(strip)] for row in range(ROWS))
                for stop in range(len(strip))
            )
            for strip in self.strips
        )

    @functools.cached_property
    def stop_counts(self) -> tuple[int, ...]:
        """Per reel, the number of stops: the range each reel's stop is drawn in."""
        return tuple(len(strip) for strip in self.strips)

    @functools.cached_property
    def line_pay_cache(self) -> dict[tuple[str, ...], int]:
        return {}

    @property
    def combinations(self) -> int:
        total = 1
        for strip in self.strips:
            total *= len(strip)
        return total


def line_pay(machine: SlotMachine, symbols: Sequence[str]) -> int:
    """Line bets won by a line showing ``symbols`` (reel 1 first). Also correct for a prefix
    once both runs (wilds alone, wilds with the first symbol) have ended within it."""
    wild_run = 0
    while wild_run < len(symbols) and symbols[wild_run] == WILD:
        wild_run += 1
    best = machine.paytable[machine.wild_pays_as].get(wild_run, 0)
    if wild_run < len(symbols) and symbols[wild_run] != SCATTER:
        symbol = symbols[wild_run]
        run = wild_run + 1
        while run < len(symbols) and symbols[run] in (WILD, symbol):
            run += 1
        best = max(best, machine.paytable[symbol].get(run, 0))
    return best


def _line_decided(symbols: Sequence[str]) -> bool:
    """True once more reels cannot change this line's pay (both runs have ended)."""
    non_wild = [s for s in symbols if s != WILD]
    if not non_wild:
        return False  # still all wilds
    return non_wild[0] == SCATTER or any(s != non_wild[0] for s in non_wild)


def scatter_pay(machine: SlotMachine, scatters: int) -> int:
    """Stakes won for ``scatters`` scatter symbols in the window."""
    return machine.scatter_pays.get(min(scatters, max(machine.scatter_pays, default=0)), 0)


@dataclass(frozen=True, slots=True)
class SlotBet:
    line_bet: int  # minor units per payline

    def __post_init__(self) -> None:
        if isinstance(self.line_bet, bool) or not isinstance(self.line_bet, int):
            raise InvalidArgument("line_bet", f"line bet must be an integer, got {self.line_bet!r}")
        if self.line_bet <= 0:
            raise InvalidArgument("line_bet", f"line bet must be positive, got {self.line_bet}")


@dataclass(frozen=True, slots=True)
class LineWin:
    line: int  # index into machine.paylines
    line_bets: int


@dataclass(frozen=True, slots=True)
class SlotOutcome(Outcome):
    stops: tuple[int, ...]
    window: tuple[tuple[str, ...], ...]  # per reel, rows 0..2
    line_wins: tuple[LineWin, ...]
    scatters: int
    scatter_win: int  # minor units


def spin_units(machine: SlotMachine, window: Sequence[Sequence[str]]) -> tuple[int, int]:
    """(sum of line pays in line bets, scatter count) for a window."""
    units = 0
    for line in machine.paylines:
        units += line_pay(machine, [window[reel][row] for reel, row in enumerate(line)])
    scatters = sum(column.count(SCATTER) for column in window)
    return units, scatters


def ranges(bet: SlotBet, machine: SlotMachine | None = None) -> tuple[int, ...]:
    """The range of each integer the spin draws, in draw order: one stop per reel."""
    return (machine or MACHINE).stop_counts


def resolve(bet: SlotBet, draws: Sequence[int], machine: SlotMachine | None = None) -> SlotOutcome:
    """The outcome of a spin whose stops, drawn in the ranges ``ranges(bet, machine)``, are
    ``draws``: what ``play`` settles when its stream yields them. ValueError if they could
    not have been drawn (wrong count, not an integer, out of range)."""
    machine = machine or MACHINE
    if len(draws) != REELS:
        raise ValueError(f"a spin draws {REELS} integers (one stop per reel), got {len(draws)}")
    # Unrolled over the five reels: this runs a million times per simulation.
    s0, s1, s2, s3, s4 = draws
    n0, n1, n2, n3, n4 = machine.stop_counts
    if not (
        type(s0) is int
        and type(s1) is int
        and type(s2) is int
        and type(s3) is int
        and type(s4) is int
        and 0 <= s0 < n0
        and 0 <= s1 < n1
        and 0 <= s2 < n2
        and 0 <= s3 < n3
        and 0 <= s4 < n4
    ):
        raise ValueError(f"stops must be integers in [0, strip length) per reel, got {draws!r}")
    stops = (s0, s1, s2, s3, s4)
    windows = machine.windows
    window = (windows[0][s0], windows[1][s1], windows[2][s2], windows[3][s3], windows[4][s4])
    w0, w1, w2, w3, w4 = window
    wins: list[LineWin] = []
    for index, (r0, r1, r2, r3, r4) in enumerate(machine.paylines):
        won = _cached_line_pay(machine, (w0[r0], w1[r1], w2[r2], w3[r3], w4[r4]))
        if won:
            wins.append(LineWin(index, won))
    scatters = (
        w0.count(SCATTER) + w1.count(SCATTER) + w2.count(SCATTER) + w3.count(SCATTER)
    ) + w4.count(SCATTER)
    stake = bet.line_bet * len(machine.paylines)
    scatter_win = stake * scatter_pay(machine, scatters)
    return SlotOutcome(
        version=VERSION,
        stake=stake,
        payout=bet.line_bet * sum(w.line_bets for w in wins) + scatter_win,
        draws=stops,
        stops=stops,
        window=window,
        line_wins=tuple(wins),
        scatters=scatters,
        scatter_win=scatter_win,
    )


def play(stream: ByteStream, bet: SlotBet, machine: SlotMachine | None = None) -> SlotOutcome:
    machine = machine or MACHINE
    return resolve(bet, tuple(draw(stream, n) for n in ranges(bet, machine)), machine)


def _cached_line_pay(machine: SlotMachine, symbols: tuple[str, ...]) -> int:
    """line_pay memoised per machine (at most one entry per distinct symbol sequence)."""
    pays = machine.line_pay_cache
    won = pays.get(symbols)
    if won is None:
        won = pays[symbols] = line_pay(machine, symbols)
    return won


# Per payline: the symbols seen so far while its pay is undecided, None once decided.
_Prefixes = tuple[tuple[str, ...] | None, ...]


def return_distribution(machine: SlotMachine) -> dict[Fraction, int]:
    """Exact distribution of the return per unit stake: return -> number of stop combinations
    (out of ``machine.combinations``) that produce it. See the module docstring."""
    states: dict[tuple[_Prefixes, int, int], int] = {(tuple(() for _ in machine.paylines), 0, 0): 1}
    for reel, windows in enumerate(machine.windows):
        window_counts: dict[tuple[str, ...], int] = defaultdict(int)
        for window in windows:
            window_counts[window] += 1
        last = reel == REELS - 1
        next_states: dict[tuple[_Prefixes, int, int], int] = defaultdict(int)
        for (prefixes, scatters, decided), count in states.items():
            for window, weight in window_counts.items():
                new_prefixes: list[tuple[str, ...] | None] = []
                new_decided = decided
                for prefix, line in zip(prefixes, machine.paylines, strict=True):
                    if prefix is None:
                        new_prefixes.append(None)
                        continue
                    extended = (*prefix, window[line[reel]])
                    if last or _line_decided(extended):
                        new_decided += _cached_line_pay(machine, extended)
                        new_prefixes.append(None)
                    else:
                        new_prefixes.append(extended)
                key = (tuple(new_prefixes), scatters + window.count(SCATTER), new_decided)
                next_states[key] += count * weight
        states = next_states
    lines = len(machine.paylines)
    distribution: dict[Fraction, int] = defaultdict(int)
    for (_, scatters, units), count in states.items():
        distribution[Fraction(units + lines * scatter_pay(machine, scatters), lines)] += count
    return dict(distribution)


@functools.lru_cache(maxsize=8)
def _moments(machine: SlotMachine) -> tuple[Fraction, Fraction]:
    distribution = return_distribution(machine)
    total = sum(distribution.values())
    mean = sum((r * n for r, n in distribution.items()), Fraction(0)) / total
    second = sum((r * r * n for r, n in distribution.items()), Fraction(0)) / total
    return mean, second


def rtp(machine: SlotMachine | None = None) -> Fraction:
    """Exact RTP of a spin (independent of the line bet: every pay is a multiple of it)."""
    mean, _ = _moments(machine or MACHINE)
    return mean


def variance(machine: SlotMachine | None = None) -> Fraction:
    """Exact variance of the return per unit stake of one spin."""
    mean, second = _moments(machine or MACHINE)
    return second - mean * mean


def _strip(spec: str) -> tuple[str, ...]:
    return tuple(spec.split())


# Target RTP about 95.7% (exact value: rtp()). Reels 2-4 carry a stacked pair of wilds.
# Symbols: W wild, S scatter, 7 seven, B bar, L bell, P plum, O orange, M lemon, C cherry.
MACHINE = SlotMachine(
    strips=(
        _strip("7 C M O S P C M L O C B M P C O W M C L P O C M S B O C P M"),
        _strip("C M 7 O P C S M O L C P M B O W W M P O C L M S O C P B M C"),
        _strip("M C O 7 P M C L O S M C B P O M W W L M O C P S M B C O M P"),
        _strip("O C M P 7 C O S M L P C O B M W W O P M C S L O M B C P O M"),
        _strip("C O M 7 P C M S O L C M P B O C W M O P C S L M O B C P M O"),
    ),
    paylines=(
        (1, 1, 1, 1, 1),
        (0, 0, 0, 0, 0),
        (2, 2, 2, 2, 2),
        (0, 1, 2, 1, 0),
        (2, 1, 0, 1, 2),
        (0, 0, 1, 2, 2),
        (2, 2, 1, 0, 0),
        (1, 0, 0, 0, 1),
        (1, 2, 2, 2, 1),
        (1, 0, 1, 2, 1),
    ),
    paytable={
        "7": {3: 50, 4: 200, 5: 1000},
        "B": {3: 25, 4: 100, 5: 400},
        "L": {3: 20, 4: 60, 5: 200},
        "P": {3: 12, 4: 40, 5: 120},
        "O": {3: 8, 4: 25, 5: 80},
        "M": {3: 6, 4: 15, 5: 50},
        "C": {3: 5, 4: 10, 5: 30},
    },
    scatter_pays={3: 2, 4: 10, 5: 50},
    wild_pays_as="7",
)
