"""The platform's error vocabulary for domain code, free of gRPC.

Domain modules raise these; the runtime turns them into a gRPC status with a
``google.rpc.ErrorInfo`` (reason, domain, metadata) at the RPC surface. The reasons are the
catalogue in proto/casino/common/v1/error_reason.proto.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping


class Code(enum.Enum):
    """The gRPC status codes a domain may choose (names match grpc.StatusCode)."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    ABORTED = "ABORTED"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    INTERNAL = "INTERNAL"


class DomainError(Exception):
    """A refusal the caller can act on: a status code, a stable reason and its details."""

    code: Code = Code.FAILED_PRECONDITION

    def __init__(
        self,
        reason: str,
        message: str,
        metadata: Mapping[str, str | int] | None = None,
        *,
        code: Code | None = None,
    ) -> None:
        super().__init__(message)
        if not reason or not reason.replace("_", "").isalnum() or reason.upper() != reason:
            raise ValueError(f"error reason must be UPPER_SNAKE, got {reason!r}")
        self.reason = reason
        self.message = message
        self.metadata = {k: str(v) for k, v in (metadata or {}).items()}
        if code is not None:
            self.code = code


class InvalidArgument(DomainError):
    code = Code.INVALID_ARGUMENT

    def __init__(self, field: str, message: str) -> None:
        super().__init__("INVALID_ARGUMENT", message, {"field": field})
        self.field = field


class IdempotencyKeyRequired(DomainError):
    code = Code.INVALID_ARGUMENT

    def __init__(self, field: str = "request_id") -> None:
        super().__init__(
            "IDEMPOTENCY_KEY_REQUIRED",
            f"{field} is required: the idempotency key of this mutating request",
            {"field": field},
        )


class NotFound(DomainError):
    code = Code.NOT_FOUND


class IdempotencyMismatch(DomainError):
    """The idempotency key was used before for a different request; nothing was applied."""

    def __init__(self, key: str) -> None:
        super().__init__(
            "IDEMPOTENCY_MISMATCH",
            "this request_id was already used for a different request",
            {"idempotency_key": key},
        )


class DependencyUnavailable(DomainError):
    code = Code.UNAVAILABLE

    def __init__(self, dependency: str) -> None:
        super().__init__(
            "DEPENDENCY_UNAVAILABLE",
            f"{dependency} is unavailable; retry with the same request_id",
            {"dependency": dependency},
        )


class TransactionConflict(DomainError):
    """The transaction lost a conflict with a concurrent one and was rolled back; nothing was
    applied and a retry under the same request_id may succeed."""

    code = Code.ABORTED

    def __init__(self) -> None:
        super().__init__(
            "TRANSACTION_CONFLICT",
            "a concurrent change conflicted with this one; nothing was applied: retry it",
            {},
        )


class Overloaded(DomainError):
    """The service's own capacity (a connection pool) is exhausted; nothing was applied."""

    code = Code.UNAVAILABLE

    def __init__(self, resource: str) -> None:
        super().__init__(
            "OVERLOADED",
            f"{resource} is exhausted; retry with the same request_id after a backoff",
            {"resource": resource},
        )
