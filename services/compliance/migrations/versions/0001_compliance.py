"""Compliance state: players' profiles and gates, limits and their change history,
exclusions, counted usage, and the verdict log.

Revision ID: 0001
Revises:
"""

from alembic import op

from services.runtime.outbox import outbox_ddl
from services.runtime.verdict_log import verdict_log_ddl

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade(*, role: str, schema: str) -> None:
    op.execute(f"""
        CREATE TABLE {schema}.players (
            player_id            text        PRIMARY KEY,
            given_name           text        NOT NULL,
            family_name          text        NOT NULL,
            birth_date           date        NOT NULL,
            email                text        NOT NULL,
            postcode             text        NOT NULL DEFAULT '',
            country              char(2)     NOT NULL,
            name_verified        boolean     NOT NULL DEFAULT false,
            address_verified     boolean     NOT NULL DEFAULT false,
            birth_date_verified  boolean     NOT NULL DEFAULT false,
            cdd_required         boolean     NOT NULL DEFAULT false,
            excluded_until       timestamptz,
            excluded_indefinitely boolean    NOT NULL DEFAULT false,
            exclusion_kind       text,
            create_time          timestamptz NOT NULL DEFAULT now(),
            update_time          timestamptz NOT NULL DEFAULT now()
        )
    """)
    # Finding excluded look-alikes at registration: same name + birth date + postcode, or email.
    op.execute(f"""
        CREATE INDEX players_identity ON {schema}.players
            (lower(given_name || ' ' || family_name), birth_date,
             lower(replace(postcode, ' ', '')))
    """)
    op.execute(f"CREATE INDEX players_email ON {schema}.players (lower(email))")
    op.execute(f"""
        CREATE TABLE {schema}.limits (
            player_id            text        NOT NULL,
            kind                 text        NOT NULL CHECK (kind IN ('DEPOSIT','LOSS','STAKE')),
            period               text        NOT NULL CHECK (period IN ('DAY','WEEK','MONTH')),
            amount_minor         bigint      CHECK (amount_minor > 0),
            pending_minor        bigint      CHECK (pending_minor > 0),
            pending_requested_at timestamptz,
            update_time          timestamptz NOT NULL,
            PRIMARY KEY (player_id, kind, period)
        )
    """)
    op.execute(f"""
        CREATE TABLE {schema}.limit_changes (
            player_id     text        NOT NULL,
            change_id     bigint      GENERATED ALWAYS AS IDENTITY,
            kind          text        NOT NULL,
            period        text        NOT NULL,
            change        text        NOT NULL,
            amount_minor  bigint      NOT NULL,
            requested_at  timestamptz NOT NULL,
            effective_at  timestamptz,
            PRIMARY KEY (player_id, change_id)
        )
    """)
    op.execute(f"""
        CREATE TABLE {schema}.exclusions (
            player_id     text        NOT NULL,
            exclusion_id  bigint      GENERATED ALWAYS AS IDENTITY,
            kind          text        NOT NULL CHECK (kind IN ('TIMEOUT','SELF_EXCLUSION')),
            requested_at  timestamptz NOT NULL,
            until         timestamptz,
            PRIMARY KEY (player_id, exclusion_id)
        )
    """)
    op.execute(f"""
        CREATE TABLE {schema}.usage (
            player_id     text        NOT NULL,
            request_id    text        NOT NULL,
            action        text        NOT NULL CHECK (action IN ('DEPOSIT','BET','WIN')),
            amount_minor  bigint      NOT NULL CHECK (amount_minor >= 0),
            at            timestamptz NOT NULL,
            PRIMARY KEY (player_id, request_id)
        )
    """)
    op.execute(f"CREATE INDEX usage_recent ON {schema}.usage (player_id, at)")
    for statement in [*verdict_log_ddl(schema, role), *outbox_ddl(schema, role)]:
        op.execute(statement)
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON {schema}.players, {schema}.limits TO {role}")
    op.execute(
        f"GRANT SELECT, INSERT ON {schema}.limit_changes, {schema}.exclusions, {schema}.usage"
        f" TO {role}"
    )


def downgrade(*, role: str, schema: str) -> None:
    raise RuntimeError("compliance records are never downgraded; restore from backup instead")
