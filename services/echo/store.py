"""SQL of the echo example: idempotent insert and keyset listing of echo.echoes."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, MetaData, Table, Text, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.echo.echoes import Echo, EchoCommand
from services.runtime.errors import IdempotencyMismatch

metadata = MetaData(schema="echo")

echoes = Table(
    "echoes",
    metadata,
    Column("sequence", BigInteger, primary_key=True),
    Column("caller", Text, nullable=False),
    Column("request_id", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False),
)


def _echo(row: object) -> Echo:
    return Echo(
        sequence=row.sequence,  # type: ignore[attr-defined]
        caller=row.caller,  # type: ignore[attr-defined]
        request_id=row.request_id,  # type: ignore[attr-defined]
        message=row.message,  # type: ignore[attr-defined]
        create_time=row.create_time,  # type: ignore[attr-defined]
    )


async def record(conn: AsyncConnection, command: EchoCommand, caller: str) -> tuple[Echo, bool]:
    """Insert the echo, or return the one already recorded under (caller, request_id).

    The unique constraint decides, inside this transaction: two concurrent requests with
    the same key produce one row, and the loser reads the winner's row."""
    inserted = (
        await conn.execute(
            insert(echoes)
            .values(caller=caller, request_id=command.request_id, message=command.message)
            .on_conflict_do_nothing(constraint="echoes_request_id_key")
            .returning(*echoes.c)
        )
    ).first()
    if inserted is not None:
        return _echo(inserted), False
    existing = (
        await conn.execute(
            select(echoes).where(
                echoes.c.caller == caller, echoes.c.request_id == command.request_id
            )
        )
    ).one()
    if existing.message != command.message:
        raise IdempotencyMismatch(command.request_id)
    return _echo(existing), True


async def list_echoes(
    conn: AsyncConnection, *, caller: str | None, before_sequence: int | None, limit: int
) -> list[Echo]:
    query = select(echoes).order_by(echoes.c.sequence.desc()).limit(limit)
    if caller:
        query = query.where(echoes.c.caller == caller)
    if before_sequence is not None:
        query = query.where(echoes.c.sequence < before_sequence)
    return [_echo(row) for row in await conn.execute(query)]
