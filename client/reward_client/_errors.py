"""Typed exceptions: one class per gRPC status the server uses."""

from __future__ import annotations

import grpc


class RewardError(Exception):
    """A call to the reward server failed. `code` is the gRPC status, `details` the server's message."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, details: str, *, code: grpc.StatusCode | None = None) -> None:
        super().__init__(details)
        self.details = details
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code.name}: {self.details}"


class InvalidArgumentError(RewardError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFoundError(RewardError):
    code = grpc.StatusCode.NOT_FOUND


class UnavailableError(RewardError):
    code = grpc.StatusCode.UNAVAILABLE


class ResourceExhaustedError(RewardError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceededError(RewardError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class CancelledError(RewardError):
    code = grpc.StatusCode.CANCELLED


class UnauthenticatedError(RewardError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDeniedError(RewardError):
    code = grpc.StatusCode.PERMISSION_DENIED


class FailedPreconditionError(RewardError):
    """The server is not in a state for this call (load/unload outside model control mode explicit)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class InternalError(RewardError):
    code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[RewardError]] = {
    cls.code: cls
    for cls in (
        InvalidArgumentError,
        NotFoundError,
        UnavailableError,
        ResourceExhaustedError,
        DeadlineExceededError,
        CancelledError,
        UnauthenticatedError,
        PermissionDeniedError,
        FailedPreconditionError,
        InternalError,
    )
}


def error_from_rpc(error: grpc.RpcError, where: str = "") -> RewardError:
    """Turn a grpc.RpcError (sync or aio) into the typed exception for its status.

    `where` (e.g. which chunk of a split call failed) is put before the server's message.
    """
    code = error.code() if callable(getattr(error, "code", None)) else grpc.StatusCode.UNKNOWN
    details = (error.details() if callable(getattr(error, "details", None)) else str(error)) or ""
    cls = _BY_CODE.get(code, RewardError)
    return cls(f"{where}: {details}" if where else details, code=code)
