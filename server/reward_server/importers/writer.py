"""Write an imported model into the repository atomically: all of it appears, or nothing.

Everything is written under a hidden staging folder inside the repository (the scanner skips hidden
names), then renamed into place: `<model>/<next version>` for a known model, the whole `<model>/`
with its config.pbtxt for a new one. A failure removes the staging folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from ..checkpoint import SHARD_INDEX, SINGLE_FILE
from ..errors import ConfigError, ImportRefused
from ..repository.config import CONFIG_FILENAME, config_pbtxt, parse_model_config
from ..repository.layout import MODEL_NAME, ModelFolder, version_folders
from .canonical import Canonical

log = logging.getLogger(__name__)

SHARD_BYTES = 4 * 1024**3


def save_weights(state: dict[str, Any], folder: Path, shard_bytes: int = SHARD_BYTES) -> list[str]:
    """safetensors, sharded with an index past `shard_bytes`. Returns the file names written."""
    from safetensors.torch import save_file

    shards: list[dict[str, Any]] = [{}]
    size = 0
    for name in sorted(state):
        tensor = state[name]
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    if len(shards) == 1:
        names = [SINGLE_FILE]
    else:
        names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
        weight_map = {key: file for file, shard in zip(names, shards) for key in shard}
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
                 "weight_map": weight_map}
        (folder / SHARD_INDEX).write_text(json.dumps(index, indent=2), encoding="utf-8")
    for file, shard in zip(names, shards):
        # clone: split views (InternLM2's wqkv) share storage, which safetensors refuses
        save_file({k: v.detach().contiguous().clone() for k, v in shard.items()}, str(folder / file),
                  metadata={"format": "pt"})
    return names


def _write_version(folder: Path, canonical: Canonical) -> None:
    folder.mkdir()
    config = canonical.config
    config.architectures = None
    config.save_pretrained(folder)
    save_weights(canonical.state, folder)
    canonical.tokenizer.save_pretrained(folder)


def _check_existing_config(model: Path, canonical: Canonical) -> None:
    """A new version must be servable under the model's existing config.pbtxt."""
    try:
        existing = parse_model_config(model / CONFIG_FILENAME, model.name)
    except ConfigError as e:
        raise ImportRefused(f"{model}: the existing config.pbtxt is invalid: {e}") from e
    wanted = canonical.reward
    for field in ("prompt_format", "reward_token_id", "add_special_tokens", "head_bias"):
        have, need = getattr(existing, field), getattr(wanted, field)
        if need is not None and have != need:
            raise ImportRefused(f"{model / CONFIG_FILENAME}: field 'reward.{field}' is {have!r} but this "
                                f"{canonical.family} checkpoint needs {need!r}; import it under another --name")


def write_import(repository: Path, name: str, canonical: Canonical, comment: str) -> tuple[Path, int]:
    """Write `canonical` as the next version of model `name`; returns (version folder, version)."""
    if not MODEL_NAME.match(name):
        raise ImportRefused(f"{name!r} is not a valid model name (letters, digits, '.', '_', '-')")
    repository = Path(repository)
    if not repository.is_dir():
        raise ImportRefused(f"model repository {repository} is not a directory")
    model = repository / name
    if model.exists() and not (model / CONFIG_FILENAME).is_file():
        raise ImportRefused(f"{model} exists but has no {CONFIG_FILENAME}")
    if model.exists():
        _check_existing_config(model, canonical)
    staging = repository / f".import-{name}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        if model.exists():
            version = max(version_folders(ModelFolder(name, model), repository), default=0) + 1
            _write_version(staging / str(version), canonical)
            os.rename(staging / str(version), model / str(version))
        else:
            version = 1
            (staging / CONFIG_FILENAME).write_text(config_pbtxt(name, canonical.reward, comment=comment), encoding="utf-8")
            _write_version(staging / "1", canonical)
            os.rename(staging, model)
    except OSError as e:
        raise ImportRefused(f"cannot write {model}: {e}") from e
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("imported %s as %s version %d", canonical.family, name, version)
    return model / str(version), version
