"""The files of a model folder, checked before anything opens them: each resolves inside the model
repository, is a regular file (a FIFO would hang the reader, /dev/zero would never end), and the small
text files are under a size cap. Readers here open nothing that failed the check.

Messages: `str(error)` names absolute paths and where a symlink leads, for the server's log; the
error's `public` text names only the file as the repository sees it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from reward_server.errors import LoadError, ModelFolderError

MiB = 1024 * 1024
CONFIG_PBTXT_LIMIT = 1 * MiB
JSON_LIMIT = 16 * MiB  # config.json, tokenizer_config.json (chat templates, added tokens), shard indexes
TOKENIZER_LIMIT = 256 * MiB  # tokenizer.json: the largest real vocabularies are tens of MiB

# Files the loaders read whole into memory, and the most each may weigh. Weights are read by mmap
# (safetensors) or by onnxruntime and have no cap.
TEXT_LIMITS = {"tokenizer.json": TOKENIZER_LIMIT}
TEXT_SUFFIXES = (".json", ".jinja", ".txt", ".model", ".pbtxt")

# A version folder is walked at most this deep and this wide (a tree built to stall the check is refused).
MAX_DEPTH = 8
MAX_ENTRIES = 10_000


def size_limit(name: str) -> int | None:
    """The cap for a file of this name, None for weights."""
    if name in TEXT_LIMITS:
        return TEXT_LIMITS[name]
    return JSON_LIMIT if name.endswith(TEXT_SUFFIXES) else None


def checked_file(
    path: Path, root: Path, limit: int | None, what: str, error: type[ModelFolderError] = LoadError
) -> Path:
    """`path` with its symlinks resolved, once it is known to be a regular file inside `root` and no
    larger than `limit` bytes. Never opens it."""
    try:
        resolved = path.resolve(strict=True)
    except FileNotFoundError as e:
        raise error(f"{path}: {what} does not exist", public=f"{path}: {what} does not exist") from e
    except (OSError, RuntimeError) as e:  # a symlink loop, a permission error on the way
        raise error(
            f"{path}: {what} cannot be resolved: {e}", public=f"{path}: {what} cannot be resolved"
        ) from e
    if not resolved.is_relative_to(root.resolve()):
        raise error(
            f"{path}: {what} resolves outside the model repository (to {resolved})",
            public=f"{path}: {what} is a symlink that leaves the model repository",
        )
    info = os.stat(resolved)
    if not stat.S_ISREG(info.st_mode):
        raise error(
            f"{path}: {what} is not a regular file (it resolves to {resolved})",
            public=f"{path}: {what} is not a regular file",
        )
    if limit is not None and info.st_size > limit:
        message = f"{path}: {what} is {info.st_size} bytes, over the {limit}-byte limit"
        raise error(message, public=message)
    return resolved


def read_file(
    path: Path, root: Path, limit: int, what: str, error: type[ModelFolderError] = LoadError
) -> bytes:
    """The bytes of a checked file, read with the cap applied again (the file may have grown)."""
    resolved = checked_file(path, root, limit, what, error)
    try:
        # O_NONBLOCK: should a FIFO have been swapped in since the check, opening it does not wait
        # for a writer.
        fd = os.open(resolved, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError as e:
        raise error(f"{path}: cannot open {what}: {e}", public=f"{path}: cannot open {what}") from e
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise error(
                f"{path}: {what} is not a regular file", public=f"{path}: {what} is not a regular file"
            )
        data = f.read(limit + 1)
    if len(data) > limit:
        message = f"{path}: {what} is over the {limit}-byte limit"
        raise error(message, public=message)
    return data


def check_version_folder(folder: Path, root: Path) -> None:
    """Every entry of a version folder, at any depth, resolves inside the repository; every file is a
    regular file, and the files read whole are under their cap. Raises LoadError naming the first that
    is not."""
    _check_tree(folder, folder, root, depth=0, seen=[0])


def _check_tree(top: Path, folder: Path, root: Path, depth: int, seen: list[int]) -> None:
    if depth > MAX_DEPTH:
        raise LoadError(f"{folder}: nested more than {MAX_DEPTH} folders deep")
    with os.scandir(folder) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            seen[0] += 1
            if seen[0] > MAX_ENTRIES:
                raise LoadError(f"{top}: more than {MAX_ENTRIES} files")
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=False) or (entry.is_symlink() and path.is_dir()):
                _check_dir(path, root)
                _check_tree(top, path, root, depth + 1, seen)
            else:
                checked_file(path, root, size_limit(entry.name), "file")


def _check_dir(path: Path, root: Path) -> None:
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError) as e:
        raise LoadError(f"{path}: cannot be resolved: {e}", public=f"{path}: cannot be resolved") from e
    if not resolved.is_relative_to(root.resolve()):
        raise LoadError(
            f"{path}: folder resolves outside the model repository (to {resolved})",
            public=f"{path}: folder is a symlink that leaves the model repository",
        )
