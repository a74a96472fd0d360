"""Thin typed client for the reward-model server: `from reward_client import RewardClient`."""

from ._aio import AsyncRewardClient
from ._errors import (
    CancelledError,
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    RewardError,
    UnauthenticatedError,
    UnavailableError,
)
from ._sync import RewardClient
from ._types import BestOfN, Chat, ModelInfo, RankResult, RepositoryModel, ScoreResult, VersionStatus

__all__ = [
    "AsyncRewardClient",
    "BestOfN",
    "CancelledError",
    "Chat",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "InternalError",
    "InvalidArgumentError",
    "ModelInfo",
    "NotFoundError",
    "PermissionDeniedError",
    "RankResult",
    "RepositoryModel",
    "ResourceExhaustedError",
    "RewardClient",
    "RewardError",
    "ScoreResult",
    "UnauthenticatedError",
    "UnavailableError",
    "VersionStatus",
]
