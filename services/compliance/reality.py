"""Reality checks (UKGC RTS 13): at the player's chosen interval the game session shows how
long they have played and where they stand since the session began. Pure: the store sums
the session's counted stakes and wins, these functions do the arithmetic and the bounds."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from services.compliance.rules import ComplianceConfig, PlayerState
from services.runtime.errors import InvalidArgument

# Game servers' clocks and ours differ a little: a session that started "now" over there may
# look a moment ahead here.
CLOCK_SKEW = dt.timedelta(seconds=5)


@dataclass(frozen=True)
class SessionPlay:
    """Counted money movements since the session started, in the jurisdiction's minor
    units: stakes less rolled-back stakes, and credited wins."""

    staked_minor: int = 0
    won_minor: int = 0

    @property
    def net_minor(self) -> int:
        """The player's position: positive when they are ahead."""
        return self.won_minor - self.staked_minor

    @classmethod
    def of(cls, totals: dict[str, int]) -> SessionPlay:
        staked = totals.get("BET", 0) - totals.get("ROLLBACK", 0)
        return cls(staked_minor=max(staked, 0), won_minor=totals.get("WIN", 0))


@dataclass(frozen=True)
class RealityCheck:
    interval_minutes: int
    session_start: dt.datetime
    time_played: dt.timedelta
    play: SessionPlay
    next_check_time: dt.datetime


def chosen_interval(minutes: int, config: ComplianceConfig) -> int:
    if not config.reality_check_min_minutes <= minutes <= config.reality_check_max_minutes:
        raise InvalidArgument(
            "interval_minutes",
            f"a reality check comes every {config.reality_check_min_minutes} to"
            f" {config.reality_check_max_minutes} minutes",
        )
    return minutes


def interval_of(state: PlayerState, config: ComplianceConfig) -> int:
    if state.reality_check_minutes is None:
        return config.reality_check_default_minutes
    return state.reality_check_minutes


def session_start(start: dt.datetime, now: dt.datetime, config: ComplianceConfig) -> dt.datetime:
    if start > now + CLOCK_SKEW:
        raise InvalidArgument("session_start_time", "the session cannot start in the future")
    if now - start > dt.timedelta(hours=config.reality_check_max_session_hours):
        raise InvalidArgument(
            "session_start_time",
            f"a session older than {config.reality_check_max_session_hours} hours has no"
            " reality check; start a new session",
        )
    return start


def next_check_time(start: dt.datetime, interval: dt.timedelta, now: dt.datetime) -> dt.datetime:
    """The first whole multiple of the interval after the session start that is still
    ahead of now (a check due exactly now has been shown: the next one follows)."""
    elapsed = max(now - start, dt.timedelta(0))
    return start + interval * (elapsed // interval + 1)


def reality_check(
    state: PlayerState,
    start: dt.datetime,
    play: SessionPlay,
    now: dt.datetime,
    config: ComplianceConfig,
) -> RealityCheck:
    minutes = interval_of(state, config)
    return RealityCheck(
        interval_minutes=minutes,
        session_start=start,
        time_played=max(now - start, dt.timedelta(0)),
        play=play,
        next_check_time=next_check_time(start, dt.timedelta(minutes=minutes), now),
    )
