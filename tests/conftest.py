from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from reward_server.tiny_models import TinyShape, write_tiny_checkpoint  # noqa: E402


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny random Llama reward model in the canonical layout (shared, read-only)."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", seed=0)


@pytest.fixture(scope="session")
def tiny_checkpoint_b(tmp_path_factory) -> Path:
    """Another tiny model (other seed, Mistral backbone, head bias) to tell models apart."""
    shape = TinyShape(architecture="mistral", num_hidden_layers=3)
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny_b") / "ckpt", shape=shape, seed=1, head_bias=0.75)


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (GPU tests run on GPU hosts only)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
