from __future__ import annotations

from pathlib import Path

import pytest

from services.runtime.config import ConfigError, load_config


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "svc.toml"
    path.write_text(body)
    return path


def test_minimal_file_gets_defaults_and_conventional_cert_paths(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, '[service]\nname = "wallet"\n'))
    assert config.name == "wallet"
    assert config.listen.port == 0
    assert config.shutdown.grace_seconds == 10.0
    assert config.telemetry.trace_exporter == "none"
    assert config.tls.cert_file.name == "wallet.crt"
    assert config.tls.key_file.name == "wallet.key"


def test_relative_paths_resolve_against_the_file_folder(tmp_path: Path) -> None:
    config = load_config(
        _write(tmp_path, '[service]\nname = "rng"\n[tls]\nca_file = "pki/ca.crt"\n')
    )
    assert config.tls.ca_file == tmp_path / "pki" / "ca.crt"
    assert config.tls.cert_file == tmp_path / "pki" / "rng.crt"


def test_unknown_key_is_an_error_not_a_silent_default(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"listen: unknown key\(s\) prot"):
        load_config(_write(tmp_path, '[service]\nname = "rng"\n[listen]\nprot = 5\n'))
    # [service] too: a shutdown setting put there by mistake is not quietly left at 10 s.
    with pytest.raises(ConfigError, match=r"unknown key\(s\) in \[service\]: grace_seconds"):
        load_config(_write(tmp_path, '[service]\nname = "rng"\ngrace_seconds = 1\n'))


def test_wrong_type_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"listen\.port: expected int"):
        load_config(_write(tmp_path, '[service]\nname = "rng"\n[listen]\nport = "5"\n'))


def test_service_name_is_required(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="name is required"):
        load_config(_write(tmp_path, "[listen]\nport = 5\n"))


def test_upstreams_and_domain_section(tmp_path: Path) -> None:
    config = load_config(
        _write(
            tmp_path,
            '[service]\nname = "games"\n[games]\nmax_stake = 500\n'
            '[upstreams.wallet]\ntarget = "wallet:443"\nservice = "wallet"\n',
        )
    )
    assert config.upstreams["wallet"].target == "wallet:443"
    assert config.upstreams["wallet"].timeout_seconds == 5.0
    assert config.domain == {"max_stake": 500}
