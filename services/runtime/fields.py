"""Request fields checked the same way by every RPC surface: required text within a length,
and the idempotency key of a mutating request."""

from __future__ import annotations

from services.runtime.errors import IdempotencyKeyRequired, InvalidArgument


def text_field(field: str, value: str, *, required: bool = True, limit: int = 200) -> str:
    if required and not value.strip():
        raise InvalidArgument(field, f"{field} is required")
    if len(value) > limit:
        raise InvalidArgument(field, f"{field} is longer than {limit} characters")
    if "\x00" in value:
        # PostgreSQL text cannot hold NUL: refused here, not as the database's error.
        raise InvalidArgument(field, f"{field} contains a NUL character")
    return value


def request_id_field(value: str, field: str = "request_id", limit: int = 200) -> str:
    """The idempotency key of a mutating request: required (IDEMPOTENCY_KEY_REQUIRED)."""
    if not value.strip():
        raise IdempotencyKeyRequired(field)
    return text_field(field, value, limit=limit)
