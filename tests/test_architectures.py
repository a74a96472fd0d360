"""Each transformers architecture the README lists as supported, as a tiny random
`*ForSequenceClassification` with one label: saved by transformers, imported by `reward-server import`
(family `sequence-classification`), served by a real server, and scored like transformers' own
`AutoModelForSequenceClassification` forward (one unpadded input at a time; its eager attention for a
model whose config caps the attention logits, as the cards of such models score), alone, in batches of
mixed lengths and as Rank candidates sharing a long prompt; and the forward each one is served with.
Each architecture's sliding window (where it has one) is shorter than most inputs, so the window is
part of every mask the server builds."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from helpers import random_chat, serve_repo
from reward_client import RewardClient
from reward_server.offline.importers import import_checkpoint
from reward_server.offline.tiny_models import train_tokenizer

RELATIVE = 1e-5
WINDOW = 8  # tokens; the random chats run to ~80


@dataclass(frozen=True)
class Architecture:
    name: str
    config_class: str
    extra: dict[str, Any] = field(default_factory=dict)
    # What the PyTorch backend serves (backends/pytorch/scorers.py): the last layer at the last position
    # only (and so packed batches and the unmasked forward for one-length batches), or the full forward.
    last_position: bool = False
    # Whether Rank candidates with a long common prompt run it once (backends/pytorch/shared_prompt.py).
    shared_prompt: bool = True
    # The attention the backbone runs, and so the reference's: eager where attn_logit_softcapping is set.
    attention: str = "sdpa"


ARCHITECTURES = [
    Architecture("llama", "LlamaConfig", last_position=True),
    Architecture("mistral", "MistralConfig", {"sliding_window": WINDOW}, last_position=True),
    Architecture("qwen2", "Qwen2Config"),
    Architecture(
        "qwen2_window",
        "Qwen2Config",
        {"use_sliding_window": True, "sliding_window": WINDOW, "max_window_layers": 1},
        shared_prompt=False,
    ),
    Architecture("qwen3", "Qwen3Config", {"head_dim": 16}),
    Architecture(
        "gemma2",
        "Gemma2Config",
        {"head_dim": 16, "sliding_window": WINDOW, "query_pre_attn_scalar": 16},
        shared_prompt=False,
        attention="eager",  # Gemma2Config caps attention logits at 50 by default
    ),
    Architecture("phi3", "Phi3Config", {"sliding_window": WINDOW}),  # Phi-3-mini-4k: a window on every layer
]
# A Gemma2 whose attention softcapping bites on random weights (the default cap, 50, leaves their
# small attention logits almost unchanged).
SOFTCAPPED = Architecture(
    "gemma2_softcap",
    "Gemma2Config",
    {"head_dim": 16, "sliding_window": WINDOW, "query_pre_attn_scalar": 16, "attn_logit_softcapping": 0.5},
    shared_prompt=False,
    attention="eager",
)
ARCHITECTURES.append(SOFTCAPPED)


def write_original(folder: Path, architecture: Architecture, tokenizer: Any, seed: int) -> Path:
    """A checkpoint as transformers saves it: config.json, model.safetensors, the tokenizer files."""
    import transformers

    config = getattr(transformers, architecture.config_class)(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **architecture.extra,
    )
    torch.manual_seed(seed)
    model = transformers.AutoModelForSequenceClassification.from_config(config)
    torch.nn.init.normal_(model.score.weight, std=1.0)  # scores spread over a few units, like real rewards
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, Path]:
    tokenizer = train_tokenizer()
    root = tmp_path_factory.mktemp("originals")
    return {a.name: write_original(root / a.name, a, tokenizer, seed) for seed, a in enumerate(ARCHITECTURES)}


@pytest.fixture(scope="module")
def repo(originals, tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("repo")
    for name, folder in originals.items():
        import_checkpoint(str(folder), repo, name, family="sequence-classification")
        # float32 on any device, as the reference runs; a fixed token budget (not tuned at load, which
        # costs seconds per model) that holds every batch whole, so that one batch mixes all lengths.
        config = repo / name / "config.pbtxt"
        config.write_text(
            config.read_text()
            .replace('dtype: "auto"', 'dtype: "float32"')
            .replace("max_queue_delay_microseconds:", "max_batch_tokens: 0 max_queue_delay_microseconds:")
        )
    return repo


@pytest.fixture(scope="module")
def server(repo):
    with serve_repo(repo) as running:
        yield running


class Reference:
    """transformers' own forward of the original checkpoint, one unpadded input at a time."""

    def __init__(self, folder: Path, attention: str) -> None:
        from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerFast

        self.model = AutoModelForSequenceClassification.from_pretrained(
            folder, dtype=torch.float32, attn_implementation=attention
        ).eval()
        self.tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)

    def ids(self, chat: list[dict]) -> list[int]:
        return list(self.tokenizer.apply_chat_template(chat, tokenize=True))

    @torch.inference_mode()
    def score(self, chat: list[dict]) -> float:
        return float(self.model(input_ids=torch.tensor([self.ids(chat)])).logits[0, 0])


