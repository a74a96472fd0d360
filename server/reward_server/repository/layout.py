"""The Triton layout on disk: <repo>/<model>/config.pbtxt and numeric version folders.

Names come from the file system here, never from a request; still, nothing that resolves outside
the repository (a symlink pointing out) is ever read.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from reward_server.errors import ConfigError
from reward_server.repository.config import CONFIG_FILENAME

log = logging.getLogger(__name__)

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class ModelFolder:
    name: str
    path: Path

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILENAME


def inside(root: Path, path: Path) -> bool:
    """True when `path`, with every symlink resolved, stays under `root`."""
    return path.resolve().is_relative_to(root.resolve())


def scan_models(root: Path) -> list[ModelFolder]:
    """Every model folder of the repository, sorted by name. Hidden folders are skipped."""
    models = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        if not MODEL_NAME.match(entry.name):
            log.warning("skipping %s: not a valid model name", entry)
            continue
        if not inside(root, entry):
            log.warning("skipping %s: it resolves outside the model repository", entry)
            continue
        models.append(ModelFolder(entry.name, entry))
    return models


def version_folders(model: ModelFolder, root: Path) -> dict[int, Path]:
    """Numeric subfolders of a model; other names are ignored, as Triton does."""
    versions: dict[int, Path] = {}
    for entry in model.path.iterdir():
        if not entry.is_dir() or not entry.name.isdigit():
            continue
        if not inside(root, entry):
            raise ConfigError(f"{entry}: version folder resolves outside the model repository")
        version = int(entry.name)
        if version < 1:
            continue
        versions[version] = entry
    return versions
