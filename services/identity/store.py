"""SQL of the identity schema (explicit statements; transactions are opened by callers)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

_COLUMNS = (
    "player_id, email, email_key, password_hash, given_name, family_name, birth_date,"
    " address_line1, address_line2, city, postcode, country, currency, status, request_id,"
    " fingerprint, create_time"
)


@dataclass(frozen=True)
class PlayerRecord:
    player_id: str
    email: str
    email_key: str
    password_hash: str = field(repr=False)
    given_name: str
    family_name: str
    birth_date: dt.date
    address_line1: str
    address_line2: str
    city: str
    postcode: str
    country: str
    currency: str
    status: str  # pending | active
    request_id: str
    fingerprint: bytes
    create_time: dt.datetime


def _record(row: Any) -> PlayerRecord:
    values = dict(row._mapping)
    values["fingerprint"] = bytes(values["fingerprint"])
    values["country"] = values["country"].strip()
    values["currency"] = values["currency"].strip()
    return PlayerRecord(**values)


async def _one(conn: AsyncConnection, where: str, params: dict[str, Any]) -> PlayerRecord | None:
    row = (
        await conn.execute(text(f"SELECT {_COLUMNS} FROM identity.players WHERE {where}"), params)
    ).first()
    return _record(row) if row is not None else None


async def by_request_id(conn: AsyncConnection, request_id: str) -> PlayerRecord | None:
    return await _one(conn, "request_id = :r", {"r": request_id})


async def by_email_key(conn: AsyncConnection, email_key: str) -> PlayerRecord | None:
    return await _one(conn, "email_key = :e", {"e": email_key})


async def by_id(conn: AsyncConnection, player_id: str) -> PlayerRecord | None:
    return await _one(conn, "player_id = :p", {"p": player_id})


async def insert_pending(conn: AsyncConnection, player: PlayerRecord) -> bool:
    """False when the email or the request_id is already taken (nothing inserted)."""
    values = {k: v for k, v in player.__dict__.items() if k not in ("status", "create_time")}
    row = (
        await conn.execute(
            text(
                "INSERT INTO identity.players (player_id, email, email_key, password_hash,"
                " given_name, family_name, birth_date, address_line1, address_line2, city,"
                " postcode, country, currency, status, request_id, fingerprint)"
                " VALUES (:player_id, :email, :email_key, :password_hash, :given_name,"
                " :family_name, :birth_date, :address_line1, :address_line2, :city, :postcode,"
                " :country, :currency, 'pending', :request_id, :fingerprint)"
                " ON CONFLICT DO NOTHING RETURNING player_id"
            ),
            values,
        )
    ).first()
    return row is not None


async def activate(conn: AsyncConnection, player_id: str) -> None:
    await conn.execute(
        text(
            "UPDATE identity.players SET status = 'active', update_time = now()"
            " WHERE player_id = :p AND status = 'pending'"
        ),
        {"p": player_id},
    )


async def replace_password_hash(conn: AsyncConnection, player_id: str, password_hash: str) -> None:
    await conn.execute(
        text(
            "UPDATE identity.players SET password_hash = :h, update_time = now()"
            " WHERE player_id = :p"
        ),
        {"p": player_id, "h": password_hash},
    )
