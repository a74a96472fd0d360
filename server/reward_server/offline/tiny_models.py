"""Tiny random reward checkpoints in the canonical layout, built offline: the demo repository,
the tests and the benchmarks use them. The tokenizer is a byte-level BPE trained here, so any
text (Chinese, emoji, code) tokenizes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# The InternLM2 chat format, written by the tokenizer's own template.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
)
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]

CORPUS = [
    "Hello! What's your name? My name is InternLM2! A helpful AI assistant. What can I do for you?",
    "I have no idea. Please write an article about the artificial intelligence revolution.",
    "Reward models score a conversation between a user and an assistant with a single number.",
    "The quick brown fox jumps over the lazy dog while the assistant answers every question politely.",
    "def score(chat): return model(tokenizer(chat)) # code, numbers 0123456789 and symbols +-*/=()[]{}",
    "Reinforcement learning from human feedback trains a policy against a learned reward model.",
    "你好！请问你叫什么名字？我是一个乐于助人的人工智能助手。",
    "Emoji are text too 😀🚀 and so are accents: café, naïve, résumé.",
]


@dataclass(frozen=True)
class TinyShape:
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 512
    vocab_size: int = 512
    architecture: str = "llama"  # "llama" | "mistral"


def train_tokenizer(vocab_size: int = 512):
    """A byte-level BPE fast tokenizer with the chat special tokens and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def write_tiny_checkpoint(
    folder: Path, shape: TinyShape = TinyShape(), seed: int = 0, head_bias: float | None = None
) -> Path:
    """Write config.json, model.safetensors (`model.*` + `score.weight` [+ `score.bias`]) and a
    fast tokenizer into `folder`. The weights are `*ForSequenceClassification` with one label."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import (
        LlamaConfig,
        LlamaForSequenceClassification,
        MistralConfig,
        MistralForSequenceClassification,
    )

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(shape.vocab_size)
    tokenizer.save_pretrained(folder)
    config_cls, model_cls = {
        "llama": (LlamaConfig, LlamaForSequenceClassification),
        "mistral": (MistralConfig, MistralForSequenceClassification),
    }[shape.architecture]
    config = config_cls(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        max_position_embeddings=shape.max_position_embeddings,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = model_cls(config)
    # A wider head than the default init, so that scores spread over a few units, like real rewards.
    torch.nn.init.normal_(model.score.weight, std=1.0)
    model.save_pretrained(folder, safe_serialization=True)
    if head_bias is not None:
        weights = folder / "model.safetensors"
        state = load_file(str(weights))
        state["score.bias"] = torch.tensor([head_bias], dtype=state["score.weight"].dtype)
        save_file(state, str(weights), metadata={"format": "pt"})
    return folder


def demo_config_pbtxt() -> str:
    from reward_server.repository.config import RewardDefaults, config_pbtxt

    comment = (
        "The demo reward model: a tiny random Llama with a trained byte-level BPE tokenizer.\n"
        "Its scores are deterministic but meaningless; it exists to try the server offline."
    )
    return config_pbtxt(
        "demo",
        RewardDefaults(max_sequence_length=512),
        comment=comment,
        max_batch_size=32,
        max_queue_delay_us=2000,
        max_queue_size=4096,
    )


def main() -> None:
    """Rebuild model_repository/demo (python -m reward_server.offline.tiny_models [REPO])."""
    import sys

    repo = Path(sys.argv[1] if len(sys.argv) > 1 else "model_repository")
    model = repo / "demo"
    model.mkdir(parents=True, exist_ok=True)
    (model / "config.pbtxt").write_text(demo_config_pbtxt(), encoding="utf-8")
    write_tiny_checkpoint(model / "1", seed=0)
    print(json.dumps({"written": str(model)}))


if __name__ == "__main__":
    main()
