"""A compliance decision as a verdict for the log: every verdict of this service carries the
rules' version and the version of the configuration it was decided under."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

from services.compliance import rules
from services.runtime import verdict_log


def verdict(
    *,
    player_id: str | None,
    action: rules.Action,
    decision: str,
    reasons: Sequence[rules.Reason],
    inputs: dict[str, Any],
    config_version: str,
    caller: str,
    now: dt.datetime,
) -> verdict_log.Verdict:
    """`decision` is ALLOW, DENY or RECORDED; `inputs` are what the decision used (dates
    and times become ISO 8601 strings)."""
    return verdict_log.Verdict(
        verdict_id=uuid.uuid4(),
        player_id=player_id,
        action=action.value,
        decision=decision,
        reasons=[{"reason": r.reason, "metadata": dict(r.metadata)} for r in reasons],
        inputs=verdict_log.json_safe(inputs),
        rule_version=rules.RULE_VERSION,
        config_version=config_version,
        caller=caller,
        create_time=now,
    )
