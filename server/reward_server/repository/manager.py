"""The model repository at run time: which (model, version) exists, in what state; load, unload, lookup.

Model control modes, as Triton names them:
- "none": every model (each version its policy selects) loads at start; nothing changes afterwards.
- "explicit": models load and unload by request (LoadModel / UnloadModel, `--load-model` at start).
- "poll": like "none" at start, then `poll()` (every N seconds) loads new version folders, unloads
  removed ones and reloads a model whose config.pbtxt changed.

Hot swap: a new version (or a version reloaded under a changed config) is loaded and warmed up while
the old one keeps serving; it is then swapped in at once; the old one leaves the routing table, the
requests holding it (acquire) finish on it, and only then is it closed and its memory freed.

Readiness (Triton's rule, one for every front and the `reward.ready` health name): a model becomes
*required* when it first has a ready version (at the initial load, by LoadModel, or by a poll) and stops
being required when it is unloaded by request or removed from the repository; the repository is ready
while every required model has a ready version. A model that never loaded (a `--no-strict` start with a
model that failed, a model still being copied onto a shared volume) does not gate it; a required model
left with no ready version (its only version replaced by one that fails) does.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from reward_server.datatypes import ModelMetadata, RepositoryModel, VersionStatus
from reward_server.errors import (
    ConfigError,
    FailedPrecondition,
    InvalidArgument,
    ModelFolderError,
    NotFound,
    Unavailable,
)
from reward_server.folder_files import CONFIG_PBTXT_LIMIT, check_version_folder, read_file
from reward_server.repository.config import CONFIG_FILENAME, ModelConfig, parse_model_config
from reward_server.repository.layout import MODEL_NAME, ModelFolder, inside, scan_models, version_folders
from reward_server.repository.loader import LoadedVersion, load_version
from reward_server.settings import ModelControlMode, TextEnum

if TYPE_CHECKING:
    from reward_server.metrics import ServerMetrics

log = logging.getLogger(__name__)


class ModelState(TextEnum):
    """A version's (and a model's) state, by the names the API reports."""

    LOADING = "LOADING"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"
    UNLOADING = "UNLOADING"


LOADING, READY, UNAVAILABLE, UNLOADING = (
    ModelState.LOADING,
    ModelState.READY,
    ModelState.UNAVAILABLE,
    ModelState.UNLOADING,
)
CONTROL_MODES = tuple(mode.value for mode in ModelControlMode)

# How long an unload waits for the requests holding a version before closing it anyway
# (those still queued then get UNAVAILABLE).
RETIRE_TIMEOUT_S = 120.0
UNLOADED = "unloaded"  # the reason of a model unloaded by request (UnloadModel)
# What a bad model folder makes load_version raise; anything else is logged with its traceback (a bug).
EXPECTED_LOAD_ERRORS = (ModelFolderError, OSError, ValueError, RuntimeError)


VersionPrint = tuple[tuple[str, int, int], ...]
Fingerprint = tuple[str, tuple[tuple[str, VersionPrint], ...]]


@dataclass
class _VersionSlot:
    state: str
    reason: str = ""
    loaded: LoadedVersion | None = None
    config: ModelConfig | None = None  # the config it was loaded (or tried) under
    # its folder's files when it was tried: a failed one is retried when they change
    fingerprint: VersionPrint = ()

    def failed_as_before(self, config: ModelConfig, fingerprint: VersionPrint) -> bool:
        """True when this is a failed load of the same files under the same config (poll mode skips it)."""
        return (
            self.state == UNAVAILABLE
            and self.loaded is None
            and self.config == config
            and self.fingerprint == fingerprint
        )


@dataclass
class _ModelEntry:
    name: str
    config: ModelConfig | None
    reason: str = ""  # why the whole model is unavailable (bad config.pbtxt, unloaded)
    versions: dict[int, _VersionSlot] = field(default_factory=dict)


def parse_version(version: str) -> int | None:
    """'' -> None (newest ready); '3' -> 3; anything else is INVALID_ARGUMENT."""
    if version == "":
        return None
    if not version.isascii() or not version.isdigit() or int(version) < 1:
        raise InvalidArgument(f"version must be a positive integer or empty, got {version!r}")
    return int(version)


_PRINT_ENTRIES = 10_000  # a fingerprint looks at this many files of a version folder at most


def _version_print(path: Path) -> VersionPrint:
    """(name, size, mtime) of every file and folder under a version folder, symlinks followed: a file
    rewritten in place, or a symlink pointed elsewhere, changes it. Opens nothing."""
    found = []
    for dirpath, dirnames, filenames in os.walk(path):
        for name in sorted(dirnames + filenames):
            entry = os.path.join(dirpath, name)
            try:
                info = os.stat(entry)
            except OSError:  # a dangling symlink: its own entry still counts
                info = os.lstat(entry)
            found.append((os.path.relpath(entry, path), info.st_size, info.st_mtime_ns))
            if len(found) >= _PRINT_ENTRIES:
                return tuple(sorted(found))
    return tuple(sorted(found))


def _config_print(folder: ModelFolder, root: Path) -> str:
    try:
        return hashlib.sha256(
            read_file(folder.config_path, root, CONFIG_PBTXT_LIMIT, "config.pbtxt", ConfigError)
        ).hexdigest()
    except (ModelFolderError, OSError):  # unreadable: its stat still tells when it changes
        try:
            info = os.stat(folder.config_path)
        except OSError:
            return ""
        return f"unreadable {info.st_mode} {info.st_size} {info.st_mtime_ns}"


def _fingerprint(folder: ModelFolder, root: Path) -> Fingerprint:
    """What poll mode watches: the config.pbtxt bytes and every version folder's files (a folder still
    being copied changes again, and a failed version is retried once its files change)."""
    versions = []
    for entry in folder.path.iterdir():
        if entry.name.isdigit() and entry.is_dir():
            versions.append((entry.name, _version_print(entry)))
    return _config_print(folder, root), tuple(sorted(versions))


_ABSOLUTE_PATH = re.compile(r"(?<![\w.~-])/[^\s'\":,()\[\]]+(?:/[^\s'\":,()\[\]]*)+")
_PUBLIC_LIMIT = 500


def public_reason(error: BaseException, root: Path) -> str:
    """One line a client may read: the model folder's own words with the repository's absolute path
    cut off (`rm/1/tokenizer.json`), any other absolute path hidden, and no file content (a
    ModelFolderError's `public` text). The full message goes to the server's log."""
    text = error.public if isinstance(error, ModelFolderError) else f"{type(error).__name__}: {error}"
    prefixes = {str(root.resolve()), str(root.absolute())} | ({str(root)} if str(root) != "." else set())
    for prefix in sorted(prefixes, key=len, reverse=True):
        text = text.replace(prefix + os.sep, "")
    text = _ABSOLUTE_PATH.sub("<path>", " ".join(text.split()))
    return text if len(text) <= _PUBLIC_LIMIT else text[: _PUBLIC_LIMIT - 3] + "..."


class ModelRepository:
    def __init__(
        self,
        root: Path,
        *,
        mode: str = "none",
        metrics: ServerMetrics | None = None,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        if mode not in CONTROL_MODES:
            raise ValueError(f"model control mode must be one of {', '.join(CONTROL_MODES)}, got {mode!r}")
        self.root = Path(root)
        self.mode = mode
        self._metrics = metrics
        self._on_change = on_change or (lambda name: None)  # through _changed, which updates the metrics
        self._models: dict[str, _ModelEntry] = {}
        self._seen: dict[str, Fingerprint] = {}  # poll mode: fingerprints last acted on
        self._required: set[str] = set()  # the models readiness waits for (see the module's docstring)
        self._lock = threading.Lock()  # guards the routing table (_models and the slots' states)
        self._control = threading.Lock()  # one load / unload / poll at a time

    # --- control -------------------------------------------------------------------------------

    def load_all(self) -> list[str]:
        """Load every model of the repository; one line per failure (the others keep serving)."""
        failures = []
        for folder in scan_models(self.root):
            failures += self._load(folder, retry_failed=True)
        return failures

    def load_model(self, name: str) -> list[str]:
        """LoadModel: load, or reload with a fresh read of config.pbtxt and the version folders (versions
        that failed before are tried again)."""
        if self.mode != "explicit":
            raise FailedPrecondition(
                f"loading a model by request needs --model-control-mode explicit (mode is {self.mode!r})"
            )
        return self._load(self._folder(name), retry_failed=True)

    def unload_model(self, name: str) -> None:
        """UnloadModel: every version leaves the routing table; requests in flight finish first."""
        if self.mode != "explicit":
            raise FailedPrecondition(
                f"unloading a model by request needs --model-control-mode explicit (mode is {self.mode!r})"
            )
        self._check_name(name)
        with self._control:
            entry = self._models.get(name)
            if entry is None:
                raise NotFound(f"model {name!r} is not loaded")
            self._stop_requiring(name)  # first: its versions going UNLOADING must not read as not ready
            self._unload(entry, UNLOADED)

    def poll(self) -> list[str]:
        """Poll mode: act on every model folder that appeared, changed or disappeared since the last poll.
        A version that failed is tried again only once its files (or the config) change."""
        failures = []
        present = {folder.name: folder for folder in scan_models(self.root)}
        for name, folder in present.items():
            try:
                changed = self._seen.get(name) != _fingerprint(folder, self.root)
            except OSError as e:  # the folder went away while it was read: the next poll sees it gone
                log.warning("model=%s: cannot read its folder: %s", name, e)
                continue
            if changed:
                failures += self._load(folder, retry_failed=False)
        for name in [n for n in self._models if n not in present]:
            with self._control:
                entry = self._models.get(name)
                if entry is not None:
                    self._stop_requiring(name)
                    self._unload(entry, "removed from the repository")
                    with self._lock:
                        del self._models[name]
                    self._seen.pop(name, None)
            self._changed(name)
        return failures

    def _changed(self, name: str) -> None:
        """Every change of a model's entry ends here: the metrics follow the table, then `on_change` (the
        server's health names) is told."""
        if self._metrics is not None:
            with self._lock:  # under the table's lock: two changes reach the metrics in their order
                entry = self._models.get(name)
                if entry is not None:
                    self._metrics.model_known(name)
                states = {v: str(s.state) for v, s in entry.versions.items()} if entry is not None else {}
                self._metrics.version_states(name, states)
        self._on_change(name)

    def _load_failed(self, name: str) -> None:
        if self._metrics is not None:
            self._metrics.load_failed(name)

    def _stop_requiring(self, name: str) -> None:
        with self._lock:
            self._required.discard(name)

    def _check_name(self, name: str) -> None:
        if not MODEL_NAME.match(name):
            raise InvalidArgument(
                f"invalid model name {name!r}: letters, digits, '.', '_' and '-' only, "
                f"starting with a letter or digit"
            )

    def _folder(self, name: str) -> ModelFolder:
        """The repository folder of a model named in a request: never a path that leaves the repository."""
        self._check_name(name)
        path = self.root / name
        if not inside(self.root, path):
            raise InvalidArgument(f"model {name!r} resolves outside the model repository")
        if not (path / CONFIG_FILENAME).is_file():
            raise NotFound(f"model {name!r} is not in the repository (no {name}/{CONFIG_FILENAME})")
        return ModelFolder(name, path)

    def _load(self, folder: ModelFolder, *, retry_failed: bool) -> list[str]:
        with self._control:
            try:
                return self._load_locked(folder, retry_failed)
            except Exception as e:  # a bug, not a bad folder: still, no version may stay LOADING
                log.exception("model=%s: load failed unexpectedly", folder.name)
                return [f"{folder.name}: {self._abandon_loading(folder.name, e)}"]
            finally:
                self._changed(folder.name)

    def _abandon_loading(self, name: str, error: Exception) -> str:
        reason = public_reason(error, self.root)
        with self._lock:
            entry = self._models.get(name)
            for slot in entry.versions.values() if entry is not None else ():
                if slot.state == LOADING:
                    slot.state, slot.reason = UNAVAILABLE, reason
                    self._load_failed(name)
        return reason

    def _load_locked(self, folder: ModelFolder, retry_failed: bool) -> list[str]:
        """Read the model's config and versions, load what the version policy wants out of the versions
        that load, swap the result in at once, then close the versions it no longer serves."""
        name = folder.name
        self._seen[name] = _fingerprint(folder, self.root)
        old = self._models.get(name)
        try:
            config, on_disk = self._read_model(folder)
        except ConfigError as e:
            return [self._refuse_config(name, old, e)]
        old_slots = dict(old.versions) if old is not None and old.config is not None else {}
        if old is None or old.config is None:
            with self._lock:
                self._models[name] = _ModelEntry(name, config)
        slots, failures = self._choose_versions(config, on_disk, old_slots, retry_failed)
        with self._lock:  # the swap: one step for every request that looks the model up
            self._models[name] = _ModelEntry(name, config, versions=dict(sorted(slots.items())))
            if any(slot.state == READY for slot in slots.values()):
                self._required.add(name)
        self._changed(name)
        self._retire_unused(old_slots, slots)
        return failures

    def _read_model(self, folder: ModelFolder) -> tuple[ModelConfig, dict[int, Path]]:
        config = parse_model_config(folder.config_path, folder.name, self.root)
        on_disk = version_folders(folder, self.root)
        if not config.version_policy.select(list(on_disk)):
            raise ConfigError(
                f"{folder.path}: no version folder matches the version_policy "
                f"(found: {sorted(on_disk) or 'none'})"
            )
        return config, on_disk

    def _refuse_config(self, name: str, old: _ModelEntry | None, error: ConfigError) -> str:
        """A config.pbtxt (or layout) that does not validate: the versions loaded under the previous one
        keep serving; a model with none is unavailable with the reason."""
        reason = public_reason(error, self.root)
        if old is not None and any(s.state == READY for s in old.versions.values()):
            log.error("model=%s reload refused, the loaded versions keep serving: %s", name, error)
        else:
            log.error("model=%s is unavailable: %s", name, error)
            with self._lock:
                self._models[name] = _ModelEntry(name, None, reason)
        return f"{name}: {reason}"

    def _choose_versions(
        self,
        config: ModelConfig,
        on_disk: dict[int, Path],
        old_slots: dict[int, _VersionSlot],
        retry_failed: bool,
    ) -> tuple[dict[int, _VersionSlot], list[str]]:
        """The version policy applied to the versions that load: newest first, each candidate kept (READY
        under the same config), loaded, or failed, until the policy has as many as it wants. A failed
        version stays in the table with its reason; an older one that loads serves in its place."""
        slots: dict[int, _VersionSlot] = {}
        failures = []
        wanted = config.version_policy.wanted(list(on_disk))
        for version in config.version_policy.candidates(list(on_disk)):
            if sum(slot.state == READY for slot in slots.values()) >= wanted:
                break
            slot, failure = self._version_slot(
                config, version, on_disk[version], old_slots.get(version), retry_failed
            )
            slots[version] = slot
            if failure:
                failures.append(failure)
        return slots, failures

    def _version_slot(
        self, config: ModelConfig, version: int, path: Path, previous: _VersionSlot | None, retry_failed: bool
    ) -> tuple[_VersionSlot, str]:
        """The slot of one candidate version, and a failure line ("" when it serves or was not retried)."""
        name = config.name
        fingerprint = _version_print(path)
        if previous is not None and previous.state == READY and previous.config == config:
            return previous, ""
        if previous is not None and not retry_failed and previous.failed_as_before(config, fingerprint):
            return previous, ""
        serving = previous if previous is not None and previous.state == READY else None
        if serving is None:  # a version being reloaded keeps serving from its old slot meanwhile
            self._show_loading(name, version)
        try:
            check_version_folder(path, self.root)
            loaded = load_version(config, version, path, self._metrics)
        except Exception as e:  # whatever load_version raises fails this version only
            reason = public_reason(e, self.root)
            self._load_failed(name)
            log.error(
                "model=%s version=%d failed to load: %s",
                name,
                version,
                e,
                exc_info=not isinstance(e, EXPECTED_LOAD_ERRORS),
            )
            if serving is not None:
                log.error("model=%s version=%d: the loaded one keeps serving", name, version)
                return (
                    serving,
                    f"{name} version {version}: {reason} (the loaded version {version} keeps serving)",
                )
            return _VersionSlot(
                UNAVAILABLE, reason, config=config, fingerprint=fingerprint
            ), f"{name} version {version}: {reason}"
        return _VersionSlot(READY, loaded=loaded, config=config, fingerprint=fingerprint), ""

    def _show_loading(self, name: str, version: int) -> None:
        with self._lock:
            entry = self._models.get(name)
            if entry is not None:
                entry.versions[version] = _VersionSlot(LOADING)
        self._changed(name)

    def _retire_unused(self, old_slots: dict[int, _VersionSlot], slots: dict[int, _VersionSlot]) -> None:
        live = {id(s.loaded) for s in slots.values() if s.loaded is not None}
        for version, slot in old_slots.items():
            if slot.loaded is not None and id(slot.loaded) not in live:
                self._retire(
                    slot.loaded,
                    "replaced" if version in slots else "no longer selected by the version policy",
                )

    def _unload(self, entry: _ModelEntry, reason: str) -> None:
        with self._lock:
            retiring = [(v, s) for v, s in entry.versions.items() if s.loaded is not None]
            for _, slot in retiring:
                slot.state = UNLOADING
        self._changed(entry.name)
        for _, slot in retiring:
            loaded, slot.loaded = slot.loaded, None
            assert loaded is not None
            self._retire(loaded, reason)
            with self._lock:
                slot.state, slot.reason = UNAVAILABLE, reason
        entry.reason = reason
        self._changed(entry.name)

    def _retire(self, loaded: LoadedVersion, reason: str) -> None:
        """Close a version no request can newly reach, once the requests holding it have finished."""
        if not loaded.wait_idle(RETIRE_TIMEOUT_S):
            log.warning(
                "model=%s version=%d: requests still running after %.0f s; unloading anyway",
                loaded.name,
                loaded.version,
                RETIRE_TIMEOUT_S,
            )
        loaded.close()
        if self._metrics is not None and self._routable(loaded.name, loaded.version) is None:
            self._metrics.forget(loaded.name, loaded.version)
        log.info("unloaded model=%s version=%d reason=%r", loaded.name, loaded.version, reason)

    # --- lookup --------------------------------------------------------------------------------

    def _routable(self, model: str, version: int) -> LoadedVersion | None:
        entry = self._models.get(model)
        slot = entry.versions.get(version) if entry is not None else None
        return slot.loaded if slot is not None and slot.state == READY else None

    def resolve(self, model: str, version: str) -> LoadedVersion:
        """The loaded version a request should run on:
        NOT_FOUND, UNAVAILABLE or INVALID_ARGUMENT otherwise."""
        with self._lock:
            return self._resolve_locked(model, parse_version(version))

    @contextmanager
    def acquire(self, model: str, version: str) -> Iterator[LoadedVersion]:
        """`resolve`, holding the version until the block ends: an unload waits for its holders."""
        wanted = parse_version(version)
        with self._lock:  # the lease is taken in the same step as the lookup, so no unload slips between
            loaded = self._resolve_locked(model, wanted)
            loaded.lease()
        try:
            yield loaded
        finally:
            loaded.release()

    def _resolve_locked(self, model: str, wanted: int | None) -> LoadedVersion:
        entry = self._models.get(model)
        if entry is None:
            folder = self.root / model
            if MODEL_NAME.match(model) and inside(self.root, folder) and (folder / CONFIG_FILENAME).is_file():
                raise Unavailable(f"model {model!r} is in the repository but not loaded")
            raise NotFound(f"unknown model {model!r}")
        if entry.config is None:
            raise Unavailable(f"model {model!r} is unavailable: {entry.reason}")
        if wanted is None:
            ready = [v for v, slot in entry.versions.items() if slot.state == READY]
            if not ready:
                reasons = "; ".join(
                    f"version {v}: {s.state} {s.reason}".strip() for v, s in entry.versions.items()
                )
                raise Unavailable(f"model {model!r} has no ready version ({reasons or entry.reason})")
            wanted = max(ready)
        slot = entry.versions.get(wanted)
        if slot is None:
            raise NotFound(f"model {model!r} has no version {wanted} (served: {sorted(entry.versions)})")
        if slot.state != READY or slot.loaded is None:
            raise Unavailable(
                f"model {model!r} version {wanted} is {slot.state}"
                + (f": {slot.reason}" if slot.reason else "")
            )
        return slot.loaded

    def knows(self, model: str) -> bool:
        """Whether `model` is one of this server's models (loaded or not): a bounded set of names."""
        return model in self._models

    def model_ready(self, model: str) -> bool:
        """True when the model has a ready version."""
        entry = self._models.get(model)
        return entry is not None and any(s.state == READY for s in entry.versions.values())

    def ready(self) -> bool:
        """True when every required model has a ready version (the rule: the module's docstring). The
        server is ready when this holds and it is not draining (RewardCore.ready)."""
        with self._lock:
            return all(self.model_ready(name) for name in self._required)

    def metadata(self, model: str) -> ModelMetadata:
        entry = self._models.get(model)
        if entry is None:
            raise NotFound(f"unknown model {model!r}")
        return self._metadata(entry)

    def list_models(self) -> list[ModelMetadata]:
        return [self._metadata(e) for e in sorted(self._models.values(), key=lambda e: e.name)]

    def index(self, ready_only: bool = False) -> list[RepositoryModel]:
        """Every model on disk or known to the server, with its versions' states and reasons."""
        on_disk = {folder.name for folder in scan_models(self.root)}
        models = []
        for name in sorted(on_disk | set(self._models)):
            entry = self._models.get(name)
            if entry is None:
                models.append(RepositoryModel(name, (), UNAVAILABLE, "not loaded"))
                continue
            versions = self._metadata(entry).versions
            if any(v.state == READY for v in versions):
                state, reason = READY, ""
            elif any(v.state in (LOADING, UNLOADING) for v in versions):
                # VersionStatus.state is still typed str (a ModelState value).
                state, reason = next(v.state for v in versions if v.state in (LOADING, UNLOADING)), ""  # type: ignore[assignment]
            else:
                state = UNAVAILABLE
                reason = entry.reason or "; ".join(
                    f"version {v.version}: {v.reason}" for v in versions if v.reason
                )
            models.append(RepositoryModel(name, versions, state, reason))
        return [m for m in models if m.state == READY] if ready_only else models

    @staticmethod
    def _metadata(entry: _ModelEntry) -> ModelMetadata:
        versions = tuple(
            VersionStatus(v, s.state, s.reason, s.loaded.forward if s.loaded else "")
            for v, s in sorted(entry.versions.items())
        )
        if entry.config is None:
            return ModelMetadata(
                entry.name, (VersionStatus(0, UNAVAILABLE, entry.reason),), "", 0, "", 0, "", ""
            )
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
        """Server shutdown: close every version (requests were drained before)."""
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


__all__ = [
    "CONTROL_MODES",
    "ModelState",
    "LOADING",
    "READY",
    "UNAVAILABLE",
    "UNLOADING",
    "ModelRepository",
    "parse_version",
]
