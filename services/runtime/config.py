"""Service configuration: one TOML file per service, every value with a default.

Unknown keys are an error (a typo must not silently fall back to a default). Relative paths
are resolved against the file's folder. Secrets are never values here, only paths to files.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class ListenConfig:
    host: str = "127.0.0.1"
    # mTLS gRPC port for callers; 0 picks a free port (announced in the start log line).
    port: int = 0
    # Plaintext grpc.health.v1 only, for Kubernetes probes (they present no client cert).
    health_port: int = 0
    # Prometheus /metrics.
    metrics_port: int = 0
    # Calls beyond this many in flight are refused at once with RESOURCE_EXHAUSTED rather
    # than queued behind a backlog nobody will wait for. 0: no cap.
    max_concurrent_rpcs: int = 1000
    # Let several processes of the service share `port` (SO_REUSEPORT; the kernel spreads
    # connections): one Python process per core on a bare host. Give each its own
    # health_port and metrics_port (0 picks free ones).
    reuse_port: bool = False


@dataclass(frozen=True)
class TLSConfig:
    ca_file: Path = Path(".dev/pki/ca.crt")
    cert_file: Path = Path("")
    key_file: Path = Path("")


def _refuse_password(section: str, url: str) -> urllib.parse.SplitResult:
    """The URL, parsed; a URL carrying a password is refused: secrets are read from
    `<section>.password_file`, never written in configuration."""
    try:
        parsed = urllib.parse.urlsplit(url)
        password = parsed.password
    except ValueError:
        # The text may hold the password: it is never repeated in an error.
        raise ConfigError(f"{section}.url: not a URL") from None
    if password is not None:
        raise ConfigError(
            f"{section}.url carries a password: remove it from the URL and put it in a file"
            f" named by {section}.password_file (secrets are never configuration values)"
        )
    return parsed


@dataclass(frozen=True)
class DatabaseConfig:
    # Empty: the service has no database.
    url: str = ""
    password_file: Path | None = None
    pool_size: int = 10
    connect_timeout_seconds: float = 3.0
    # How long a call may queue for a pooled connection before OVERLOADED. Calls also give
    # up when their own deadline passes (grpc cancels the handler), whichever is first.
    pool_timeout_seconds: float = 10.0

    def __post_init__(self) -> None:
        _refuse_password("database", self.url)


@dataclass(frozen=True)
class RedisConfig:
    # Empty: the service has no Redis.
    url: str = ""
    password_file: Path | None = None

    def __post_init__(self) -> None:
        _refuse_password("redis", self.url)


@dataclass(frozen=True)
class AmqpConfig:
    # Empty: the service neither publishes nor consumes events. The URL names the user,
    # host, port and virtual host (amqp://casino@127.0.0.1:5672/casino); the password is
    # only ever read from password_file, so a URL carrying one is refused.
    url: str = ""
    password_file: Path | None = None
    connect_timeout_seconds: float = 5.0

    def __post_init__(self) -> None:
        url = _refuse_password("amqp", self.url)
        external = urllib.parse.parse_qs(url.query).get("auth") == ["external"]
        if not self.url or external:
            return  # no broker, or a TLS client certificate instead of a password
        # Without either, the client would quietly log in with RabbitMQ's default, guest.
        if not url.username:
            raise ConfigError("amqp.url names no user (amqp://USER@HOST:PORT/VHOST)")
        if self.password_file is None:
            raise ConfigError("amqp.password_file is required with amqp.url")


@dataclass(frozen=True)
class TelemetryConfig:
    log_level: str = "info"
    # One "rpc finished" line per RPC (code, duration, caller, trace id).
    access_log: bool = True
    # none: trace ids are made and propagated, no span is recorded (the cheap default).
    # file: finished spans as JSON lines in trace_file. console: to stderr. otlp: to
    # otlp_endpoint over gRPC.
    trace_exporter: str = "none"
    trace_file: Path | None = None
    otlp_endpoint: str = ""
    # Fraction of root traces recorded when an exporter is set; callers' decisions are kept.
    trace_sample_ratio: float = 1.0
    trace_export_delay_ms: int = 1000


@dataclass(frozen=True)
class HealthConfig:
    probe_interval_seconds: float = 1.0
    probe_timeout_seconds: float = 1.0
    # A dependency that was up is reported down after this many failed probes in a row (as
    # Kubernetes' failureThreshold): under a burst a probe can wait behind a busy pool, and a
    # replica leaving rotation for that would push its load onto the others. One that never
    # answered since the start is down at once.
    probe_failure_threshold: int = 3


@dataclass(frozen=True)
class ShutdownConfig:
    # In-flight RPCs get this long after SIGTERM before they are cancelled.
    grace_seconds: float = 10.0
    # Time between reporting NOT_SERVING and refusing new calls, so load balancers and
    # Kubernetes endpoints stop routing here first. 0 in development.
    drain_seconds: float = 0.0
    # Background workers (relays, consumers, sweepers) get this long in all to end once
    # cancelled and to close: one stuck in a library call (a broker reconnecting, say) must
    # not keep the process from releasing its dependencies and exiting before the
    # orchestrator's SIGKILL.
    workers_seconds: float = 5.0


@dataclass(frozen=True)
class UpstreamConfig:
    # host:port of another service's mTLS port.
    target: str
    # The upstream's identity; its certificate must carry this service's SPIFFE ID.
    service: str
    # Default deadline for calls that arrive without one (seconds).
    timeout_seconds: float = 5.0


@dataclass(frozen=True)
class ServiceConfig:
    name: str
    listen: ListenConfig = field(default_factory=ListenConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    amqp: AmqpConfig = field(default_factory=AmqpConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    shutdown: ShutdownConfig = field(default_factory=ShutdownConfig)
    upstreams: dict[str, UpstreamConfig] = field(default_factory=dict)
    # Chaos-test failpoints (services.runtime.failpoints); empty in every real deployment.
    failpoints: dict[str, str] = field(default_factory=dict)
    # The service's own section ([<name>] in the file), parsed by the service.
    domain: dict[str, Any] = field(default_factory=dict)
    # Folder of the file, against which relative paths resolve.
    config_dir: Path = Path(".")


T = TypeVar("T")


def _convert(tp: Any, value: Any, where: str, base: Path) -> Any:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        if value is None:
            return None
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(inner, value, where, base)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table")
        return build(tp, value, where, base)  # type: ignore[arg-type]
    if origin is list:
        (it,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected an array")
        return [_convert(it, v, f"{where}[{i}]", base) for i, v in enumerate(value)]
    if origin is dict:
        _, vt = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table")
        return {k: _convert(vt, v, f"{where}.{k}", base) for k, v in value.items()}
    if tp is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a path string")
        p = Path(value)
        return p if p.is_absolute() or not value else (base / p)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is Any or (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        return value
    raise ConfigError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def build(cls: type[T], data: dict[str, Any], where: str, base: Path) -> T:
    """Build a config dataclass from a TOML table, refusing unknown keys."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    kwargs = {
        k: _convert(hints[k], v, f"{where}.{k}" if where else k, base) for k, v in data.items()
    }
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where or 'config'}: {exc}") from None


def load_config(path: str | Path) -> ServiceConfig:
    path = Path(path).resolve()
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    service = raw.pop("service", {})
    name = service.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{path}: [service] name is required")
    unknown = sorted(set(service) - {"name"})
    if unknown:
        # [service] holds the name only; a setting put here by mistake must not be ignored.
        raise ConfigError(f"{path}: unknown key(s) in [service]: {', '.join(unknown)}")
    raw["domain"] = raw.pop(name, {})
    config = build(ServiceConfig, {"name": name, **raw}, "", path.parent)
    config = dataclasses.replace(config, config_dir=path.parent)
    if not config.tls.cert_file.name:
        # Conventional dev layout: <ca folder>/<service>.crt|key
        pki = config.tls.ca_file.parent
        config = dataclasses.replace(
            config,
            tls=TLSConfig(config.tls.ca_file, pki / f"{name}.crt", pki / f"{name}.key"),
        )
    return config


def domain_config(config: ServiceConfig, cls: type[T]) -> T:
    """The service's own [<name>] section as its dataclass."""
    return build(cls, config.domain, config.name, config.config_dir)
