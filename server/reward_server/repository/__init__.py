"""Triton-style model repository: layout, config.pbtxt, version policy, loading, control and lookup."""

from .config import ModelConfig, parse_model_config
from .loader import LoadedVersion
from .manager import CONTROL_MODES, ModelRepository
from .poller import RepositoryPoller

__all__ = ["CONTROL_MODES", "LoadedVersion", "ModelConfig", "ModelRepository", "RepositoryPoller", "parse_model_config"]
