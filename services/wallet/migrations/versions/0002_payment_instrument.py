"""Payment instrument on deposits and withdrawal reservations: an opaque fingerprint from
payments (never a card number), so monitoring can count a player's instruments. Expand
only: a nullable column, existing rows and older code unaffected.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade(*, role: str, schema: str) -> None:
    # Nullable without a default: a catalogue-only change, no table rewrite, no long lock.
    op.execute(f"ALTER TABLE {schema}.transactions ADD COLUMN payment_instrument text")


def downgrade(*, role: str, schema: str) -> None:
    raise RuntimeError("the ledger is never downgraded; restore from backup instead")
