"""Tiny checkpoints in each family's ORIGINAL on-disk layout (key names, file formats, tokenizer
files), trained or drawn here. Nothing in this file shares code with the server's importers."""

from __future__ import annotations

import io
import json
from pathlib import Path

import sentencepiece as spm
import torch
from safetensors.torch import save_file

CORPUS = [
    "Hello! What's your name? My name is InternLM2! A helpful AI assistant. What can I do for you?",
    "I have no idea. Write an article about the artificial intelligence revolution.",
    "def score(chat):\n    return model(tokenizer(chat))  # code, numbers 0123456789",
    "你好！请问你叫什么名字？我是一个乐于助人的人工智能助手。列举一种空气污染。",
    "The quick brown fox jumps over the lazy dog.  Two  spaces and a tab\there.",
    "Emoji are rare 😀 but accents are not: café, naïve.",
    "[INST] Hello? [/INST] Hi, how can I help you? Human: Assistant:",
]

INTERNLM2_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
)
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
)
REMOTE_CODE = (
    "open({marker!r}, 'w').write('executed')\nraise RuntimeError('remote code from the model folder ran')\n"
)


def train_sentencepiece(
    path: Path, user_defined: tuple[str, ...] = (), vocab_size: int = 400
) -> spm.SentencePieceProcessor:
    """A Llama-style sentencepiece BPE model: byte fallback, identity normalization, dummy prefix."""
    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 20),
        model_writer=buffer,
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        character_coverage=1.0,
        user_defined_symbols=list(user_defined),
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    path.write_bytes(buffer.getvalue())
    return spm.SentencePieceProcessor(model_file=str(path))


def _random(shape, generator, std=0.05):
    return torch.randn(shape, generator=generator) * std


