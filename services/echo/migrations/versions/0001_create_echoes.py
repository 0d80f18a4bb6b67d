"""Create echo.echoes.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade(*, role: str, schema: str) -> None:
    op.execute(f"""
        CREATE TABLE {schema}.echoes (
            sequence    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            caller      text        NOT NULL,
            request_id  text        NOT NULL,
            message     text        NOT NULL CHECK (length(message) <= 1024),
            create_time timestamptz NOT NULL DEFAULT now(),
            -- Idempotency keys are scoped to the caller that chose them.
            CONSTRAINT echoes_request_id_key UNIQUE (caller, request_id)
        )
    """)
    op.execute(f"CREATE INDEX echoes_caller_sequence ON {schema}.echoes (caller, sequence DESC)")
    # Append-only for the service: it records and reads, never rewrites.
    op.execute(f"GRANT SELECT, INSERT ON {schema}.echoes TO {role}")


def downgrade(*, role: str, schema: str) -> None:
    op.execute(f"DROP TABLE {schema}.echoes")
