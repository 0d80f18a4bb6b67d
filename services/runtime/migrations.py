"""Per-service schemas, roles and Alembic migrations.

Each service owns one PostgreSQL schema (named after it) and logs in as its own role
`casino_<service>`, which is granted exactly what the service's migrations grant it: the
tables are owned by the migration role, so a service can never ALTER, DROP or disable a
trigger on its own tables, and has no USAGE at all on another service's schema.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

SERVICES_DIR = Path(__file__).resolve().parent.parent


def database_role(service: str) -> str:
    return f"casino_{service}"


def migratable_services() -> list[str]:
    return sorted(p.parent.parent.name for p in SERVICES_DIR.glob("*/migrations/env.py"))


def _quote_ident(name: str) -> str:
    if not name.replace("_", "").isalnum():
        raise ValueError(f"refusing unusual identifier {name!r}")
    return f'"{name}"'


def ensure_database(admin_url: URL, database: str, *, recreate: bool = False) -> None:
    engine = create_engine(
        admin_url.set(database="postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT"
    )
    with engine.connect() as conn:
        if recreate:
            conn.execute(text(f"DROP DATABASE IF EXISTS {_quote_ident(database)} WITH (FORCE)"))
        exists = conn.execute(
            text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": database}
        ).scalar()
        if not exists:
            conn.execute(text(f"CREATE DATABASE {_quote_ident(database)}"))
    engine.dispose()


def provision_service(admin_url: URL, service: str, password: str) -> None:
    """The service's login role and schema (idempotent)."""
    role, schema = _quote_ident(database_role(service)), _quote_ident(service)
    engine = create_engine(admin_url, poolclass=NullPool)
    with engine.begin() as conn:
        exists = conn.execute(
            text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": database_role(service)}
        ).scalar()
        if not exists:
            conn.execute(text(f"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE"))
        # Role names and passwords cannot be bound parameters in DDL; both are generated
        # by us (identifier checked above, password is URL-safe base64).
        if not password.replace("-", "").replace("_", "").isalnum():
            raise ValueError("database password must be URL-safe base64")
        conn.execute(text(f"ALTER ROLE {role} PASSWORD '{password}'"))
        conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {schema}"))
        conn.execute(text(f"REVOKE ALL ON SCHEMA {schema} FROM PUBLIC"))
        conn.execute(text(f"GRANT USAGE ON SCHEMA {schema} TO {role}"))
        database = conn.execute(text("SELECT current_database()")).scalar_one()
        conn.execute(
            text(
                f"ALTER ROLE {role} IN DATABASE {_quote_ident(database)} SET search_path = {schema}"
            )
        )
        # Services run short OLTP statements. A misestimated plan (a small table whose
        # statistics are stale, a set-returning function guessed at 100 rows) can cross
        # jit_above_cost and spend hundreds of milliseconds compiling a query that runs in
        # one: on the money path that is an outage, not an optimisation.
        conn.execute(text(f"ALTER ROLE {role} IN DATABASE {_quote_ident(database)} SET jit = off"))
    engine.dispose()


def alembic_config(admin_url: URL, service: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(SERVICES_DIR / service / "migrations"))
    cfg.attributes["url"] = admin_url
    cfg.attributes["schema"] = service
    cfg.attributes["role"] = database_role(service)
    return cfg


def upgrade(admin_url: URL, service: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(admin_url, service), revision)


def run_env() -> None:
    """Body of every service's migrations/env.py (online mode only: we always have a DB)."""
    from alembic import context

    cfg = context.config
    schema = cfg.attributes["schema"]
    engine = create_engine(cfg.attributes["url"], poolclass=NullPool)
    with engine.connect() as conn:
        context.configure(
            connection=conn,
            version_table_schema=schema,
            transactional_ddl=True,
        )
        with context.begin_transaction():
            context.run_migrations(role=cfg.attributes["role"], schema=schema)
    engine.dispose()
