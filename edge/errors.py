"""Errors at the edge: gRPC status -> HTTP status (grpc-gateway's table), one JSON shape.

    {"code": "FAILED_PRECONDITION", "message": "...", "reason": "INSUFFICIENT_FUNDS",
     "metadata": {"currency_code": "EUR", ...}, "requestId": "..."}

`code` is the gRPC status name, `reason` the google.rpc.ErrorInfo reason (the catalogue in
proto/casino/common/v1/error_reason.proto; empty when there is none). A client switches on
`reason`. Nothing from inside the platform leaks: for INTERNAL/UNKNOWN/DATA_LOSS and for
failures without an ErrorInfo (transport errors, whose text names hosts and ports) the
message is a fixed sentence; the request id finds the detail in the edge's logs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import grpc

from services.runtime.status import error_info

# grpc-gateway runtime.HTTPStatusFromCode.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}

# FAILED_PRECONDITION reasons that are business refusals of a well-formed request (the
# player cannot do this now: 422), as opposed to a request that was wrong (400). Each is a
# state of the player's money or standing, not of the request.
BUSINESS_REFUSALS = frozenset(
    {
        "INSUFFICIENT_FUNDS",
        "LIMIT_EXCEEDED",
        "STAKE_CAP_EXCEEDED",
        "SELF_EXCLUDED",
        "PLAYER_EXCLUDED",
        "JURISDICTION_BLOCKED",
        "UNDER_AGE",
        "ALREADY_SETTLED",
        "BET_ROLLED_BACK",
        "WITHDRAWAL_ALREADY_FINALISED",
        "ACCOUNT_NOT_FOUND",
        "CURRENCY_NOT_SUPPORTED",
        "NO_PENDING_INCREASE",
    }
)

# Codes whose upstream message is never shown (it may describe internals).
_OPAQUE = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS})

_FIXED_MESSAGES = {
    grpc.StatusCode.UNAVAILABLE: "the service is unavailable; retry later",
    grpc.StatusCode.DEADLINE_EXCEEDED: "the request did not complete within its deadline",
    grpc.StatusCode.CANCELLED: "the request was cancelled",
    grpc.StatusCode.UNIMPLEMENTED: "this operation is not implemented",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "too many requests; retry later",
}
INTERNAL_MESSAGE = "internal error; quote the request id when reporting it"


class EdgeError(Exception):
    """A refusal the edge answers itself or maps from an upstream status."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata = dict(metadata or {})
        self.headers = dict(headers or {})

    def body(self, request_id: str) -> bytes:
        return json.dumps(
            {
                "code": self.code,
                "message": self.message,
                "reason": self.reason,
                "metadata": self.metadata,
                "requestId": request_id,
            },
            separators=(",", ":"),
        ).encode()


def bad_request(message: str, field: str = "", reason: str = "INVALID_ARGUMENT") -> EdgeError:
    return EdgeError(400, "INVALID_ARGUMENT", message, reason, {"field": field} if field else {})


def internal_error() -> EdgeError:
    return EdgeError(500, "INTERNAL", INTERNAL_MESSAGE, "INTERNAL_ERROR")


def http_status(code: grpc.StatusCode, reason: str) -> int:
    if code == grpc.StatusCode.FAILED_PRECONDITION and reason in BUSINESS_REFUSALS:
        return 422
    return HTTP_STATUS.get(code, 500)


def from_rpc_error(error: grpc.RpcError) -> EdgeError:
    """The HTTP answer to a failed upstream call."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    if code in _OPAQUE:
        return internal_error()
    info = error_info(error)
    if info is None:
        # A transport-level failure (or a bare status): its text is not for clients.
        message = _FIXED_MESSAGES.get(code, code.name.lower().replace("_", " "))
        reason = "DEPENDENCY_UNAVAILABLE" if code == grpc.StatusCode.UNAVAILABLE else ""
        return EdgeError(http_status(code, ""), code.name, message, reason)
    details = error.details() if hasattr(error, "details") else None
    return EdgeError(
        http_status(code, info.reason),
        code.name,
        str(details or _FIXED_MESSAGES.get(code, "")),
        info.reason,
        dict(info.metadata),
    )
