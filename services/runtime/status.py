"""gRPC status with google.rpc.ErrorInfo, both ways: the one way a server aborts, and the one
way a client reads the reason back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from services.runtime.call import current_call
from services.runtime.errors import Code, DomainError

_DETAILS_KEY = "grpc-status-details-bin"


def status_code(code: Code) -> grpc.StatusCode:
    return grpc.StatusCode[code.value]


def rich_status(
    code: grpc.StatusCode,
    reason: str,
    message: str,
    metadata: Mapping[str, str] | None = None,
    domain: str | None = None,
) -> status_pb2.Status:
    if domain is None:
        call = current_call()
        domain = call.domain if call else "casino.local"
    info = error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata=dict(metadata or {}))
    detail = any_pb2.Any()
    detail.Pack(info)
    return status_pb2.Status(code=code.value[0], message=message, details=[detail])


async def abort(
    context: grpc.aio.ServicerContext,
    code: grpc.StatusCode,
    reason: str,
    message: str,
    metadata: Mapping[str, str] | None = None,
) -> NoReturn:
    """End the RPC with `code`, `message` and an ErrorInfo carrying `reason` and `metadata`."""
    status = rich_status(code, reason, message, metadata)
    await context.abort(
        code, message, trailing_metadata=((_DETAILS_KEY, status.SerializeToString()),)
    )
    raise AssertionError("unreachable: context.abort raises")


async def abort_with_error(context: grpc.aio.ServicerContext, error: DomainError) -> NoReturn:
    await abort(context, status_code(error.code), error.reason, error.message, error.metadata)


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo of a failed call, or None if the server sent none."""
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailing or ():
        if key == _DETAILS_KEY:
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    return info
    return None
