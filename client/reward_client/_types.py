"""Plain result types returned by the clients."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Union

# A chat as the model cards write it: [{"role": "user", "content": "..."}, ...]
Chat = Sequence[Mapping[str, str]]
# What `score()` accepts per input: a chat, pre-formatted text, or token ids.
ScoreInputLike = Union[Chat, str, Sequence[int]]


@dataclass(frozen=True)
class ScoreResult:
    score: float
    num_tokens: int
    num_truncated_tokens: int


@dataclass(frozen=True)
class RankResult:
    scores: list[float]
    # rank[i]: rank index of candidate i, 0 = highest score.
    rank: list[int]
    # candidate indexes, best first.
    order: list[int]
    results: list[ScoreResult]
    version: str


@dataclass(frozen=True)
class BestOfN:
    index: int
    scores: list[float]


@dataclass(frozen=True)
class VersionStatus:
    version: str
    state: str
    reason: str
    forward: str = (
        ""  # which forward pass serves a ready version, e.g. "packed+traced+last-position+unmasked"
    )


@dataclass(frozen=True)
class ModelInfo:
    name: str
    versions: list[VersionStatus]
    backend: str
    max_sequence_length: int
    prompt_format: str
    max_batch_size: int
    dtype: str
    device: str


@dataclass(frozen=True)
class RepositoryModel:
    """One model of the repository index: state READY / LOADING / UNLOADING / UNAVAILABLE and why."""

    name: str
    versions: list[VersionStatus]
    state: str
    reason: str
