"""Idempotent checks and CDD clearance: each action check's request (player, request_id)
with what it asked and the verdict it got, so a retry is answered with that verdict; and
when due diligence was last recorded, from which the CDD threshold links activity again
(expand only: a table, a nullable column and a pruning function).

Revision ID: 0007
Revises: 0006
"""

from alembic import op

from services.runtime.retention import prune_function_ddl

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade(*, role: str, schema: str) -> None:
    op.execute(f"""
        CREATE TABLE {schema}.check_requests (
            player_id     text        NOT NULL,
            request_id    text        NOT NULL,
            action        text        NOT NULL,
            amount_minor  bigint      NOT NULL CHECK (amount_minor >= 0),
            currency      text        NOT NULL,
            verdict_id    uuid        NOT NULL,
            at            timestamptz NOT NULL,
            PRIMARY KEY (player_id, request_id)
        )
    """)
    op.execute(f"CREATE INDEX check_requests_at ON {schema}.check_requests (at)")
    # Append-only for the service: a request's record never changes; the pruner removes it
    # after the usage retention (a retry months later is a new request).
    op.execute(f"GRANT SELECT, INSERT ON {schema}.check_requests TO {role}")
    for statement in prune_function_ddl(
        schema,
        "prune_check_requests",
        "check_requests",
        key="player_id, request_id",
        done="at < now() - greatest(keep, interval '35 days')",
        order_by="at",
        role=role,
    ):
        op.execute(statement)
    # null: due diligence never recorded (the threshold links the whole window).
    op.execute(f"ALTER TABLE {schema}.players ADD COLUMN cdd_cleared_at timestamptz")
