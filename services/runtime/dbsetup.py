"""Database set-up for development, tests and Kubernetes migration jobs.

    python -m services.runtime.dbsetup secrets --out .dev/secrets
    python -m services.runtime.dbsetup migrate --database casino [SERVICE ...]

`secrets` writes a random password per database role, and one for the platform's RabbitMQ
user (`rabbitmq/casino`, which scripts/lib.sh gives the broker), once; files are kept.
`migrate` creates the database if needed, then for each service (default: every service
with migrations) its role, its schema and its Alembic migrations, as the admin role.
"""

from __future__ import annotations

import argparse
import os
import secrets as random_secrets
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from services.runtime import migrations
from services.runtime.identity import SERVICE_NAMES
from services.runtime.secrets import read_secret

ADMIN_ROLE = "casino_admin"
DEFAULT_ADMIN_URL = f"postgresql+psycopg://{ADMIN_ROLE}@127.0.0.1:5432/postgres"
# The user every service logs in to RabbitMQ as, in development and tests.
BROKER_USER = "casino"


def password_path(secrets_dir: Path, role: str) -> Path:
    return secrets_dir / "postgres" / role


def broker_password_path(secrets_dir: Path) -> Path:
    return secrets_dir / "rabbitmq" / BROKER_USER


def ensure_secrets(secrets_dir: Path) -> None:
    secrets_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(secrets_dir, 0o700)
    roles = [ADMIN_ROLE, *(migrations.database_role(s) for s in SERVICE_NAMES)]
    paths = [password_path(secrets_dir, role) for role in roles]
    for path in [*paths, broker_password_path(secrets_dir)]:
        if not path.exists():
            path.parent.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(random_secrets.token_urlsafe(24))


def admin_url(url: str, secrets_dir: Path) -> URL:
    return make_url(url).set(password=read_secret(password_path(secrets_dir, ADMIN_ROLE)))


def migrate(
    database: str,
    services: list[str],
    secrets_dir: Path,
    url: str = DEFAULT_ADMIN_URL,
    *,
    recreate: bool = False,
) -> None:
    admin = admin_url(url, secrets_dir)
    migrations.ensure_database(admin, database, recreate=recreate)
    admin = admin.set(database=database)
    for service in services or migrations.migratable_services():
        role = migrations.database_role(service)
        migrations.provision_service(admin, service, read_secret(password_path(secrets_dir, role)))
        migrations.upgrade(admin, service)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_secrets = sub.add_parser("secrets")
    p_secrets.add_argument("--out", type=Path, default=Path(".dev/secrets"))
    p_migrate = sub.add_parser("migrate")
    p_migrate.add_argument("--database", default="casino")
    p_migrate.add_argument("--secrets", type=Path, default=Path(".dev/secrets"))
    p_migrate.add_argument("--admin-url", default=DEFAULT_ADMIN_URL)
    p_migrate.add_argument("--recreate", action="store_true", help="drop the database first")
    p_migrate.add_argument("services", nargs="*")
    args = parser.parse_args()
    if args.command == "secrets":
        ensure_secrets(args.out)
        print(args.out)
    else:
        services = args.services or migrations.migratable_services()
        migrate(args.database, services, args.secrets, args.admin_url, recreate=args.recreate)
        print(f"migrated {args.database}: {', '.join(services)}")


if __name__ == "__main__":
    main()
