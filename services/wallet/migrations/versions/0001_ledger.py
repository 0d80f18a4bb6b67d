"""The wallet ledger: accounts, transactions (the idempotency journal), entries (the
append-only double-entry ledger) and the outbox.

Every table's key starts with player_id so the schema distributes by player (Citus
co-location) without redesign.

Revision ID: 0001
Revises:
"""

from alembic import op

from services.runtime.outbox import outbox_ddl

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade(*, role: str, schema: str) -> None:
    op.execute(f"""
        CREATE TABLE {schema}.accounts (
            player_id     text        NOT NULL,
            currency      char(3)     NOT NULL,
            -- A cache of the ledger, kept in the same transaction as each entry and proven
            -- against it by Reconcile. The checks are the last line of defence.
            posted        bigint      NOT NULL DEFAULT 0 CHECK (posted >= 0),
            reserved      bigint      NOT NULL DEFAULT 0 CHECK (reserved >= 0),
            last_sequence bigint      NOT NULL DEFAULT 0,
            last_hash     bytea       NOT NULL DEFAULT decode(repeat('00', 32), 'hex'),
            create_time   timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (player_id, currency),
            CHECK (reserved <= posted)
        )
    """)
    op.execute(f"""
        CREATE TABLE {schema}.transactions (
            player_id        text        NOT NULL,
            request_id       text        NOT NULL,
            kind             text        NOT NULL,
            currency         char(3)     NOT NULL,
            amount           bigint      NOT NULL,
            reserved_delta   bigint      NOT NULL DEFAULT 0,
            fingerprint      bytea       NOT NULL,
            outcome          text        NOT NULL CHECK (outcome IN ('applied', 'refused')),
            refusal_reason   text,
            refusal_metadata jsonb,
            nothing_to_undo  boolean     NOT NULL DEFAULT false,
            sequence         bigint,
            posted_after     bigint      NOT NULL,
            reserved_after   bigint      NOT NULL,
            sequence_after   bigint      NOT NULL,
            round_id         text,
            game_id          text,
            provider         text,
            bet_request_id   text,
            withdrawal_id    text,
            payment_id       text,
            reason           text,
            operator_id      text,
            caller           text        NOT NULL,
            create_time      timestamptz NOT NULL DEFAULT now(),
            -- The idempotency key: checked by the database in the posting's transaction.
            PRIMARY KEY (player_id, request_id)
        )
    """)
    op.execute(f"""
        CREATE INDEX transactions_history
            ON {schema}.transactions (player_id, create_time DESC, request_id DESC)
    """)
    op.execute(f"""
        CREATE INDEX transactions_bet_ref
            ON {schema}.transactions (player_id, bet_request_id) WHERE bet_request_id IS NOT NULL
    """)
    op.execute(f"""
        CREATE INDEX transactions_round_wins
            ON {schema}.transactions (player_id, round_id) WHERE kind = 'WIN'
    """)
    # The database itself refuses a second refund of one bet and a second finalisation of
    # one withdrawal, whatever the code above it does.
    op.execute(f"""
        CREATE UNIQUE INDEX transactions_one_rollback_per_bet
            ON {schema}.transactions (player_id, bet_request_id)
            WHERE kind = 'BET_ROLLBACK' AND outcome = 'applied'
    """)
    op.execute(f"""
        CREATE UNIQUE INDEX transactions_one_reservation_per_withdrawal
            ON {schema}.transactions (player_id, withdrawal_id)
            WHERE kind = 'WITHDRAWAL_RESERVE' AND outcome = 'applied'
    """)
    op.execute(f"""
        CREATE UNIQUE INDEX transactions_one_final_per_withdrawal
            ON {schema}.transactions (player_id, withdrawal_id)
            WHERE kind IN ('WITHDRAWAL_COMMIT', 'WITHDRAWAL_RELEASE') AND outcome = 'applied'
    """)
    op.execute(f"""
        CREATE TABLE {schema}.entries (
            player_id      text        NOT NULL,
            currency       char(3)     NOT NULL,
            sequence       bigint      NOT NULL CHECK (sequence > 0),
            -- 0: the player's account; 1: the house account on the other side.
            leg            smallint    NOT NULL CHECK (leg IN (0, 1)),
            account        text        NOT NULL,
            request_id     text        NOT NULL,
            kind           text        NOT NULL,
            amount         bigint      NOT NULL,
            reserved_delta bigint      NOT NULL DEFAULT 0,
            -- Player leg only: the balances after this entry and the hash chain.
            balance_after  bigint,
            reserved_after bigint,
            prev_hash      bytea,
            hash           bytea,
            create_time    timestamptz NOT NULL,
            PRIMARY KEY (player_id, currency, sequence, leg),
            CHECK (leg = 1 OR (balance_after IS NOT NULL AND reserved_after IS NOT NULL
                               AND prev_hash IS NOT NULL AND hash IS NOT NULL))
        )
    """)
    op.execute(f"""
        CREATE FUNCTION {schema}.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '%.% is append-only', TG_TABLE_SCHEMA, TG_TABLE_NAME
                USING ERRCODE = 'insufficient_privilege';
        END $$
    """)
    for table in ("entries", "transactions"):
        op.execute(f"""
            CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {schema}.{table}
                FOR EACH ROW EXECUTE FUNCTION {schema}.refuse_change()
        """)
        op.execute(f"""
            CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {schema}.{table}
                FOR EACH STATEMENT EXECUTE FUNCTION {schema}.refuse_change()
        """)
    for statement in outbox_ddl(schema, role):
        op.execute(statement)
    # Append-only by grant as well as by trigger: no UPDATE or DELETE on the ledger.
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON {schema}.accounts TO {role}")
    op.execute(f"GRANT SELECT, INSERT ON {schema}.transactions, {schema}.entries TO {role}")


def downgrade(*, role: str, schema: str) -> None:
    raise RuntimeError("the ledger is never downgraded; restore from backup instead")
