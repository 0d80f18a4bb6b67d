"""Outbox retention: published events are pruned after the relay's retention window
(expand only: an index and a function; the table and its grants are unchanged).

Revision ID: 0005
Revises: 0004
"""

from alembic import op

from services.runtime.outbox import outbox_retention_ddl

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade(*, role: str, schema: str) -> None:
    for statement in outbox_retention_ddl(schema, role):
        op.execute(statement)
