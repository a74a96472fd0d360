"""Triton-style model repository: layout, config.pbtxt, version policy, loading and lookup."""

from .config import ModelConfig, parse_model_config
from .manager import LoadedVersion, ModelRepository

__all__ = ["LoadedVersion", "ModelConfig", "ModelRepository", "parse_model_config"]
