"""One error hierarchy for the server: each class carries the gRPC status it maps to.

The guard around every call (transport/guard.py, http/guard.py) turns a RewardServerError into its
status with the message as details; any other exception becomes INTERNAL with its traceback logged once.
"""

from __future__ import annotations

import grpc


class RewardServerError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidArgument(RewardServerError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(RewardServerError):
    code = grpc.StatusCode.NOT_FOUND


class Unavailable(RewardServerError):
    code = grpc.StatusCode.UNAVAILABLE


class ResourceExhausted(RewardServerError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceeded(RewardServerError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unauthenticated(RewardServerError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(RewardServerError):
    code = grpc.StatusCode.PERMISSION_DENIED


class FailedPrecondition(RewardServerError):
    """The request is valid but not in this server's state (load/unload outside explicit mode)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class BackendFailure(RewardServerError):
    """The model failed on a batch; only that batch's requests fail."""

    code = grpc.StatusCode.INTERNAL


class ConfigError(Exception):
    """A model repository or config.pbtxt is invalid. Raised at load time, never on a request."""


class LoadError(Exception):
    """A model version could not be loaded."""


class ImportRefused(Exception):
    """A checkpoint cannot be imported (unknown family, unmappable keys, unsafe or corrupt files).
    Nothing is written to the repository when this is raised."""


class ExportRefused(Exception):
    """A model version cannot be exported; nothing is written to the repository."""
