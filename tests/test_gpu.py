"""GPU-only: the PyTorch backend in fp16 on CUDA against the fp32 CPU reference. Skipped without CUDA."""

from __future__ import annotations

import random

import pytest

from helpers import add_model, config_text, random_chat, serve_repo
from reference import reference_score
from reward_client import RewardClient

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_cuda_half_precision_scores_track_fp32_reference(tiny_checkpoint, tmp_path, dtype):
    config = config_text("gpu", max_batch_size=16, delay_us=5000).replace("KIND_CPU", "KIND_GPU")
    add_model(tmp_path, "gpu", tiny_checkpoint, config.replace('dtype: "float32"', f'dtype: "{dtype}"'))
    rng = random.Random(5)
    chats = [random_chat(rng, turns=2) for _ in range(16)]
    with serve_repo(tmp_path) as server, RewardClient(server.target, model="gpu") as rm:
        assert rm.model_metadata().device == "cuda:0" and rm.model_metadata().dtype == dtype
        scores = rm.get_scores(chats)
        alone = [rm.get_score(c) for c in chats]
    expected = [reference_score(tiny_checkpoint, c) for c in chats]
    bound = 2e-2 if dtype == "bfloat16" else 5e-3
    for got, single, want in zip(scores, alone, expected):
        assert abs(got - want) <= bound * max(1.0, abs(want))
        assert abs(got - single) <= bound * max(1.0, abs(want))


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_cuda_traced_forward_matches_the_plain_forward(tiny_checkpoint, dtype):
    import torch

    from reward_server.backends.pytorch import PyTorchBackend
    from reward_server.checkpoint import read_checkpoint
    from test_serving_forward import plain_forward_scores, random_batches

    if not torch.cuda.is_available():
        pytest.skip("no CUDA")
    backend = PyTorchBackend(read_checkpoint(tiny_checkpoint), "cuda:0", dtype)
    assert backend.traced and backend.packs_batches  # random_batches holds batches that pack
    bound = 1e-5 if dtype == "float32" else 1e-2
    for batch in random_batches(seed=4, count=6):
        for got, want in zip(backend.score_batch(batch), plain_forward_scores(backend, batch)):
            assert abs(got - want) <= bound * max(1.0, abs(want))
