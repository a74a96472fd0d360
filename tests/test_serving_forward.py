"""The forward that serving runs (a TorchScript trace, its 4D mask made by the server) gives the digits
of the model's plain forward, where transformers builds the mask from the 2D one, when every layer runs
at every position, and the same scores within float32 rounding with the last layer at the last position
only (the default), masked or, for batches of one length, unmasked; and the encoder gives the
tokenizer's own ids on both of its paths (event loop and encode pool)."""

from __future__ import annotations

import ctypes
import json
import random
import sys
import threading
import time

import pytest
import torch

from helpers import CHAT_1, CHAT_2
from reward_server.backends.padding import right_padded
from reward_server.backends.pytorch import PyTorchBackend
from reward_server.backends.settings import PyTorchSettings
from reward_server.checkpoint import read_checkpoint
from reward_server.datatypes import Conversation, Message, Text, TokenIds
from reward_server.formats import make_format
from reward_server.offline.tiny_models import TinyShape, write_tiny_checkpoint
from reward_server.runtime.encoding import InputEncoder


def plain_forward_scores(backend: PyTorchBackend, batch: list[list[int]]) -> list[float]:
    """RewardModel.forward: 2D mask, transformers' own mask (and sliding window) construction."""
    input_ids, attention_mask = (torch.from_numpy(a).to(backend.device) for a in right_padded(batch))
    with torch.inference_mode():
        return backend.module(input_ids, attention_mask).tolist()


def random_batches(seed: int, count: int) -> list[list[list[int]]]:
    rng = random.Random(seed)
    return [
        [
            [rng.randrange(5, 500) for _ in range(rng.randrange(1, 70))]
            for _ in range(rng.choice([1, 2, 7, 16]))
        ]
        for _ in range(count)
    ]


def tiny_architecture(tmp_path, architecture: str):
    checkpoint = read_checkpoint(
        write_tiny_checkpoint(tmp_path / architecture, TinyShape(architecture=architecture))
    )
    if architecture == "mistral":
        checkpoint.model_config.sliding_window = 8  # shorter than most rows: the window is part of the mask
    return checkpoint


@pytest.mark.parametrize("architecture", ["llama", "mistral"])
def test_traced_full_forward_equals_the_plain_forward_digit_for_digit(tmp_path, architecture):
    full = PyTorchSettings(torchscript=True, intra_op_threads=0, last_position_only=False)
    backend = PyTorchBackend(tiny_architecture(tmp_path, architecture), "cpu", "float32", full)
    assert backend.traced and not backend.last_position
    for batch in random_batches(seed=1, count=12):  # shapes the trace never saw, padded and not
        assert backend.score_batch(batch) == plain_forward_scores(backend, batch)


