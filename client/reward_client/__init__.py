"""Thin typed client for the reward-model server: `from reward_client import RewardClient`."""

from ._aio import AsyncRewardClient
from ._errors import (
    CancelledError,
    DeadlineExceededError,
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
from ._types import BestOfN, Chat, ModelInfo, RankResult, ScoreResult, VersionStatus

__all__ = [
    "AsyncRewardClient",
    "BestOfN",
    "CancelledError",
    "Chat",
    "DeadlineExceededError",
    "InternalError",
    "InvalidArgumentError",
    "ModelInfo",
    "NotFoundError",
    "PermissionDeniedError",
    "RankResult",
    "ResourceExhaustedError",
    "RewardClient",
    "RewardError",
    "ScoreResult",
    "UnauthenticatedError",
    "UnavailableError",
    "VersionStatus",
]
