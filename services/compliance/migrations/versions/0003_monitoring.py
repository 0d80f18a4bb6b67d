"""AML monitoring: consumed events (idempotency), the activity the rules read, alerts
(cases) with their evidence, and the play hold a rule can set.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade(*, role: str, schema: str) -> None:
    # One row per consumed event id: inserting it first in the event's transaction makes a
    # redelivery a no-op, whoever published it and however often.
    op.execute(f"""
        CREATE TABLE {schema}.processed_events (
            event_id     uuid        PRIMARY KEY,
            received_at  timestamptz NOT NULL DEFAULT now()
        )
    """)
    op.execute(f"""
        CREATE TABLE {schema}.activity (
            player_id         text        NOT NULL,
            event_id          uuid        NOT NULL,
            kind              text        NOT NULL CHECK (kind IN ('DEPOSIT',
                'WITHDRAWAL_RESERVE', 'WITHDRAWAL_COMMIT', 'WITHDRAWAL_RELEASE', 'BET', 'WIN',
                'BET_ROLLBACK', 'ADJUSTMENT')),
            -- Magnitude in the transaction's currency, and converted at the configured rate.
            amount_minor      bigint      NOT NULL CHECK (amount_minor >= 0),
            currency          char(3)     NOT NULL,
            amount_eur_minor  bigint      NOT NULL CHECK (amount_eur_minor >= 0),
            instrument        text,
            withdrawal_id     text,
            at                timestamptz NOT NULL,
            PRIMARY KEY (player_id, event_id)
        )
    """)
    op.execute(f"CREATE INDEX activity_recent ON {schema}.activity (player_id, at)")
    op.execute(f"""
        CREATE TABLE {schema}.aml_alerts (
            player_id    text        NOT NULL,
            alert_id     uuid        NOT NULL,
            rule         text        NOT NULL,
            status       text        NOT NULL CHECK (status IN ('OPEN', 'CLOSED')),
            action       text        NOT NULL CHECK (action IN ('ALERT', 'HOLD_PLAY',
                'REQUIRE_CDD')),
            evidence     jsonb       NOT NULL,
            opened_at    timestamptz NOT NULL,
            updated_at   timestamptz NOT NULL,
            closed_at    timestamptz,
            closed_by    text,
            resolution   text,
            PRIMARY KEY (player_id, alert_id),
            CHECK ((status = 'CLOSED') = (closed_at IS NOT NULL))
        )
    """)
    # At most one OPEN alert per player and rule: later findings add evidence to it.
    op.execute(f"""
        CREATE UNIQUE INDEX aml_alerts_one_open_per_rule
            ON {schema}.aml_alerts (player_id, rule) WHERE status = 'OPEN'
    """)
    # The back office's queue: newest first, optionally by status.
    op.execute(f"CREATE INDEX aml_alerts_newest ON {schema}.aml_alerts (opened_at, alert_id)")
    op.execute(f"ALTER TABLE {schema}.players ADD COLUMN play_hold boolean NOT NULL DEFAULT false")
    # Consumed events and activity are append-only; alerts gain evidence and are closed.
    op.execute(f"GRANT SELECT, INSERT ON {schema}.processed_events, {schema}.activity TO {role}")
    op.execute(f"GRANT SELECT, INSERT ON {schema}.aml_alerts TO {role}")
    op.execute(
        f"GRANT UPDATE (evidence, action, updated_at, status, closed_at, closed_by, resolution)"
        f" ON {schema}.aml_alerts TO {role}"
    )


def downgrade(*, role: str, schema: str) -> None:
    raise RuntimeError("compliance records are never downgraded; restore from backup instead")
