"""AIP-158 paging: page sizes and opaque keyset page tokens bound to the request's filter."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence

from google.protobuf.message import DecodeError

from casino.common.v1 import pagination_pb2
from services.runtime.errors import Code, DomainError, InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument("page_size", "page_size must not be negative")
    return DEFAULT_PAGE_SIZE if requested == 0 else min(requested, MAX_PAGE_SIZE)


def _fingerprint(filters: Mapping[str, object]) -> bytes:
    canonical = json.dumps(filters, sort_keys=True, default=str).encode()
    return hashlib.sha256(canonical).digest()[:16]


def encode_page_token(filters: Mapping[str, object], after: Sequence[str]) -> str:
    cursor = pagination_pb2.PageCursor(filter_fingerprint=_fingerprint(filters), after=after)
    return base64.urlsafe_b64encode(cursor.SerializeToString()).decode().rstrip("=")


def decode_page_token(token: str, filters: Mapping[str, object]) -> list[str] | None:
    """The keyset position of `token`, None for the first page. A token made for another
    filter, or not made by us, is refused."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        cursor = pagination_pb2.PageCursor.FromString(raw)
    except (binascii.Error, ValueError, DecodeError):
        cursor = None
    if cursor is None or cursor.filter_fingerprint != _fingerprint(filters) or not cursor.after:
        raise DomainError(
            "INVALID_PAGE_TOKEN",
            "page_token was not issued for this request; start again without it",
            {"field": "page_token"},
            code=Code.INVALID_ARGUMENT,
        )
    return list(cursor.after)
