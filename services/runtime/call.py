"""What the runtime knows about the RPC being served, for code running inside it.

Set by the server wrapper before a handler runs; read by handlers (the authenticated caller),
by outgoing calls (the remaining deadline) and by logs.
"""

from __future__ import annotations

import contextvars
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class CallInfo:
    service: str  # this service's name, e.g. "wallet"
    method: str  # full gRPC method, e.g. "/casino.wallet.v1.WalletService/PostBet"
    caller: str | None  # authenticated caller identity (service name), None if unknown
    deadline: float | None  # absolute time.monotonic() of the incoming deadline

    def time_remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    @property
    def domain(self) -> str:
        """ErrorInfo.domain for errors raised by this service."""
        return f"{self.service}.casino.local"


_current: contextvars.ContextVar[CallInfo | None] = contextvars.ContextVar("call", default=None)


def current_call() -> CallInfo | None:
    return _current.get()


def enter_call(info: CallInfo) -> contextvars.Token[CallInfo | None]:
    return _current.set(info)


def leave_call(token: contextvars.Token[CallInfo | None]) -> None:
    _current.reset(token)


def authenticated_caller() -> str:
    """The caller of the RPC being served, as its certificate names it. Handlers run only
    after the runtime authorised the caller, so inside one it is always known."""
    call = _current.get()
    if call is None or call.caller is None:
        raise RuntimeError("authenticated_caller() used outside an authorised RPC")
    return call.caller
