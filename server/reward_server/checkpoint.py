"""The canonical layout of one version folder, shared by every backend:

config.json                  a transformers config of a built-in architecture (no remote code)
tokenizer.json, tokenizer_config.json          a fast tokenizer (chat template in the config)
pytorch backend:     model.safetensors (or model.safetensors.index.json + shards): backbone keys
                     `model.*`, reward head `score.weight` [1, hidden] and optionally `score.bias` [1]
onnxruntime backend: model.onnx (+ external data), the head and pooling inside the graph
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reward_server.errors import LoadError

SINGLE_FILE = "model.safetensors"
SHARD_INDEX = "model.safetensors.index.json"


@dataclass(frozen=True)
class Checkpoint:
    folder: Path
    model_config: Any  # transformers.PretrainedConfig
    tokenizer: Any  # transformers.PreTrainedTokenizerFast
    model_filename: str = ""  # config.pbtxt's default_model_filename; "" = the backend's default

    def model_file(self, default: str) -> Path:
        return _plain_file(self.folder, self.model_filename or default, "model file")


def _plain_file(folder: Path, name: str, what: str) -> Path:
    path = folder / name
    if Path(name).name != name or not path.resolve().is_relative_to(folder.resolve()):
        raise LoadError(f"{folder}: {what} {name!r} is not a file inside the version folder")
    if not path.is_file():
        raise LoadError(f"{folder}: {what} {name!r} does not exist")
    return path


def weight_files(folder: Path, default_model_filename: str = "") -> tuple[Path, ...]:
    """The safetensors files of a version folder. Pickled `.bin` weights are refused."""
    name = default_model_filename
    if not name:
        name = SINGLE_FILE if (folder / SINGLE_FILE).exists() else SHARD_INDEX
    if name.endswith((".bin", ".pt", ".pth", ".pkl")):
        raise LoadError(
            f"{folder}: {name!r} is a pickle; only safetensors are loaded "
            "(convert the checkpoint with `reward-server import`)"
        )
    if not (folder / name).exists() and any(folder.glob("*.bin")):
        raise LoadError(
            f"{folder}: no safetensors weights, only pickled .bin files; "
            "convert the checkpoint with `reward-server import`"
        )
    path = _plain_file(folder, name, "weights file")
    if not name.endswith(".index.json"):
        return (path,)
    try:
        weight_map = json.loads(path.read_text(encoding="utf-8"))["weight_map"]
    except (ValueError, KeyError, TypeError) as e:
        raise LoadError(f"{path}: not a safetensors shard index ({e})") from e
    return tuple(_plain_file(folder, shard, "shard") for shard in sorted(set(weight_map.values())))


def read_checkpoint(folder: Path, default_model_filename: str = "") -> Checkpoint:
    # Imported here so that scanning a repository does not pay for transformers.
    from transformers import AutoConfig, PreTrainedTokenizerFast

    try:
        model_config = AutoConfig.from_pretrained(folder, trust_remote_code=False, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise LoadError(f"{folder}/config.json: {e}") from e
    if not (folder / "tokenizer.json").is_file():
        raise LoadError(f"{folder}: tokenizer.json is missing (a fast tokenizer is required)")
    try:
        tokenizer = PreTrainedTokenizerFast.from_pretrained(folder, local_files_only=True)
    except Exception as e:  # the tokenizers library raises its own bare Exception for a malformed file
        reason = " ".join(str(e).split())[:300]
        raise LoadError(
            f"{folder}: cannot load the tokenizer: {type(e).__name__}: {reason}",
            public=f"{folder}: tokenizer.json or tokenizer_config.json is malformed ({type(e).__name__})",
        ) from e
    return Checkpoint(folder, model_config, tokenizer, default_model_filename)
