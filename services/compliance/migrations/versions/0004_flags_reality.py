"""Rule flags and reality checks.

Revision ID: 0004
Revises: 0003
"""

from alembic import op  # noqa: F401

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade(*, role: str, schema: str) -> None:
    pass


def downgrade(*, role: str, schema: str) -> None:
    raise RuntimeError("compliance records are never downgraded; restore from backup instead")
