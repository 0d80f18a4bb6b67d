"""The echo example's rules: what a valid echo request is, and how a record is named."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from services.runtime.errors import IdempotencyKeyRequired, InvalidArgument

MAX_MESSAGE_CHARS = 1024
MAX_DELAY_MS = 10_000
MAX_REQUEST_ID_CHARS = 128


@dataclass(frozen=True)
class EchoCommand:
    request_id: str
    message: str
    delay_ms: int = 0


@dataclass(frozen=True)
class Echo:
    sequence: int
    caller: str
    request_id: str
    message: str
    create_time: dt.datetime

    @property
    def name(self) -> str:
        return f"echoes/{self.sequence}"


def echo_command(request_id: str, message: str, delay_ms: int = 0) -> EchoCommand:
    if not request_id:
        raise IdempotencyKeyRequired("request_id")
    if len(request_id) > MAX_REQUEST_ID_CHARS:
        raise InvalidArgument("request_id", f"request_id is longer than {MAX_REQUEST_ID_CHARS}")
    if not message:
        raise InvalidArgument("message", "message is required")
    if len(message) > MAX_MESSAGE_CHARS:
        raise InvalidArgument("message", f"message is longer than {MAX_MESSAGE_CHARS} characters")
    if not 0 <= delay_ms <= MAX_DELAY_MS:
        raise InvalidArgument("delay_ms", f"delay_ms must be between 0 and {MAX_DELAY_MS}")
    return EchoCommand(request_id, message, delay_ms)
