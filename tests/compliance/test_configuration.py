"""What the compliance service refuses to start with, and what the dev configuration
gives: the CDD threshold is configured in EUR and needs a rate for every jurisdiction's
currency; the checkpoint interval is 0 (off) or more."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.compliance.policy import Policy
from services.compliance.rules import ComplianceConfig
from services.compliance.server import ComplianceSettings
from services.runtime.config import ConfigError, domain_config, load_config
from tests.compliance.conftest import Simulator, compliance_extra
from tests.conftest import ROOT, Launcher, Pki


def test_the_service_refuses_to_start_without_a_rate_for_its_currency(
    tmp_path: Path, pki: Pki, test_database: str, register: Simulator
) -> None:
    # The default jurisdiction keeps GBP: without a GBP rate its threshold cannot be
    # converted and its players' events would be dead-lettered, so nothing starts.
    launcher = Launcher(tmp_path, pki, [])
    with pytest.raises(RuntimeError, match="compliance exited"):
        launcher(
            "compliance", extra=compliance_extra(register, tmp_path, fx_to_eur='{ EUR = "1" }')
        )
    for process in launcher.started:
        process.terminate()
    log = "\n".join(str(line) for process in launcher.started for line in process.log_lines())
    assert "fx_to_eur has no rate for GBP" in log


def test_every_jurisdictions_currency_needs_a_rate() -> None:
    with pytest.raises(ConfigError, match=r"no rate for GBP, the currency of \[compliance.rules\]"):
        ComplianceSettings(fx_to_eur={"EUR": "1"})
    with pytest.raises(ConfigError, match=r"no rate for SEK.*jurisdictions.SE"):
        ComplianceSettings(
            fx_to_eur={"GBP": "1.17"},
            jurisdictions={"SE": ComplianceConfig(currency="SEK")},
        )
    with pytest.raises(ConfigError, match=r"fx_to_eur\.GBP"):
        ComplianceSettings(fx_to_eur={"GBP": "-1"})
    # No rate is built in (the code default names EUR only): the defaults do not start.
    with pytest.raises(ConfigError, match="no rate for GBP"):
        ComplianceSettings()
    ComplianceSettings(fx_to_eur={"GBP": "1.17"})


def test_a_negative_checkpoint_interval_is_refused() -> None:
    with pytest.raises(ConfigError, match="checkpoint_interval_seconds"):
        ComplianceSettings(fx_to_eur={"GBP": "1.17"}, checkpoint_interval_seconds=-1)
    assert ComplianceSettings(fx_to_eur={"GBP": "1.17"}).checkpoint_interval_seconds == 60
    ComplianceSettings(fx_to_eur={"GBP": "1.17"}, checkpoint_interval_seconds=0)  # off


def test_the_dev_configuration_gates_at_eur_2000_in_each_currency() -> None:
    settings = domain_config(
        load_config(ROOT / "config" / "dev" / "compliance.toml"), ComplianceSettings
    )
    policy = Policy(settings.rules, settings.jurisdictions, fx=settings.converter())
    # GBP at the dev rate 1.17: GBP 1,709.40; Malta keeps EUR 2,000.
    assert policy.cdd_threshold_minor(policy.jurisdiction("GB")) == 170_940
    assert policy.cdd_threshold_minor(policy.jurisdiction("MT")) == 200_000
    assert settings.checkpoint_interval_seconds > 0
