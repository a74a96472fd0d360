"""The model repository at run time: which (model, version) exists, in what state, and lookup.

Model control mode "none": every model and every version its policy selects loads at start.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..datatypes import ModelMetadata, VersionStatus
from ..errors import ConfigError, InvalidArgument, LoadError, NotFound, Unavailable
from .config import ModelConfig, parse_model_config
from .layout import scan_models, version_folders
from .loader import LoadedVersion, load_version

log = logging.getLogger(__name__)

LOADING, READY, UNAVAILABLE, UNLOADING = "LOADING", "READY", "UNAVAILABLE", "UNLOADING"

VersionLoader = Callable[[ModelConfig, int, Path], LoadedVersion]


@dataclass
class _VersionSlot:
    state: str
    reason: str = ""
    loaded: LoadedVersion | None = None


@dataclass
class _ModelEntry:
    name: str
    config: ModelConfig | None
    reason: str = ""  # why the whole model is unavailable (bad config.pbtxt)
    versions: dict[int, _VersionSlot] = field(default_factory=dict)


def parse_version(version: str) -> int | None:
    """'' -> None (newest ready); '3' -> 3; anything else is INVALID_ARGUMENT."""
    if version == "":
        return None
    if not version.isascii() or not version.isdigit() or int(version) < 1:
        raise InvalidArgument(f"version must be a positive integer or empty, got {version!r}")
    return int(version)


class ModelRepository:
    def __init__(self, root: Path, loader: VersionLoader = load_version) -> None:
        self.root = Path(root)
        self._loader = loader
        self._models: dict[str, _ModelEntry] = {}
        self._lock = threading.Lock()

    def load_all(self) -> list[str]:
        """Load every model; returns one line per failure (the models that loaded keep serving)."""
        failures = []
        for folder in scan_models(self.root):
            try:
                config = parse_model_config(folder.config_path, folder.name)
                versions = version_folders(folder, self.root)
                selected = config.version_policy.select(list(versions))
                if not selected:
                    raise ConfigError(f"{folder.path}: no version folder matches the version_policy "
                                      f"(found: {sorted(versions) or 'none'})")
            except ConfigError as e:
                log.error("model %s is unavailable: %s", folder.name, e)
                failures.append(f"{folder.name}: {e}")
                with self._lock:
                    self._models[folder.name] = _ModelEntry(folder.name, None, str(e))
                continue
            entry = _ModelEntry(folder.name, config, versions={v: _VersionSlot(LOADING) for v in selected})
            with self._lock:
                self._models[folder.name] = entry
            for version in selected:
                slot = entry.versions[version]
                try:
                    slot.loaded = self._loader(config, version, versions[version])
                    slot.state = READY
                except (LoadError, ConfigError, OSError, ValueError, RuntimeError) as e:
                    slot.state, slot.reason = UNAVAILABLE, str(e)
                    log.error("model %s version %d failed to load: %s", folder.name, version, e)
                    failures.append(f"{folder.name} version {version}: {e}")
        return failures

    def resolve(self, model: str, version: str) -> LoadedVersion:
        """The loaded version a request should run on: NOT_FOUND, UNAVAILABLE or INVALID_ARGUMENT otherwise."""
        wanted = parse_version(version)
        entry = self._models.get(model)
        if entry is None:
            raise NotFound(f"unknown model {model!r}")
        if entry.config is None:
            raise Unavailable(f"model {model!r} is unavailable: {entry.reason}")
        if wanted is None:
            ready = [v for v, slot in entry.versions.items() if slot.state == READY]
            if not ready:
                reasons = "; ".join(f"version {v}: {s.state} {s.reason}".strip() for v, s in entry.versions.items())
                raise Unavailable(f"model {model!r} has no ready version ({reasons})")
            wanted = max(ready)
        slot = entry.versions.get(wanted)
        if slot is None:
            raise NotFound(f"model {model!r} has no version {wanted} (served: {sorted(entry.versions)})")
        if slot.state != READY or slot.loaded is None:
            raise Unavailable(f"model {model!r} version {wanted} is {slot.state}" + (f": {slot.reason}" if slot.reason else ""))
        return slot.loaded

    def ready(self) -> bool:
        """True when every model has at least one ready version."""
        return all(any(s.state == READY for s in e.versions.values()) for e in self._models.values())

    def metadata(self, model: str) -> ModelMetadata:
        entry = self._models.get(model)
        if entry is None:
            raise NotFound(f"unknown model {model!r}")
        return self._metadata(entry)

    def list_models(self) -> list[ModelMetadata]:
        return [self._metadata(e) for e in sorted(self._models.values(), key=lambda e: e.name)]

    @staticmethod
    def _metadata(entry: _ModelEntry) -> ModelMetadata:
        versions = tuple(VersionStatus(v, s.state, s.reason) for v, s in sorted(entry.versions.items()))
        if entry.config is None:
            return ModelMetadata(entry.name, (VersionStatus(0, UNAVAILABLE, entry.reason),), "", 0, "", 0, "", "")
        ready = [s.loaded for _, s in sorted(entry.versions.items()) if s.loaded is not None]
        newest = ready[-1] if ready else None
        return ModelMetadata(
            name=entry.name,
            versions=versions,
            backend=entry.config.backend,
            max_sequence_length=newest.encoder.max_length if newest else entry.config.max_sequence_length,
            prompt_format=entry.config.prompt_format,
            max_batch_size=entry.config.max_batch_size,
            dtype=newest.dtype if newest else entry.config.dtype,
            device=newest.device if newest else "",
        )

    def close(self) -> None:
        with self._lock:
            entries = list(self._models.values())
        for entry in entries:
            for slot in entry.versions.values():
                if slot.loaded is not None:
                    slot.state = UNLOADING
                    slot.loaded.close()
                    slot.loaded = None
                    slot.state = UNAVAILABLE
                    slot.reason = "unloaded"
