"""Checks: rolled-back stakes count in usage; a version on each player's state, bumped by
every change, so a cached state is revalidated by a single number; the verdict log accepts a
batch of verdicts in one INSERT.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

from services.runtime.verdict_log import verdict_log_functions

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade(*, role: str, schema: str) -> None:
    op.execute(f"ALTER TABLE {schema}.usage DROP CONSTRAINT usage_action_check")
    op.execute(
        f"ALTER TABLE {schema}.usage ADD CONSTRAINT usage_action_check"
        " CHECK (action IN ('DEPOSIT','BET','WIN','ROLLBACK'))"
    )
    op.execute(f"ALTER TABLE {schema}.players ADD COLUMN version bigint NOT NULL DEFAULT 1")
    for statement in verdict_log_functions(schema):
        op.execute(statement)


def downgrade(*, role: str, schema: str) -> None:
    raise RuntimeError("compliance records are never downgraded; restore from backup instead")
