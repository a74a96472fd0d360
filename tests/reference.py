"""An independent reference: transformers' own *ForSequenceClassification forward, one input at a
time, on ids made by the tokenizer's own apply_chat_template. The server shares none of this code."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerFast


@lru_cache(maxsize=8)
def _load(folder: str):
    model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)
    bias = load_file(str(Path(folder) / "model.safetensors")).get("score.bias")
    return model, tokenizer, 0.0 if bias is None else float(bias[0])


def reference_ids(folder: Path, chat) -> list[int]:
    _, tokenizer, _ = _load(str(folder))
    return list(tokenizer.apply_chat_template(chat, tokenize=True))


@torch.inference_mode()
def reference_score_ids(folder: Path, ids: list[int]) -> float:
    model, _, bias = _load(str(folder))
    # One unpadded row: the class reads the last token, which is what the server must read too.
    return float(model(input_ids=torch.tensor([ids])).logits[0, 0]) + bias


def reference_score(folder: Path, chat) -> float:
    return reference_score_ids(folder, reference_ids(folder, chat))


def close(a: float, b: float, rel: float = 1e-5) -> bool:
    return abs(a - b) <= rel * max(1.0, abs(b))
