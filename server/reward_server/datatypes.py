"""Frozen dataclasses passed between the layers: the fronts decode into these, the core answers with these."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class Conversation:
    messages: tuple[Message, ...]


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class TokenIds:
    ids: tuple[int, ...]


ScoreInput = Union[Conversation, Text, TokenIds]


@dataclass(frozen=True)
class ScoreRequest:
    model: str
    version: str
    inputs: tuple[ScoreInput, ...]


@dataclass(frozen=True)
class Candidates:
    """N responses to one shared prompt."""

    prompt: tuple[Message, ...]
    responses: tuple[str, ...]


@dataclass(frozen=True)
class RankRequest:
    model: str
    version: str
    items: Candidates | tuple[Conversation, ...]


@dataclass(frozen=True)
class Encoded:
    """One input after formatting, tokenization and truncation: what the batcher queues."""

    ids: tuple[int, ...]
    num_truncated: int


@dataclass(frozen=True)
class ScoreResult:
    score: float
    num_tokens: int
    num_truncated_tokens: int


@dataclass(frozen=True)
class ScoreResponse:
    model: str
    version: int
    results: tuple[ScoreResult, ...]


@dataclass(frozen=True)
class RankResponse:
    model: str
    version: int
    results: tuple[ScoreResult, ...]
    rank: tuple[int, ...]
    order: tuple[int, ...]


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: str  # ModelState name: LOADING, READY, UNAVAILABLE, UNLOADING
    reason: str
    forward: str = ""  # the ForwardPlan serving a loaded version (backends/plan.py), empty otherwise


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    versions: tuple[VersionStatus, ...]
    backend: str
    max_sequence_length: int
    prompt_format: str
    max_batch_size: int
    dtype: str
    device: str


@dataclass(frozen=True)
class RepositoryModel:
    """One model of the repository index: on disk, known to the server, or both."""

    name: str
    versions: tuple[VersionStatus, ...]
    state: str  # READY when a version is ready, else UNAVAILABLE / LOADING / UNLOADING
    reason: str