def close(a: float, b: float) -> bool:
    return abs(a - b) <= RELATIVE * max(1.0, abs(b))


def mixed_chats(seed: int, count: int) -> list[list[dict]]:
    rng = random.Random(seed)
    return [random_chat(rng, turns=rng.randint(1, 2)) for _ in range(count)]


@pytest.mark.parametrize("architecture", ARCHITECTURES, ids=lambda a: a.name)
def test_architecture_imports_and_scores_like_transformers_when_alone_and_batched(
    server, originals, architecture
):
    reference = Reference(originals[architecture.name], architecture.attention)
    chats = mixed_chats(seed=len(architecture.name), count=10)
    with RewardClient(server.target, model=architecture.name) as rm:
        alone = [rm.score([chat])[0] for chat in chats[:4]]
        batched = rm.score(chats)
    want = [reference.score(chat) for chat in chats]
    assert [r.num_tokens for r in batched] == [len(reference.ids(chat)) for chat in chats]
    assert max(r.num_tokens for r in batched) > 2 * WINDOW  # windows and padding both matter
    assert all(close(r.score, w) for r, w in zip(alone, want)), ([r.score for r in alone], want[:4])
    assert all(close(r.score, w) for r, w in zip(batched, want)), ([r.score for r in batched], want)


@pytest.mark.parametrize("architecture", ARCHITECTURES, ids=lambda a: a.name)
def test_architecture_ranks_like_transformers_when_candidates_share_a_long_prompt(
    server, originals, architecture
):
    reference = Reference(originals[architecture.name], architecture.attention)
    prompt = [
        {
            "role": "user",
            "content": "Write an article about the artificial intelligence revolution, "
            "with code: def score(chat): return model(tokenizer(chat)) 你好 😀",
        }
    ]
    responses = ["It began with data.", "No.", "Reward models score answers 😀 and so do people, slowly."]
    [instance] = server.running.repository.resolve(architecture.name, "").instances
    before = instance.stats.shared_groups
    with RewardClient(server.target, model=architecture.name) as rm:
        ranked = rm.rank_candidates(prompt, responses)
    assert instance.stats.shared_groups - before == int(architecture.shared_prompt)  # the path it took
    full = [prompt + [{"role": "assistant", "content": r}] for r in responses]
    assert (
        len(reference.ids(prompt)) > 32 + WINDOW
    )  # a shared-prompt group (shared_prompt_plan.MIN_SHARED_TOKENS)
    want = [reference.score(chat) for chat in full]
    assert all(close(a, b) for a, b in zip(ranked.scores, want)), (list(ranked.scores), want)


@pytest.mark.parametrize("architecture", ARCHITECTURES, ids=lambda a: a.name)
def test_architecture_is_served_with_its_fast_paths_when_imported(server, architecture):
    [instance] = server.running.repository.resolve(architecture.name, "").instances
    backend: Any = instance.backend
    assert backend.traced
    assert backend.supports_shared_prompt == architecture.shared_prompt
    assert backend.last_position == architecture.last_position
    assert backend.packs_batches == architecture.last_position
    assert backend.unmasked_causal == architecture.last_position
    assert backend.forward_plan.attention == architecture.attention
    assert ("eager-attention" in str(backend.forward_plan)) == (architecture.attention == "eager")


def test_gemma2_scores_apply_attention_softcapping_like_the_eager_forward(server, originals):
    eager = Reference(originals[SOFTCAPPED.name], "eager")
    default = Reference(originals[SOFTCAPPED.name], "sdpa")  # transformers' default, which drops the cap
    chats = mixed_chats(seed=5, count=4)
    assert not all(close(eager.score(c), default.score(c)) for c in chats)  # the cap changes the scores
    with RewardClient(server.target, model=SOFTCAPPED.name) as rm:
        scores = rm.get_scores(chats)
        (version,) = rm.model_metadata().versions
    assert version.forward == "padded+traced+eager-attention"  # what an operator sees
    assert all(close(score, eager.score(chat)) for score, chat in zip(scores, chats)), scores
