"""Usage retention: counted usage older than any limit period (and the CDD and
affordability windows) is deleted by the service's pruner, through a function that never
deletes a row younger than 35 days whatever it is asked, so no limit can under-count (expand
only: an index and a function).

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade(*, role: str, schema: str) -> None:
    op.execute(f"CREATE INDEX usage_at ON {schema}.usage (at)")
    # The schema name comes from the migration environment, never from input.
    op.execute(f"""
        CREATE FUNCTION {schema}.prune_usage(keep interval, max_rows integer)
        RETURNS integer LANGUAGE sql SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp AS $$
            WITH gone AS (
                DELETE FROM {schema}.usage WHERE (player_id, request_id) IN (
                    SELECT player_id, request_id FROM {schema}.usage
                    WHERE at < now() - greatest(keep, interval '35 days')
                    ORDER BY at LIMIT max_rows)
                RETURNING 1)
            SELECT count(*)::integer FROM gone
        $$
    """)  # noqa: S608
    op.execute(f"REVOKE ALL ON FUNCTION {schema}.prune_usage(interval, integer) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {schema}.prune_usage(interval, integer) TO {role}")
