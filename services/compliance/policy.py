"""What applies to a player: their jurisdiction's configuration (by country of residence)
and the flagged rules enabled for them, with what a verdict records about both."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.compliance import rules
from services.compliance.flags import RuleFlags, Snapshot
from services.compliance.rules import ComplianceConfig, Jurisdiction

_DEFAULTS = Snapshot.of([])


@dataclass(frozen=True)
class PlayerPolicy:
    jurisdiction: Jurisdiction
    enabled_rules: frozenset[str]
    # {"version": the flag snapshot's, "evaluated": {rule: in force for this player}}
    flags: dict[str, Any]

    @property
    def config(self) -> ComplianceConfig:
        return self.jurisdiction.config

    def inputs(self) -> dict[str, Any]:
        """What a verdict records about the rules it applied."""
        return {"jurisdiction": self.jurisdiction.code, "flags": self.flags}


class Policy:
    def __init__(
        self,
        default: ComplianceConfig,
        jurisdictions: dict[str, ComplianceConfig],
        flags: RuleFlags | None = None,
    ) -> None:
        self.default = default
        self.jurisdictions = dict(jurisdictions)
        self.flags = flags

    def jurisdiction(self, country: str) -> Jurisdiction:
        return rules.jurisdiction_of(country, self.default, self.jurisdictions)

    def for_player(self, state: rules.PlayerState | None) -> PlayerPolicy:
        """The jurisdiction and flags for a check; an unknown player gets the default
        jurisdiction and no flagged rule (they are denied as unknown anyway)."""
        if state is None:
            return PlayerPolicy(self.jurisdiction(""), frozenset(), {})
        # Without a RuleFlags (a tool, a benchmark) every rule runs with its default.
        snapshot = self.flags.snapshot if self.flags is not None else _DEFAULTS
        evaluated = snapshot.evaluate(rules.FLAGGED_CHECK_RULES, state.player_id, state.country)
        return PlayerPolicy(
            self.jurisdiction(state.country),
            frozenset(rule for rule, on in evaluated.items() if on),
            {"version": snapshot.version, "evaluated": evaluated},
        )
