"""Failpoints: named places in the code where chaos tests make a process fail on purpose
(as etcd's gofail and TiKV's fail-rs do). Off unless the service's config file names them
under [failpoints]; production configs name none, and the check is one dict lookup.

    [failpoints]
    "wallet.after_commit" = "kill"    # SIGKILL this process when the point is reached
"""

from __future__ import annotations

import os
import signal

from services.runtime.logs import get_logger

_ACTIONS = ("kill",)
_armed: dict[str, str] = {}

log = get_logger()


def arm(points: dict[str, str]) -> None:
    unknown = {action for action in points.values() if action not in _ACTIONS}
    if unknown:
        raise ValueError(f"unknown failpoint action(s) {sorted(unknown)}; known: {_ACTIONS}")
    _armed.clear()
    _armed.update(points)
    for name, action in points.items():
        log.warning("failpoint armed", failpoint=name, action=action)


def reached(name: str) -> None:
    action = _armed.get(name)
    if action == "kill":
        log.warning("failpoint fired", failpoint=name, action=action)
        os.kill(os.getpid(), signal.SIGKILL)
