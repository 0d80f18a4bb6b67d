from __future__ import annotations

import urllib.parse
from pathlib import Path

import pytest

from services.runtime import dbsetup
from services.runtime.config import AmqpConfig, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


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


@pytest.mark.parametrize(
    ("section", "url"),
    [
        ("amqp", "amqp://casino:hunter2@127.0.0.1:5672/"),
        ("database", "postgresql+psycopg://casino_wallet:hunter2@127.0.0.1:5432/casino"),
        ("redis", "redis://:hunter2@127.0.0.1:6379/0"),
    ],
)
def test_a_url_carrying_a_password_is_refused_for_the_password_file(
    tmp_path: Path, section: str, url: str
) -> None:
    body = f'[service]\nname = "wallet"\n[{section}]\nurl = "{url}"\n'
    refusal = rf"{section}\.url carries a password.*in a file named by {section}\.password_file"
    with pytest.raises(ConfigError, match=refusal) as raised:
        load_config(_write(tmp_path, body))
    assert "hunter2" not in str(raised.value)
    # An empty password is a password field all the same: the URL has no place for one.
    with pytest.raises(ConfigError, match="carries a password"):
        AmqpConfig(url="amqp://casino:@127.0.0.1:5672/", password_file=tmp_path / "pw")


def test_an_amqp_url_names_its_user_and_comes_with_a_password_file(tmp_path: Path) -> None:
    # Either missing, the client would log in as RabbitMQ's default guest account.
    with pytest.raises(ConfigError, match="names no user"):
        AmqpConfig(url="amqp://127.0.0.1:5672/", password_file=tmp_path / "pw")
    with pytest.raises(ConfigError, match="password_file is required"):
        AmqpConfig(url="amqp://casino@127.0.0.1:5672/")
    config = load_config(
        _write(
            tmp_path,
            '[service]\nname = "wallet"\n[amqp]\nurl = "amqp://casino@127.0.0.1:5672/casino"\n'
            'password_file = "secrets/rabbitmq"\n',
        )
    )
    assert config.amqp.password_file == tmp_path / "secrets" / "rabbitmq"
    assert load_config(_write(tmp_path, '[service]\nname = "rng"\n')).amqp.url == ""  # no broker


def test_the_dev_configs_log_in_to_the_broker_with_the_generated_password_file() -> None:
    generated = dbsetup.broker_password_path(ROOT / ".dev" / "secrets")
    brokered = []
    for path in sorted((ROOT / "config" / "dev").glob("*.toml")):
        config = load_config(path)  # a password in a URL would be refused here
        if config.amqp.url:
            assert urllib.parse.urlsplit(config.amqp.url).username == dbsetup.BROKER_USER
            assert config.amqp.password_file is not None
            assert config.amqp.password_file.resolve() == generated, path.name
            brokered.append(config.name)
    assert {"compliance", "games", "identity", "wallet"} <= set(brokered)
