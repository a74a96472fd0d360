from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from reward_server.offline.tiny_models import TinyShape, write_tiny_checkpoint  # noqa: E402


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny random Llama reward model in the canonical layout (shared, read-only)."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", seed=0)


@pytest.fixture(scope="module")
def tiny_repo(tiny_checkpoint, tmp_path_factory) -> Path:
    """A repository holding tiny_checkpoint as model `tiny` with the default config (one per module)."""
    from helpers import add_model

    path = tmp_path_factory.mktemp("repo")
    add_model(path, "tiny", tiny_checkpoint)
    return path


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> dict:
    """A server CA with its server certificate (127.0.0.1 / localhost), a client CA with its client
    certificate, and a rogue CA with a client certificate that no server trusts (shared, read-only)."""
    from certs import CertificateAuthority

    folder = tmp_path_factory.mktemp("pki")
    server_ca, client_ca, rogue_ca = (
        CertificateAuthority(folder, n) for n in ("server-ca", "client-ca", "rogue-ca")
    )
    return {
        "server_ca": server_ca.pem,
        "client_ca": client_ca.pem,
        "rogue_ca": rogue_ca.pem,
        "server": server_ca.issue("server", server=True),
        "client": client_ca.issue("client", server=False),
        "rogue_client": rogue_ca.issue("rogue-client", server=False),
    }


@pytest.fixture(scope="session")
def seed_originals(tmp_path_factory) -> dict:
    """Each seed family in its original layout: name -> (folder, original config.json)."""
    from originals import write_internlm2, write_mistral_rm, write_starling, write_ziya

    root = tmp_path_factory.mktemp("originals")
    return {
        "internlm2": (
            root / "internlm2",
            write_internlm2(root / "internlm2", heads=6, kv_heads=2, hidden=72),
        ),
        "ziya": (root / "ziya", write_ziya(root / "ziya")),
        "starling": (root / "starling", write_starling(root / "starling")),
        "starling-transformer": (root / "st", write_starling(root / "st", prefixes=("transformer.",))),
        "starling-model": (root / "sm", write_starling(root / "sm", prefixes=("model.model.",))),
        "mistral": (root / "mistral", write_mistral_rm(root / "mistral")),
    }


@pytest.fixture(scope="session")
def seed_repository(seed_originals, tmp_path_factory) -> Path:
    """Every seed family imported into one repository, scoring in fp32. Tests must not modify it."""
    from reward_server.offline.importers import import_checkpoint

    repo = tmp_path_factory.mktemp("seed_repo")
    for name, (folder, _) in seed_originals.items():
        import_checkpoint(str(folder), repo, name)
        path = repo / name / "config.pbtxt"
        path.write_text(path.read_text().replace('dtype: "auto"', 'dtype: "float32"'))
    return repo


@pytest.fixture(scope="session")
def tiny_checkpoint_b(tmp_path_factory) -> Path:
    """Another tiny model (other seed, Mistral backbone, head bias) to tell models apart."""
    shape = TinyShape(architecture="mistral", num_hidden_layers=3)
    return write_tiny_checkpoint(
        tmp_path_factory.mktemp("tiny_b") / "ckpt", shape=shape, seed=1, head_bias=0.75
    )


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (GPU tests run on GPU hosts only)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
