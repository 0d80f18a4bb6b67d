"""Rule flags and reality checks: the flag of each rule shipped behind one (with its
append-only change history), each player's reality-check interval, and when their
affordability was last assessed.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade(*, role: str, schema: str) -> None:
    # A rule without a row runs with its default from the registry in code
    # (services.compliance.flags.REGISTRY); the service refuses rows for rules it does not know.
    op.execute(f"""
        CREATE TABLE {schema}.rule_flags (
            rule             text        PRIMARY KEY,
            enabled          boolean     NOT NULL,
            rollout_percent  integer     NOT NULL CHECK (rollout_percent BETWEEN 0 AND 100),
            countries        text[]      NOT NULL DEFAULT '{{}}',
            version          bigint      NOT NULL DEFAULT 1,
            updated_by       text        NOT NULL,
            update_time      timestamptz NOT NULL
        )
    """)
    op.execute(f"""
        CREATE TABLE {schema}.rule_flag_changes (
            change_id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            rule             text        NOT NULL,
            enabled          boolean     NOT NULL,
            rollout_percent  integer     NOT NULL,
            countries        text[]      NOT NULL,
            version          bigint      NOT NULL,
            updated_by       text        NOT NULL,
            reason           text        NOT NULL DEFAULT '',
            change_time      timestamptz NOT NULL
        )
    """)
    op.execute(f"CREATE INDEX rule_flag_changes_rule ON {schema}.rule_flag_changes (rule, version)")
    # null: the jurisdiction's default interval.
    op.execute(
        f"ALTER TABLE {schema}.players"
        " ADD COLUMN reality_check_minutes integer CHECK (reality_check_minutes > 0),"
        " ADD COLUMN affordability_assessed_at timestamptz"
    )
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON {schema}.rule_flags TO {role}")
    # History is append-only: no UPDATE or DELETE for the service.
    op.execute(f"GRANT SELECT, INSERT ON {schema}.rule_flag_changes TO {role}")


def downgrade(*, role: str, schema: str) -> None:
    raise RuntimeError("compliance records are never downgraded; restore from backup instead")
