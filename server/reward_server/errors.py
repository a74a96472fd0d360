"""One error hierarchy for the server: each class carries the gRPC status it maps to.

The guard around every call (fronts/grpc/guard.py, fronts/http/guard.py) turns a RewardServerError into its
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


class ModelLoadFailed(RewardServerError):
    """LoadModel ran, and a version it was asked to load failed (its reason is in the message and in the
    repository index).

    FAILED_PRECONDITION, not UNAVAILABLE: clients retry UNAVAILABLE (ours does, by its service config),
    and a load fails the same way every time until someone changes the model folder, so a retry only
    repeats a full model load. gRPC's own guidance fits: FAILED_PRECONDITION is for "do not retry until
    the system state has been explicitly fixed". Not INTERNAL either: the server is working as it
    should; what it was given is unservable."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ModelFolderError(Exception):
    """Something in a model folder is unservable. `str(error)` is for the server's log (absolute paths,
    the parser's own words); `public` is what a client may read: no file content, and the manager strips
    the repository's absolute path from it before it leaves the server."""

    def __init__(self, message: str, *, public: str | None = None) -> None:
        super().__init__(message)
        self.public = message if public is None else public


class ConfigError(ModelFolderError):
    """A model repository or config.pbtxt is invalid. Raised at load time, never on a request."""


class LoadError(ModelFolderError):
    """A model version could not be loaded."""


class ImportRefused(Exception):
    """A checkpoint cannot be imported (unknown family, unmappable keys, unsafe or corrupt files).
    Nothing is written to the repository when this is raised."""


class ExportRefused(Exception):
    """A model version cannot be exported; nothing is written to the repository."""
