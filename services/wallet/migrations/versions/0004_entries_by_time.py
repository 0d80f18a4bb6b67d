"""Player-leg entries by creation time, so the checkpoint worker finds the accounts whose
head moved since its last checkpoint without scanning the ledger. Expand only: an index
built concurrently (no lock on postings), nothing else changes.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade(*, role: str, schema: str) -> None:
    # CONCURRENTLY cannot run in a transaction; a failed build leaves an INVALID index that
    # IF NOT EXISTS would keep, so drop it first (a no-op when there is none).
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {schema}.entries_player_legs_by_time")
        op.execute(
            f"CREATE INDEX CONCURRENTLY entries_player_legs_by_time"
            f" ON {schema}.entries (create_time) WHERE leg = 0"
        )


def downgrade(*, role: str, schema: str) -> None:
    raise RuntimeError("the ledger is never downgraded; restore from backup instead")
