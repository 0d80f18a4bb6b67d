from __future__ import annotations

import pytest

from services.runtime.errors import Code, DomainError, InvalidArgument
from services.runtime.pagination import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    decode_page_token,
    encode_page_token,
    page_size,
)


def test_page_size_defaults_and_clamps() -> None:
    assert page_size(0) == DEFAULT_PAGE_SIZE
    assert page_size(7) == 7
    assert page_size(10_000) == MAX_PAGE_SIZE
    with pytest.raises(InvalidArgument):
        page_size(-1)


def test_token_round_trips_for_the_same_filter() -> None:
    token = encode_page_token({"player": "p1", "kind": "BET"}, ["2026-11-26T10:00:00Z", "42"])
    assert decode_page_token(token, {"kind": "BET", "player": "p1"}) == [
        "2026-11-26T10:00:00Z",
        "42",
    ]
    assert decode_page_token("", {"player": "p1"}) is None


@pytest.mark.parametrize("token", ["not-base64!!", "AAAA", "Zm9v"])
def test_corrupt_token_is_invalid_argument(token: str) -> None:
    with pytest.raises(DomainError) as refused:
        decode_page_token(token, {})
    assert refused.value.reason == "INVALID_PAGE_TOKEN"
    assert refused.value.code is Code.INVALID_ARGUMENT


def test_token_from_another_filter_is_refused() -> None:
    token = encode_page_token({"player": "p1"}, ["42"])
    with pytest.raises(DomainError, match="not issued for this request"):
        decode_page_token(token, {"player": "p2"})
