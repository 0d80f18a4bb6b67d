"""What a check was asked in, besides its action and amount: the request country, whether
it was a slot spin, and the calling service, so a retry under the same request_id from
another country, for another product or by another caller is a mismatch, not a replay of a
verdict given in another context (expand only: nullable columns; rows from before hold
nulls and are compared on what they have).

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade(*, role: str, schema: str) -> None:
    op.execute(
        f"ALTER TABLE {schema}.check_requests ADD COLUMN request_country text,"
        " ADD COLUMN slots boolean, ADD COLUMN caller text"
    )


def downgrade(*, role: str, schema: str) -> None:
    raise RuntimeError("compliance records are never downgraded; restore from backup instead")
