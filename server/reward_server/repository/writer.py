"""Publish a new model version atomically: all of it appears in the repository, or nothing.

Files are written under a hidden staging folder inside the repository (the scanner skips hidden
names), then renamed into place: `<model>/<version>` for a known model, the whole `<model>/` with its
config.pbtxt for a new one. A failure removes the staging folder. Used by `import` and `export`.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from reward_server.errors import ConfigError
from reward_server.repository.config import CONFIG_FILENAME, ModelConfig, parse_model_config
from reward_server.repository.layout import MODEL_NAME, ModelFolder, inside, version_folders

log = logging.getLogger(__name__)


def publish_version(
    repository: Path,
    name: str,
    fill: Callable[[Path], None],
    *,
    new_model_config: str,
    accept_existing: Callable[[ModelConfig], None],
    version: int | None = None,
    error: type[Exception] = RuntimeError,
) -> tuple[Path, int]:
    """`fill(folder)` writes a version's files into an empty folder. For a new model, `new_model_config`
    becomes its config.pbtxt; for a known one, `accept_existing(config)` raises if the version would not
    be servable under it. `version` defaults to the next free number. Returns (folder, version)."""
    if not MODEL_NAME.match(name):
        raise error(f"{name!r} is not a valid model name (letters, digits, '.', '_', '-')")
    repository = Path(repository)
    if not repository.is_dir():
        raise error(f"model repository {repository} is not a directory")
    model = repository / name
    if model.is_symlink() or (model.exists() and not inside(repository, model)):
        # The server would not serve it (scan_models skips a model folder that leaves the repository),
        # and following it would write outside the repository.
        raise error(
            f"{model} is a symlink; refusing to write through it (model folders are plain folders "
            "inside the repository)"
        )
    exists = model.exists()
    if exists:
        if not (model / CONFIG_FILENAME).is_file():
            raise error(f"{model} exists but has no {CONFIG_FILENAME}")
        try:
            taken = version_folders(ModelFolder(name, model), repository)
            accept_existing(parse_model_config(model / CONFIG_FILENAME, name, repository))
        except ConfigError as e:
            raise error(f"{model}: the existing model folder is invalid: {e}") from e
        version = version or max(taken, default=0) + 1
        if version in taken or (model / str(version)).exists():
            raise error(f"{model / str(version)} already exists; choose another version")
    else:
        version = version or 1
    if version < 1:
        raise error(f"version must be >= 1, got {version}")
    staging = repository / f".staging-{name}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        (staging / str(version)).mkdir()
        fill(staging / str(version))
        if exists:
            os.rename(staging / str(version), model / str(version))
        else:
            (staging / CONFIG_FILENAME).write_text(new_model_config, encoding="utf-8")
            os.rename(staging, model)
    except OSError as e:
        raise error(f"cannot write {model}: {e}") from e
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("published %s version %d", name, version)
    return model / str(version), version
