"""What applies to a player: their jurisdiction's configuration (by country of residence),
its CDD threshold in its currency, and the flagged rules enabled for them, with what a
verdict records about both."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.compliance import rules
from services.compliance.flags import RuleFlags, Snapshot
from services.compliance.fx import EurConverter
from services.compliance.rules import ComplianceConfig, Jurisdiction

_DEFAULTS = Snapshot.of([])


@dataclass(frozen=True)
class PlayerPolicy:
    jurisdiction: Jurisdiction
    enabled_rules: frozenset[str]
    # {"version": the flag snapshot's, "evaluated": {rule: in force for this player}}
    flags: dict[str, Any]
    # The jurisdiction's CDD threshold (configured in EUR) in minor units of its currency.
    cdd_threshold_minor: int

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
        *,
        fx: EurConverter,
    ) -> None:
        """Raises fx.UnconvertibleCurrency when a jurisdiction's currency has no rate."""
        self.default = default
        self.jurisdictions = dict(jurisdictions)
        self.flags = flags
        # Converted once, with the rates monitoring converts with; rounded down, so a
        # threshold of EUR 2,000 is never more than EUR 2,000 in the player's currency.
        self._cdd_thresholds = {
            code: fx.from_eur_minor(config.cdd_threshold_eur_minor, config.currency)
            for code, config in [(rules.DEFAULT_JURISDICTION, default), *jurisdictions.items()]
        }

    def jurisdiction(self, country: str) -> Jurisdiction:
        return rules.jurisdiction_of(country, self.default, self.jurisdictions)

    def cdd_threshold_minor(self, jurisdiction: Jurisdiction) -> int:
        return self._cdd_thresholds[jurisdiction.code]

    def for_player(self, state: rules.PlayerState | None) -> PlayerPolicy:
        """The jurisdiction and flags for a check; an unknown player gets the default
        jurisdiction and no flagged rule (they are denied as unknown anyway)."""
        if state is None:
            default = self.jurisdiction("")
            return PlayerPolicy(default, frozenset(), {}, self.cdd_threshold_minor(default))
        # Without a RuleFlags (a tool, a benchmark) every rule runs with its default.
        snapshot = self.flags.snapshot if self.flags is not None else _DEFAULTS
        evaluated = snapshot.evaluate(rules.FLAGGED_CHECK_RULES, state.player_id, state.country)
        jurisdiction = self.jurisdiction(state.country)
        return PlayerPolicy(
            jurisdiction,
            frozenset(rule for rule, on in evaluated.items() if on),
            {"version": snapshot.version, "evaluated": evaluated},
            self.cdd_threshold_minor(jurisdiction),
        )
