"""Players and their credentials.

A row is written only after compliance allowed the registration, as 'pending'; it becomes
'active' once the compliance enrolment and the wallet account exist (a retry of the same
request_id finishes a pending one). Emails are unique case-insensitively.

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
        CREATE TABLE {schema}.players (
            player_id       text        PRIMARY KEY,
            email           text        NOT NULL,
            -- The form the uniqueness is enforced on (casefolded, trimmed).
            email_key       text        NOT NULL,
            password_hash   text        NOT NULL CHECK (password_hash LIKE '$argon2id$%'),
            given_name      text        NOT NULL,
            family_name     text        NOT NULL,
            birth_date      date        NOT NULL,
            address_line1   text        NOT NULL,
            address_line2   text        NOT NULL DEFAULT '',
            city            text        NOT NULL,
            postcode        text        NOT NULL,
            country         char(2)     NOT NULL,
            currency        char(3)     NOT NULL,
            status          text        NOT NULL CHECK (status IN ('pending', 'active')),
            -- The registration's idempotency key and the fingerprint of what it asked for.
            request_id      text        NOT NULL,
            fingerprint     bytea       NOT NULL,
            create_time     timestamptz NOT NULL DEFAULT now(),
            update_time     timestamptz NOT NULL DEFAULT now()
        )
    """)
    op.execute(f"CREATE UNIQUE INDEX players_email_key ON {schema}.players (email_key)")
    op.execute(f"CREATE UNIQUE INDEX players_request_id ON {schema}.players (request_id)")
    # No DELETE: an account is closed, never erased by the service (retention rules).
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON {schema}.players TO {role}")


def downgrade(*, role: str, schema: str) -> None:
    op.execute(f"DROP TABLE {schema}.players")
