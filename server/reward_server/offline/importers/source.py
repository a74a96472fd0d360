"""An original checkpoint folder as its authors published it: config, weight files, tokenizer files.

Weights are read as data only: safetensors directly, `.bin` pickles with `torch.load(weights_only=True)`
(a pickle holding anything but tensors is refused). Files are never executed.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from reward_server.errors import ImportRefused

log = logging.getLogger(__name__)

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# What an import downloads from the hub: data files only, never Python.
HUB_PATTERNS = ["*.json", "*.safetensors", "*.bin", "tokenizer.model", "*.jinja", "*.txt"]
INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
SINGLES = ("model.safetensors", "pytorch_model.bin")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ImportRefused(f"{path}: not readable JSON ({e})") from e
    if not isinstance(data, dict):
        raise ImportRefused(f"{path}: expected a JSON object")
    return data


@dataclass
class SourceCheckpoint:
    folder: Path
    # Where config.json and tokenizer files are looked up when the checkpoint lacks them
    # (Starling ships weights only; its tokenizer and config are Llama-2-7b-chat's).
    base: Path | None = None

    def find(self, name: str) -> Path | None:
        for folder in (self.folder, self.base):
            if folder is not None and (folder / name).is_file():
                return folder / name
        return None

    @cached_property
    def config(self) -> dict[str, Any]:
        path = self.find("config.json")
        if path is None:
            raise ImportRefused(
                f"{self.folder}: config.json is missing (pass --base FOLDER with the base model's config)"
            )
        return _read_json(path)

    def json_file(self, name: str) -> dict[str, Any]:
        path = self.find(name)
        return _read_json(path) if path else {}

    @cached_property
    def weight_files(self) -> list[Path]:
        for index in INDEXES:
            path = self.folder / index
            if path.is_file():
                weight_map = _read_json(path).get("weight_map")
                if not isinstance(weight_map, dict):
                    raise ImportRefused(f"{path}: no weight_map")
                files = []
                for name in sorted(set(weight_map.values())):
                    shard = self.folder / name
                    if Path(name).name != name or not shard.is_file():
                        raise ImportRefused(f"{path}: shard {name!r} is missing")
                    files.append(shard)
                return files
        for single in SINGLES:
            if (self.folder / single).is_file():
                return [self.folder / single]
        candidates = sorted(self.folder.glob("*.safetensors")) or sorted(self.folder.glob("*.bin"))
        if len(candidates) == 1:
            return candidates
        raise ImportRefused(
            f"{self.folder}: no weights found (model.safetensors, pytorch_model.bin or a shard index)"
        )

    @cached_property
    def keys(self) -> set[str]:
        """Tensor names, without loading tensors where the format allows."""
        from safetensors import safe_open

        names: set[str] = set()
        for path in self.weight_files:
            if path.suffix == ".safetensors":
                try:
                    with safe_open(str(path), framework="pt") as f:
                        names.update(f.keys())
                except Exception as e:  # safetensors raises its own error types
                    raise ImportRefused(f"{path}: not a valid safetensors file ({e})") from e
            else:
                names.update(_load_pickle(path))
        return names

    def load_state(self) -> dict[str, Any]:
        from safetensors.torch import load_file

        state: dict[str, Any] = {}
        for path in self.weight_files:
            log.info("reading %s", path.name)
            if path.suffix == ".safetensors":
                try:
                    part = load_file(str(path))
                except Exception as e:
                    raise ImportRefused(f"{path}: not a valid safetensors file ({e})") from e
            else:
                part = _load_pickle(path)
            duplicated = state.keys() & part.keys()
            if duplicated:
                raise ImportRefused(f"{path}: tensors appear in two files: {sorted(duplicated)[:5]}")
            state.update(part)
        return state


def _load_pickle(path: Path) -> dict[str, Any]:
    import torch

    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError) as e:
        raise ImportRefused(
            f"{path}: refused: the pickle is not plain tensors (loaded with weights_only=True): "
            f"{str(e).splitlines()[0]}"
        ) from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ImportRefused(f"{path}: expected a dict of tensors")
    return state


def resolve_source(source: str, revision: str | None = None) -> Path:
    """A local folder as is; a hub id (owner/name) downloaded with huggingface_hub, data files only."""
    path = Path(source)
    if path.is_dir():
        return path
    if path.exists():
        raise ImportRefused(f"{source}: not a folder")
    if not HUB_ID.match(source):
        raise ImportRefused(f"{source}: no such folder, and not a hub id (owner/name)")
    offline_hint = (
        f"cannot download {source!r} from the Hugging Face hub: this machine is offline. "
        f"Download it where there is network (`huggingface-cli download {source}`), copy the "
        "folder here, and import the folder"
    )
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise ImportRefused(offline_hint + " (HF_HUB_OFFLINE is set)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(source, revision=revision, allow_patterns=HUB_PATTERNS))
    except (LocalEntryNotFoundError, OSError) as e:
        raise ImportRefused(f"{offline_hint} ({type(e).__name__})") from e
    except HfHubHTTPError as e:
        raise ImportRefused(f"cannot download {source!r}: {e}") from e