@pytest.mark.parametrize("architecture", ["llama", "mistral"])
def test_last_position_forward_equals_the_plain_forward_within_float32_rounding(tmp_path, architecture):
    """The default: the last layer only at the position the head reads. Not the same kernels on the
    same shapes, so not digit for digit: within the 1e-5 the batch-invariance tests allow."""
    backend = PyTorchBackend(tiny_architecture(tmp_path, architecture), "cpu", "float32")
    assert backend.traced and backend.last_position
    for batch in random_batches(seed=1, count=12):
        want = plain_forward_scores(backend, batch)
        assert backend.score_batch(batch) == pytest.approx(want, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("architecture", ["llama", "mistral"])
def test_batches_of_one_length_take_the_unmasked_forward_with_the_same_scores(tmp_path, architecture):
    """Rows of one length (every single-row batch) run without a mask, attention as causal; with a
    sliding window (mistral: 8) only rows inside the window may, longer ones keep the mask."""
    backend = PyTorchBackend(tiny_architecture(tmp_path, architecture), "cpu", "float32")
    assert backend.unmasked_causal
    rng = random.Random(4)
    for length in (1, 5, 8, 9, 30, 64):
        for rows in (1, 3):
            batch = [[rng.randrange(5, 500) for _ in range(length)] for _ in range(rows)]
            want = plain_forward_scores(backend, batch)
            assert backend.score_batch(batch) == pytest.approx(want, rel=1e-5, abs=1e-5), (length, rows)


def test_runs_unmasked_needs_one_length_inside_the_window():
    from reward_server.backends.pytorch.tensors import runs_unmasked

    assert runs_unmasked([[1, 2, 3]], None) and runs_unmasked([[1, 2], [3, 4]], 2)
    assert not runs_unmasked([[1, 2], [3]], None)  # padded
    assert not runs_unmasked([[1, 2, 3]], 2)  # the window cuts the row: the mask carries it


def test_last_position_keeps_the_full_forward_when_layers_are_not_llama_shaped():
    from transformers import Qwen2Config

    from reward_server.backends.pytorch.scorers import PaddedScorer, Probes, RewardModel, last_position_scorer

    config = Qwen2Config(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    full = PaddedScorer(RewardModel(config, False, torch.float32).eval(), None)
    scorer, why = last_position_scorer(full, "cpu", Probes.make(config.vocab_size), 1e-5)
    assert scorer is full and "LlamaDecoderLayer" in why


def eager_attention_llama(tmp_path):
    """The tiny Llama with `attn_logit_softcapping` in its config: served with eager attention, whose
    masks are additive and which attends every key when given none; Llama's layers ignore the cap, so
    its scores are the SDPA model's."""
    checkpoint = tiny_architecture(tmp_path, "llama")
    checkpoint.model_config.attn_logit_softcapping = 0.5
    return checkpoint


def test_softcapped_model_serves_eager_attention_padded_with_the_plain_forwards_scores(tmp_path):
    """The fast paths that run the last layer through SDPA (last position, unmasked, packed) are refused
    for an eager-attention model; the padded trace, given the server's additive masks, gives the digits
    of the plain forward (transformers' own eager masks) and the SDPA model's scores."""
    sdpa = PyTorchBackend(tiny_architecture(tmp_path / "sdpa", "llama"), "cpu", "float32")
    backend = PyTorchBackend(eager_attention_llama(tmp_path), "cpu", "float32")
    assert backend.module.attention == "eager" and backend.traced
    assert not (backend.last_position or backend.unmasked_causal or backend.packs_batches)
    assert str(backend.forward_plan) == "padded+traced+eager-attention"
    for batch in random_batches(seed=3, count=8):
        got = backend.score_batch(batch)
        assert got == plain_forward_scores(backend, batch)
        assert got == pytest.approx(sdpa.score_batch(batch), rel=1e-5, abs=1e-5)


def test_attention_bias_is_zero_where_allowed_and_the_minimum_elsewhere_in_the_dtype():
    from reward_server.backends.pytorch.masks import attention_bias, padded_causal_mask

    allowed = padded_causal_mask(torch.tensor([[1, 1, 0]]), sliding_window=1)  # row 2: a padding query
    assert not allowed[0, 0, 2].any()  # its window holds only itself, a padding key
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        bias = attention_bias(allowed, dtype)
        low = torch.finfo(dtype).min
        assert bias.dtype == dtype and bias[0, 0].tolist() == [[0, low, low], [low, 0, low], [0, 0, 0]]


def test_torchscript_off_serves_the_eager_scorer_with_the_same_scores(tiny_checkpoint):
    checkpoint = read_checkpoint(tiny_checkpoint)
    traced = PyTorchBackend(checkpoint, "cpu", "float32")
    eager = PyTorchBackend(
        checkpoint, "cpu", "float32", PyTorchSettings(torchscript=False, intra_op_threads=1)
    )
    assert traced.traced and not eager.traced
    for batch in random_batches(seed=2, count=4):
        assert eager.score_batch(batch) == traced.score_batch(batch)


def torch_crossings(backend: PyTorchBackend, batch: list) -> int:
    """Calls from Python into torch's C code during one score_batch: each may let the GIL go, and on
    a busy server each such release waits for the event loop to give the GIL back."""
    backend.score_batch(batch)
    crossings = 0

    def count(frame, event: str, function) -> None:
        nonlocal crossings
        if event == "c_call":
            module = (
                getattr(function, "__module__", None) or type(getattr(function, "__self__", None)).__module__
            )
            crossings += str(module).startswith("torch")

    sys.setprofile(count)
    try:
        backend.score_batch(batch)
    finally:
        sys.setprofile(None)
    return crossings


def test_traced_forward_crosses_into_torch_a_handful_of_times_per_batch(tiny_checkpoint):
    """The traced forward is one call into the graph (plus the input and output tensors around it);
    the eager one calls into torch at every operator. Counted, not timed: the waits for the GIL that
    these crossings cost depend on how busy the machine is."""
    checkpoint = read_checkpoint(tiny_checkpoint)
    traced = PyTorchBackend(checkpoint, "cpu", "float32")
    eager = PyTorchBackend(
        checkpoint, "cpu", "float32", PyTorchSettings(torchscript=False, intra_op_threads=1)
    )
    batch = random_batches(seed=3, count=1)[0]
    traced_crossings, eager_crossings = torch_crossings(traced, batch), torch_crossings(eager, batch)
    assert traced_crossings <= 16, traced_crossings
    assert eager_crossings > 5 * traced_crossings, (eager_crossings, traced_crossings)


def test_traced_forward_runs_to_its_end_while_another_thread_holds_the_gil(tiny_checkpoint):
    """The graph never needs the GIL: once the worker has entered it (and so let the GIL go), this
    thread holds the GIL (a C call through ctypes.PyDLL keeps it) for 5x the forward's time, and the
    forward is done the moment the GIL is let go. (It waited inside the graph, for the whole hold,
    while torch released a tensor made in Python.)"""
    backend = PyTorchBackend(
        read_checkpoint(tiny_checkpoint),
        "cpu",
        "float32",
        PyTorchSettings(torchscript=True, intra_op_threads=1),
    )
    inputs = [
        torch.from_numpy(a)
        for a in right_padded([[5 + (7 * i + row) % 400 for i in range(500)] for row in range(48)])
    ]

    def forward() -> None:
        with torch.inference_mode(), torch.jit.optimized_execution(False):  # as score_batch runs it
            backend._scorer(*inputs)

    forward()
    start = time.perf_counter()
    forward()
    alone = time.perf_counter() - start
    entering, done = threading.Event(), threading.Event()
    worker = threading.Thread(target=lambda: (entering.set(), forward(), done.set()))
    worker.start()
    entering.wait()  # returns once the worker lets the GIL go: on entering the graph
    ctypes.PyDLL(None).usleep(int(5 * alone * 1e6))  # PyDLL: the GIL stays held during the call
    released = time.perf_counter()
    assert done.wait(60)
    worker.join()
    assert time.perf_counter() - released < alone / 2, (time.perf_counter() - released, alone)


def encoder_for(folder, **overrides) -> InputEncoder:
    checkpoint = read_checkpoint(folder)
    return InputEncoder(
        format=make_format("chat_template", checkpoint.tokenizer, None),
        tokenizer=checkpoint.tokenizer,
        vocab_size=512,
        max_length=512,
        truncation=True,
        truncation_side="left",
        **overrides,
    )


def chat(messages: list[dict]) -> Conversation:
    return Conversation(tuple(Message(m["role"], m["content"]) for m in messages))


def test_encoder_paths_give_the_tokenizers_own_ids(tiny_checkpoint):
    encoder = encoder_for(tiny_checkpoint)
    tokenizer = encoder.tokenizer
    inputs = [chat(CHAT_1), chat(CHAT_2), Text("plain text, 你好 😀"), TokenIds((5, 6, 7))]
    want = [
        tokenizer.apply_chat_template(CHAT_1, tokenize=True),
        tokenizer.apply_chat_template(CHAT_2, tokenize=True),
        tokenizer("plain text, 你好 😀", add_special_tokens=False)["input_ids"],
        [5, 6, 7],
    ]
    for parallel in (False, True):
        assert [list(e.ids) for e in encoder.encode(inputs, parallel=parallel)] == want


def test_small_requests_fit_inline_and_large_ones_go_to_the_pool(tiny_checkpoint):
    encoder = encoder_for(tiny_checkpoint, inline_chars=100)
    assert encoder.fits_inline([Text("x" * 60), TokenIds(tuple(range(40)))])
    assert not encoder.fits_inline([Text("x" * 60), Text("y" * 41)])
    assert not encoder.fits_inline([chat([{"role": "user", "content": "z" * 101}])])


def test_truncation_and_padding_in_tokenizer_json_do_not_change_the_ids(tiny_checkpoint, tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for path in tiny_checkpoint.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    spec = json.loads((folder / "tokenizer.json").read_text())
    spec["truncation"] = {"direction": "Right", "max_length": 4, "strategy": "LongestFirst", "stride": 0}
    spec["padding"] = {
        "strategy": {"Fixed": 64},
        "direction": "Right",
        "pad_to_multiple_of": None,
        "pad_id": 0,
        "pad_type_id": 0,
        "pad_token": "<pad>",
    }
    (folder / "tokenizer.json").write_text(json.dumps(spec))
    encoded = encoder_for(folder).encode([chat(CHAT_1)], parallel=False)
    assert list(encoded[0].ids) == encoder_for(tiny_checkpoint).tokenizer.apply_chat_template(
        CHAT_1, tokenize=True
    )
