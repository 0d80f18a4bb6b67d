"""Usage retention: counted usage older than any limit period (and the CDD and
affordability windows) is deleted by the service's pruner, through a function that never
deletes a row younger than 35 days whatever it is asked, so no limit can under-count (expand
only: an index and a function).

Revision ID: 0006
Revises: 0005
"""

from alembic import op

from services.runtime.retention import prune_function_ddl

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade(*, role: str, schema: str) -> None:
    op.execute(f"CREATE INDEX usage_at ON {schema}.usage (at)")
    for statement in prune_function_ddl(
        schema,
        "prune_usage",
        "usage",
        key="player_id, request_id",
        done="at < now() - greatest(keep, interval '35 days')",
        order_by="at",
        role=role,
    ):
        op.execute(statement)
