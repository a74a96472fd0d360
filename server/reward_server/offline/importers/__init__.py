"""Importers: an original reward-model checkpoint -> the canonical layout, one module per family.

`import_checkpoint` detects the family (or takes it), converts, checks every tensor against the
backbone, and writes a new version folder atomically. Nothing from the checkpoint folder is executed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType

from reward_server.errors import ImportRefused
from reward_server.offline.importers import internlm2, sequence_classification, starling, ziya
from reward_server.offline.importers.canonical import accept_under, check_canonical, write_canonical
from reward_server.offline.importers.source import SourceCheckpoint, resolve_source
from reward_server.repository.config import config_pbtxt
from reward_server.repository.writer import publish_version

log = logging.getLogger(__name__)

# Detection order: the most specific signature first.
FAMILIES: dict[str, ModuleType] = {m.NAME: m for m in (internlm2, ziya, starling, sequence_classification)}
DTYPES = ("keep", "float32", "float16", "bfloat16")


def detect_family(source: SourceCheckpoint) -> ModuleType:
    for module in FAMILIES.values():
        if module.matches(source):
            return module
    architectures = source.config.get("architectures")
    raise ImportRefused(
        f"{source.folder}: not a known reward model family (model_type "
        f"{source.config.get('model_type')!r}, architectures {architectures}); "
        f"pass --family {'|'.join(FAMILIES)}"
    )


def _cast(state: dict, dtype: str) -> dict:
    if dtype == "keep":
        return state
    import torch

    target = getattr(torch, dtype)
    return {k: v.to(target) if v.is_floating_point() else v for k, v in state.items()}


def import_checkpoint(
    source: str,
    repository: Path,
    name: str,
    *,
    family: str | None = None,
    base: Path | None = None,
    revision: str | None = None,
    dtype: str = "keep",
) -> tuple[Path, int]:
    """Import `source` (a folder or a hub id) as the next version of model `name`."""
    if family is not None and family not in FAMILIES:
        raise ImportRefused(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")
    if dtype not in DTYPES:
        raise ImportRefused(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    checkpoint = SourceCheckpoint(resolve_source(source, revision), base)
    module = FAMILIES[family] if family else detect_family(checkpoint)
    log.info("importing %s as family %s", source, module.NAME)
    canonical = module.convert(checkpoint)
    canonical.state = _cast(canonical.state, dtype)
    check_canonical(canonical)
    comment = f"Imported from {source} (family {module.NAME}) by `reward-server import`."
    return publish_version(
        repository,
        name,
        lambda folder: write_canonical(folder, canonical),
        new_model_config=config_pbtxt(name, canonical.reward, comment=comment),
        accept_existing=lambda existing: accept_under(existing, canonical),
        error=ImportRefused,
    )


__all__ = ["FAMILIES", "detect_family", "import_checkpoint"]