def llama_backbone(
    prefix: str,
    hidden: int,
    heads: int,
    kv_heads: int,
    layers: int,
    inter: int,
    vocab: int,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Llama key names under `prefix` (e.g. 'model.'), random values."""
    d = hidden // heads
    state = {
        f"{prefix}embed_tokens.weight": _random((vocab, hidden), generator, 1.0),
        f"{prefix}norm.weight": 1 + _random((hidden,), generator, 0.1),
    }
    for i in range(layers):
        p = f"{prefix}layers.{i}."
        state.update(
            {
                p + "self_attn.q_proj.weight": _random((heads * d, hidden), generator, 0.2),
                p + "self_attn.k_proj.weight": _random((kv_heads * d, hidden), generator, 0.2),
                p + "self_attn.v_proj.weight": _random((kv_heads * d, hidden), generator, 0.2),
                p + "self_attn.o_proj.weight": _random((hidden, heads * d), generator, 0.2),
                p + "mlp.gate_proj.weight": _random((inter, hidden), generator, 0.2),
                p + "mlp.up_proj.weight": _random((inter, hidden), generator, 0.2),
                p + "mlp.down_proj.weight": _random((hidden, inter), generator, 0.2),
                p + "input_layernorm.weight": 1 + _random((hidden,), generator, 0.1),
                p + "post_attention_layernorm.weight": 1 + _random((hidden,), generator, 0.1),
            }
        )
    return state


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")


def write_internlm2(
    folder: Path,
    *,
    hidden=64,
    heads=4,
    kv_heads=2,
    layers=2,
    inter=96,
    seed=0,
    rope_scaling=None,
    trap_marker: Path | None = None,
) -> dict:
    """InternLM2-Reward layout: packed wqkv, sharded safetensors (fp16) + index, tokenizer.model with
    the chat special tokens, remote-code files that must never run."""
    folder.mkdir(parents=True)
    sp = train_sentencepiece(folder / "tokenizer.model", ("<|im_start|>", "<|im_end|>", "[UNUSED_TOKEN_130]"))
    vocab, reward_token_id = sp.get_piece_size(), sp.piece_to_id("[UNUSED_TOKEN_130]")
    g = torch.Generator().manual_seed(seed)
    d = hidden // heads
    state = {
        "model.tok_embeddings.weight": _random((vocab, hidden), g, 1.0),
        "model.norm.weight": 1 + _random((hidden,), g, 0.1),
        "v_head.weight": _random((1, hidden), g, 1.0),
    }
    for i in range(layers):
        p = f"model.layers.{i}."
        state.update(
            {
                p + "attention.wqkv.weight": _random(((heads + 2 * kv_heads) * d, hidden), g, 0.2),
                p + "attention.wo.weight": _random((hidden, heads * d), g, 0.2),
                p + "feed_forward.w1.weight": _random((inter, hidden), g, 0.2),
                p + "feed_forward.w3.weight": _random((inter, hidden), g, 0.2),
                p + "feed_forward.w2.weight": _random((hidden, inter), g, 0.2),
                p + "attention_norm.weight": 1 + _random((hidden,), g, 0.1),
                p + "ffn_norm.weight": 1 + _random((hidden,), g, 0.1),
            }
        )
    state = {k: v.half() for k, v in state.items()}
    names = sorted(state)
    shards = {
        "model-00001-of-00002.safetensors": names[: len(names) // 2],
        "model-00002-of-00002.safetensors": names[len(names) // 2 :],
    }
    for file, keys in shards.items():
        save_file({k: state[k] for k in keys}, str(folder / file))
    _write_json(
        folder / "model.safetensors.index.json",
        {"metadata": {}, "weight_map": {k: f for f, ks in shards.items() for k in ks}},
    )
    config = {
        "architectures": ["InternLM2ForRewardModel"],
        "model_type": "internlm2",
        "auto_map": {
            "AutoConfig": "configuration_internlm2.InternLM2Config",
            "AutoModel": "modeling_internlm2.InternLM2ForRewardModel",
        },
        "bias": False,
        "hidden_act": "silu",
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "num_hidden_layers": layers,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-5,
        "rope_theta": 1000000,
        "rope_scaling": rope_scaling,
        "vocab_size": vocab,
        "reward_token_id": reward_token_id,
        "pad_token_id": 2,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float16",
        "tie_word_embeddings": False,
    }
    _write_json(folder / "config.json", config)
    specials = {sp.piece_to_id(t): t for t in ("<|im_start|>", "<|im_end|>", "[UNUSED_TOKEN_130]")}
    _write_json(
        folder / "tokenizer_config.json",
        {
            "tokenizer_class": "InternLM2Tokenizer",
            "auto_map": {"AutoTokenizer": ["tokenization_internlm2.InternLM2Tokenizer", None]},
            "add_bos_token": True,
            "add_eos_token": False,
            "pad_token": "</s>",
            "bos_token": "<s>",
            "eos_token": "</s>",
            "unk_token": "<unk>",
            "chat_template": INTERNLM2_TEMPLATE,
            "added_tokens_decoder": {str(i): {"content": t, "special": True} for i, t in specials.items()},
        },
    )
    marker = trap_marker or folder / "REMOTE_CODE_RAN"
    for name in ("modeling_internlm2.py", "configuration_internlm2.py", "tokenization_internlm2.py"):
        (folder / name).write_text(REMOTE_CODE.format(marker=str(marker)), encoding="utf-8")
    return config


def _llama_config(vocab, hidden, heads, kv_heads, layers, inter, **extra) -> dict:
    return {
        "model_type": "llama",
        "hidden_act": "silu",
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "num_hidden_layers": layers,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-6,
        "vocab_size": vocab,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "tie_word_embeddings": False,
        **extra,
    }


def write_ziya(folder: Path, *, hidden=64, heads=4, layers=2, inter=128, seed=1) -> dict:
    """Ziya-LLaMA-Reward layout: LlamaRewardModel keys with value_head + bias and stale inv_freq
    buffers, sharded fp32 .bin pickles + index, LlamaTokenizer files with an added [PAD]."""
    folder.mkdir(parents=True)
    sp = train_sentencepiece(folder / "tokenizer.model")
    pad_id = sp.get_piece_size()
    g = torch.Generator().manual_seed(seed)
    state = llama_backbone("model.", hidden, heads, heads, layers, inter, pad_id + 1, g)
    d = hidden // heads
    for i in range(layers):
        state[f"model.layers.{i}.self_attn.rotary_emb.inv_freq"] = 1.0 / 10000 ** (
            torch.arange(0, d, 2).float() / d
        )
    state["value_head.weight"] = _random((1, hidden), g, 1.0)
    state["value_head.bias"] = torch.tensor([0.625])
    names = sorted(state)
    shards = {
        "pytorch_model-00001-of-00002.bin": names[: len(names) // 2],
        "pytorch_model-00002-of-00002.bin": names[len(names) // 2 :],
    }
    for file, keys in shards.items():
        torch.save({k: state[k] for k in keys}, folder / file)
    _write_json(
        folder / "pytorch_model.bin.index.json",
        {"metadata": {}, "weight_map": {k: f for f, ks in shards.items() for k in ks}},
    )
    config = _llama_config(
        pad_id + 1,
        hidden,
        heads,
        heads,
        layers,
        inter,
        architectures=["LlamaRewardModel"],
        pad_token_id=pad_id,
        torch_dtype="float32",
    )
    _write_json(folder / "config.json", config)
    _write_json(
        folder / "tokenizer_config.json",
        {
            "tokenizer_class": "LlamaTokenizer",
            "add_bos_token": True,
            "add_eos_token": False,
            "model_max_length": 1024,
        },
    )
    _write_json(
        folder / "special_tokens_map.json",
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "[PAD]"},
    )
    _write_json(folder / "added_tokens.json", {"[PAD]": pad_id})
    return config


def write_starling(
    folder: Path,
    *,
    prefixes=("model.model.", "transformer."),
    hidden=64,
    heads=4,
    kv_heads=4,
    layers=2,
    inter=128,
    seed=2,
) -> dict:
    """Starling-RM layout: one fp32 pytorch_model.bin of GPTRewardModel (backbone under the given
    alias prefixes, the causal LM head, v_head without bias), Llama-2 tokenizer files."""
    folder.mkdir(parents=True)
    sp = train_sentencepiece(folder / "tokenizer.model")
    vocab = sp.get_piece_size()
    g = torch.Generator().manual_seed(seed)
    backbone = llama_backbone("", hidden, heads, kv_heads, layers, inter, vocab, g)
    state = {prefix + k: v for prefix in prefixes for k, v in backbone.items()}  # aliases share tensors
    state["model.lm_head.weight"] = _random((vocab, hidden), g)
    state["v_head.weight"] = _random((1, hidden), g, 1.0)
    torch.save(state, folder / "pytorch_model.bin")
    config = _llama_config(
        vocab,
        hidden,
        heads,
        kv_heads,
        layers,
        inter,
        architectures=["LlamaForCausalLM"],
        torch_dtype="float32",
    )
    _write_json(folder / "config.json", config)
    _write_json(
        folder / "tokenizer_config.json",
        {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False},
    )
    return config


def write_mistral_rm(folder: Path, *, seed=3) -> dict:
    """Mistral RM layout: MistralForSequenceClassification(num_labels=1), sharded safetensors + index,
    a fast tokenizer.json with the Mistral-Instruct chat template."""
    from transformers import LlamaTokenizerFast, MistralConfig, MistralForSequenceClassification

    folder.mkdir(parents=True)
    train_sentencepiece(folder / "tokenizer.model")
    tokenizer = LlamaTokenizerFast(vocab_file=str(folder / "tokenizer.model"), from_slow=True, legacy=True)
    tokenizer.add_special_tokens({"pad_token": "[PAD]"})
    tokenizer.chat_template = MISTRAL_TEMPLATE
    tokenizer.save_pretrained(folder)
    (folder / "tokenizer.model").unlink()  # the fast tokenizer.json is what the card's AutoTokenizer reads
    config = MistralConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rope_theta=1e6,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
        sliding_window=None,
    )
    torch.manual_seed(seed)
    model = MistralForSequenceClassification(config)
    torch.nn.init.normal_(model.score.weight, std=1.0)
    model.save_pretrained(folder, safe_serialization=True, max_shard_size="100KB")
    return json.loads((folder / "config.json").read_text())
