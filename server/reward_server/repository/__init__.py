"""Triton-style model repository: layout, config.pbtxt, version policy, loading, control and lookup."""

from reward_server.repository.config import ModelConfig, parse_model_config
from reward_server.repository.loader import LoadedVersion
from reward_server.repository.manager import CONTROL_MODES, ModelRepository
from reward_server.repository.poller import RepositoryPoller

__all__ = [
    "CONTROL_MODES",
    "LoadedVersion",
    "ModelConfig",
    "ModelRepository",
    "RepositoryPoller",
    "parse_model_config",
]
