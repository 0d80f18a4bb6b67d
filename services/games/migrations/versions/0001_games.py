"""Games state: the round journal (every round's steps, the idempotency record of PlayRound),
the round archive (partitioned by month of close, append-only) with its hash chain (the
verdict-log machinery, in this schema), and the outbox of round events.

Revision ID: 0001
Revises:
"""

from alembic import op

from services.runtime.outbox import outbox_ddl
from services.runtime.verdict_log import verdict_log_ddl

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade(*, role: str, schema: str) -> None:
    # One row per round from the moment it is opened. The live call and the recovery worker
    # move it forward with compare-and-set updates on `state`; `lease_until` says until when
    # the live call owns it (recovery takes only rounds whose lease has run out).
    op.execute(f"""
        CREATE TABLE {schema}.rounds (
            player_id             text        NOT NULL,
            round_id              uuid        NOT NULL,
            request_id            text        NOT NULL,
            request_hash          bytea       NOT NULL CHECK (octet_length(request_hash) = 32),
            session_id            text        NOT NULL,
            game_id               text        NOT NULL,
            math_version          text        NOT NULL,
            currency              char(3)     NOT NULL,
            country               char(2)     NOT NULL,
            bet                   jsonb       NOT NULL,
            stake_minor           bigint      NOT NULL CHECK (stake_minor > 0),
            bet_verdict_id        text        NOT NULL,
            client_seed           text,
            state                 text        NOT NULL DEFAULT 'OPEN' CHECK (state IN
                                      ('OPEN', 'DEBITED', 'DRAWN', 'COMPLETED', 'VOIDED')),
            rng_round_id          uuid,
            rng_generator         text,
            rng_sampling          text,
            fair_commitment       text,
            fair_nonce            bigint,
            bet_transaction_id    text,
            settle_transaction_id text,
            draws                 bigint[],
            outcome               jsonb,
            payout_minor          bigint      CHECK (payout_minor >= 0),
            balance_after_minor   bigint,
            void_reason           text,
            open_time             timestamptz NOT NULL DEFAULT now(),
            update_time           timestamptz NOT NULL DEFAULT now(),
            close_time            timestamptz,
            lease_until           timestamptz NOT NULL,
            recovery_attempts     integer     NOT NULL DEFAULT 0,
            PRIMARY KEY (player_id, round_id),
            UNIQUE (player_id, request_id),
            -- A drawn round knows what it owes; a settled round knows when it closed.
            CHECK (state NOT IN ('DRAWN', 'COMPLETED') OR
                   (draws IS NOT NULL AND outcome IS NOT NULL AND payout_minor IS NOT NULL)),
            CHECK ((state IN ('COMPLETED', 'VOIDED')) = (close_time IS NOT NULL))
        )
    """)
    op.execute(
        f"CREATE INDEX rounds_unfinished ON {schema}.rounds (lease_until)"
        " WHERE state NOT IN ('COMPLETED', 'VOIDED')"
    )
    op.execute(f"CREATE UNIQUE INDEX rounds_by_id ON {schema}.rounds (round_id)")
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON {schema}.rounds TO {role}")

    # The archive: a finished round's record as it will be kept (RTS 1B: at least 12 months
    # queryable; retention is years), one partition per calendar month of close_time.
    # Append-only by grant and by trigger; `record` is the whole round and `record_hash` its
    # SHA-256, which the archive chain (`verdicts`) also holds.
    op.execute(f"""
        CREATE TABLE {schema}.round_archive (
            player_id    text        NOT NULL,
            close_time   timestamptz NOT NULL,
            round_id     uuid        NOT NULL,
            game_id      text        NOT NULL,
            state        text        NOT NULL CHECK (state IN ('COMPLETED', 'VOIDED')),
            record       jsonb       NOT NULL,
            record_hash  bytea       NOT NULL CHECK (octet_length(record_hash) = 32),
            PRIMARY KEY (player_id, close_time, round_id)
        ) PARTITION BY RANGE (close_time)
    """)
    op.execute(f"""
        CREATE FUNCTION {schema}.round_archive_refuse_change() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'the round archive is append-only'
                USING ERRCODE = 'insufficient_privilege';
        END $$
    """)
    op.execute(f"""
        CREATE TRIGGER round_archive_append_only BEFORE UPDATE OR DELETE
            ON {schema}.round_archive
            FOR EACH ROW EXECUTE FUNCTION {schema}.round_archive_refuse_change()
    """)
    op.execute(f"GRANT SELECT, INSERT ON {schema}.round_archive TO {role}")
    # Partitions are created ahead of time by the service, which does not own the table: this
    # function (owned by the migration's role) creates the month's partition and nothing else.
    op.execute(f"""
        CREATE FUNCTION {schema}.ensure_archive_partition(month date) RETURNS text
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        DECLARE
            first date := date_trunc('month', month)::date;
            name  text := format('round_archive_y%sm%s',
                                 to_char(first, 'YYYY'), to_char(first, 'MM'));
        BEGIN
            IF to_regclass(format('{schema}.%I', name)) IS NULL THEN
                EXECUTE format(
                    'CREATE TABLE {schema}.%I PARTITION OF {schema}.round_archive'
                    ' FOR VALUES FROM (%L) TO (%L)',
                    name,
                    first::timestamp AT TIME ZONE 'UTC',
                    (first + interval '1 month')::timestamp AT TIME ZONE 'UTC');
            END IF;
            RETURN name;
        END $$
    """)
    op.execute(f"REVOKE ALL ON FUNCTION {schema}.ensure_archive_partition(date) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {schema}.ensure_archive_partition(date) TO {role}")

    for statement in verdict_log_ddl(schema, role):
        op.execute(statement)
    for statement in outbox_ddl(schema, role):
        op.execute(statement)
