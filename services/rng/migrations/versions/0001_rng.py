"""RNG state: rounds (with their sealed seeds and versions), provably-fair server seeds,
and the audit chain of round records (the verdict-log machinery, in this schema).

Revision ID: 0001
Revises:
"""

from alembic import op

from services.runtime.verdict_log import verdict_log_ddl

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade(*, role: str, schema: str) -> None:
    op.execute(f"""
        CREATE TABLE {schema}.server_seeds (
            server_seed_id uuid        PRIMARY KEY,
            fair_key       text        NOT NULL,
            sealed_seed    bytea       NOT NULL,
            seal_key_id    text        NOT NULL,
            commitment     text        NOT NULL CHECK (commitment ~ '^[0-9a-f]{{64}}$'),
            next_nonce     bigint      NOT NULL DEFAULT 0 CHECK (next_nonce >= 0),
            create_time    timestamptz NOT NULL DEFAULT now(),
            reveal_time    timestamptz
        )
    """)
    # One active (unrevealed) server seed per fair key.
    op.execute(f"""
        CREATE UNIQUE INDEX server_seeds_active ON {schema}.server_seeds (fair_key)
            WHERE reveal_time IS NULL
    """)
    op.execute(f"""
        CREATE TABLE {schema}.rounds (
            round_id          uuid        PRIMARY KEY,
            request_id        text        NOT NULL UNIQUE,
            caller            text        NOT NULL,
            game_id           text        NOT NULL,
            game_inputs       bytea       NOT NULL,
            generator_version text        NOT NULL,
            sampling_version  text        NOT NULL,
            -- The round seed, sealed (AES-256-GCM); NULL for provably-fair rounds, which
            -- draw from their server seed.
            sealed_seed       bytea,
            seal_key_id       text,
            server_seed_id    uuid        REFERENCES {schema}.server_seeds,
            client_seed       text,
            nonce             bigint,
            state             text        NOT NULL DEFAULT 'OPEN'
                                          CHECK (state IN ('OPEN', 'CLOSED')),
            draw_count        integer     NOT NULL DEFAULT 0 CHECK (draw_count >= 0),
            stream_position   bigint      NOT NULL DEFAULT 0 CHECK (stream_position >= 0),
            open_time         timestamptz NOT NULL DEFAULT now(),
            close_time        timestamptz,
            CHECK ((sealed_seed IS NULL) = (server_seed_id IS NOT NULL))
        )
    """)
    op.execute(
        f"CREATE INDEX rounds_server_seed ON {schema}.rounds (server_seed_id)"
        " WHERE server_seed_id IS NOT NULL"
    )
    for statement in verdict_log_ddl(schema, role):
        op.execute(statement)
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON {schema}.rounds TO {role}")
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON {schema}.server_seeds TO {role}")
