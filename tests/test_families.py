"""Every seed family, from its original on-disk layout through `import`, `serve` and the client,
against an independent reference forward and the card's own tokenization recipe."""

from __future__ import annotations

import json
import random
import re

import jinja2
import pytest
import sentencepiece as spm
import torch
from safetensors.torch import load_file

from helpers import random_chat, serve_repo
from reference_forward import internlm2_score, llama_score
from reward_client import RewardClient
from reward_server.datatypes import Conversation, Message
from reward_server.offline.importers import import_checkpoint

TOLERANCE = 1e-4
PROBES = {
    "english": "Hello! What's your name? The quick brown fox.",
    "chinese": "你好！请问你叫什么名字？",
    "code": "def f(x):\n    return  x ** 2  # square\t",
    "emoji": "emoji 😀🚀 café",
    "specials": (
        "<s><|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n好 😀<|im_end|>\n</s>[UNUSED_TOKEN_130]"
    ),
}


def close(a: float, b: float) -> bool:
    return abs(a - b) <= TOLERANCE * max(1.0, abs(b))


def chats(seed: int, n: int = 6) -> list[list[dict]]:
    rng = random.Random(seed)
    return [random_chat(rng, turns=rng.randint(1, 2)) for _ in range(n)]


def load_bins(folder) -> dict[str, torch.Tensor]:
    state = {}
    for path in sorted(folder.glob("*.bin")):
        state.update(torch.load(path, weights_only=True))
    return state


def load_safetensors(folder) -> dict[str, torch.Tensor]:
    state = {}
    for path in sorted(folder.glob("*.safetensors")):
        state.update(load_file(str(path)))
    return state


# --- the card recipes, written independently of the server -----------------------------------


def internlm2_card_ids(folder, chat) -> list[int]:
    """Render the chat template as text, tokenize as InternLM2Tokenizer does (split on special
    tokens, sentencepiece on each piece), append reward_token_id."""
    config = json.loads((folder / "config.json").read_text())
    tok_config = json.loads((folder / "tokenizer_config.json").read_text())
    text = jinja2.Template(tok_config["chat_template"]).render(messages=chat, bos_token="<s>")
    return sentencepiece_ids(folder, text) + [config["reward_token_id"]]


def sentencepiece_ids(folder, text: str) -> list[int]:
    sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    specials = {
        "<s>": 1,
        "</s>": 2,
        **{t: sp.piece_to_id(t) for t in ("<|im_start|>", "<|im_end|>", "[UNUSED_TOKEN_130]")},
    }
    ids = []
    for piece in re.split("(" + "|".join(re.escape(s) for s in specials) + ")", text):
        if piece in specials:
            ids.append(specials[piece])
        elif piece:
            ids.extend(sp.encode(piece))
    return ids


def ziya_card_ids(folder, chat) -> list[int]:
    from transformers import LlamaTokenizer

    tokenizer = LlamaTokenizer.from_pretrained(folder, add_eos_token=True, legacy=True)
    query, response = chat[0]["content"], chat[1]["content"]
    return tokenizer("Human:" + query + "\n\nAssistant:" + response, truncation=True, max_length=1024)[
        "input_ids"
    ]


def starling_card_ids(folder, chat) -> list[int]:
    from transformers import LlamaTokenizer

    tokenizer = LlamaTokenizer(vocab_file=str(folder / "tokenizer.model"), legacy=True)
    text = f"<s>[INST] {chat[0]['content']} </s> [/INST] {chat[1]['content']}</s>"
    return tokenizer(text, truncation=True, max_length=2048)["input_ids"]


def mistral_card_ids(folder, chat) -> list[int]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    return tokenizer.encode_plus(tokenizer.apply_chat_template(chat, tokenize=False))["input_ids"]


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def originals(seed_originals):
    return seed_originals


@pytest.fixture(scope="module")
def server(seed_repository):
    with serve_repo(seed_repository) as running:
        running.repo = seed_repository
        yield running


def server_ids(server, model: str, chat) -> list[int]:
    encoder = server.running.repository.resolve(model, "").encoder
    conversation = Conversation(tuple(Message(m["role"], m["content"]) for m in chat))
    return list(encoder.encode([conversation])[0].ids)


def assert_scores(server, model: str, items, reference) -> None:
    """Alone and in one mixed batch, against the reference."""
    with RewardClient(server.target, model=model) as rm:
        batched = rm.get_scores(items)
        alone = [rm.get_score(c) for c in items]
    expected = [reference(c) for c in items]
    for got_b, got_a, want in zip(batched, alone, expected):
        assert close(got_b, want) and close(got_a, want), (got_b, got_a, want)


# --- InternLM2 --------------------------------------------------------------------------------


def test_internlm2_ids_equal_the_card_recipe(server, originals):
    folder, _ = originals["internlm2"]
    for chat in chats(1):
        assert server_ids(server, "internlm2", chat) == internlm2_card_ids(folder, chat)


def test_internlm2_scores_match_a_forward_over_the_packed_wqkv(server, originals):
    folder, config = originals["internlm2"]
    weights = load_safetensors(folder)
    assert_scores(
        server,
        "internlm2",
        chats(2, 8),
        lambda chat: internlm2_score(internlm2_card_ids(folder, chat), weights, config),
    )


@pytest.mark.parametrize("kind", sorted(PROBES))
def test_internlm2_fast_tokenizer_ids_equal_sentencepiece(server, originals, kind):
    folder, _ = originals["internlm2"]
    tokenizer = server.running.repository.resolve("internlm2", "").encoder.tokenizer
    assert tokenizer(PROBES[kind], add_special_tokens=False)["input_ids"] == sentencepiece_ids(
        folder, PROBES[kind]
    )


def test_no_code_from_the_model_folder_ever_runs(server, originals):
    folder, _ = originals["internlm2"]
    assert not (folder / "REMOTE_CODE_RAN").exists()
    assert not list((server.repo / "internlm2" / "1").glob("*.py"))


def test_internlm2_left_truncation_keeps_the_reward_token(server, originals, tmp_path):
    folder, config = originals["internlm2"]
    import_checkpoint(str(folder), tmp_path, "short")
    path = tmp_path / "short" / "config.pbtxt"
    path.write_text(path.read_text().replace("max_sequence_length: 2048", "max_sequence_length: 16"))
    chat = chats(3, 1)[0]
    full = internlm2_card_ids(folder, chat)
    with serve_repo(tmp_path) as short:
        ids = server_ids(short, "short", chat)
        with RewardClient(short.target, model="short") as rm:
            result = rm.score([chat])[0]
    assert ids == full[:-1][-15:] + [config["reward_token_id"]]
    assert (result.num_tokens, result.num_truncated_tokens) == (16, len(full) - 16)


# --- Ziya, Starling, Mistral ------------------------------------------------------------------


def test_ziya_ids_and_scores_match_the_card_with_head_bias(server, originals):
    folder, config = originals["ziya"]
    state = load_bins(folder)
    backbone = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    items = [
        [{"role": "user", "content": c[0]["content"]}, {"role": "assistant", "content": c[1]["content"]}]
        for c in chats(4)
    ]
    for chat in items:
        assert server_ids(server, "ziya", chat) == ziya_card_ids(folder, chat)
    assert_scores(
        server,
        "ziya",
        items,
        lambda chat: llama_score(
            ziya_card_ids(folder, chat),
            backbone,
            config,
            state["value_head.weight"],
            float(state["value_head.bias"][0]),
        ),
    )


@pytest.mark.parametrize("model", ["starling", "starling-transformer", "starling-model"])
def test_starling_ids_and_scores_match_the_card_for_every_key_prefix(server, originals, model):
    folder, config = originals[model]
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    prefix = "transformer." if any(k.startswith("transformer.") for k in state) else "model.model."
    backbone = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
    items = [c[:2] for c in chats(5)]
    for chat in items:
        ids = server_ids(server, model, chat)
        assert ids == starling_card_ids(folder, chat) and ids[:2] == [1, 1]  # the card's two BOS tokens
    assert_scores(
        server,
        model,
        items,
        lambda chat: llama_score(starling_card_ids(folder, chat), backbone, config, state["v_head.weight"]),
    )


def test_mistral_sequence_classification_matches_the_card(server, originals):
    from transformers import AutoModelForSequenceClassification

    folder, _ = originals["mistral"]
    model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32).eval()
    items = [c[:2] for c in chats(6)]
    for chat in items:
        assert server_ids(server, "mistral", chat) == mistral_card_ids(folder, chat)

    @torch.inference_mode()
    def card_score(chat):
        return float(model(torch.tensor([mistral_card_ids(folder, chat)])).logits[0, 0])

    assert_scores(server, "mistral", items, card_score)


# --- what every family shares -----------------------------------------------------------------


@pytest.mark.parametrize("model", ["internlm2", "ziya", "starling", "mistral"])
def test_card_verbs_agree_with_scores_for_every_family(server, model):
    prompt = [{"role": "user", "content": "Write an article about the AI revolution."}]
    responses = ["It began with data.", "No.", "你好 😀", "Reward models score answers."]
    full = [prompt + [{"role": "assistant", "content": r}] for r in responses]
    with RewardClient(server.target, model=model) as rm:
        scores = rm.get_scores(full)
        best = rm.best_of_n(prompt, responses)
        ranks = rm.rank(full)
        assert rm.compare(full[0], full[1]) == (scores[0] > scores[1])
    assert all(close(a, b) for a, b in zip(best.scores, scores))
    assert best.index == max(range(4), key=lambda i: scores[i])
    assert ranks == [sorted(range(4), key=lambda i: (-scores[i], i)).index(i) for i in range(4)]


def test_config_pbtxt_carries_what_each_family_needs(server, originals):
    texts = {
        name: (server.repo / name / "config.pbtxt").read_text()
        for name in ("internlm2", "ziya", "starling", "mistral")
    }
    reward_token_id = originals["internlm2"][1]["reward_token_id"]
    assert (
        'prompt_format: "internlm2"' in texts["internlm2"]
        and f"reward_token_id: {reward_token_id}" in texts["internlm2"]
    )
    assert "head_bias: false" in texts["internlm2"] and "max_sequence_length: 2048" in texts["internlm2"]
    assert 'prompt_format: "ziya"' in texts["ziya"] and "head_bias: true" in texts["ziya"]
    assert "max_sequence_length: 1024" in texts["ziya"] and "add_special_tokens: true" in texts["ziya"]
    assert 'prompt_format: "llama2"' in texts["starling"] and "max_sequence_length: 2048" in texts["starling"]
    assert (
        'prompt_format: "chat_template"' in texts["mistral"]
        and "add_special_tokens: true" in texts["mistral"]
    )
    for text in texts.values():
        assert "truncation_side: LEFT" in text and 'dtype: "float32"' in text
    version = server.repo / "ziya" / "1"
    assert (version / "model.safetensors").exists() and (version / "tokenizer.json").exists()
    assert not list(version.glob("*.bin"))


def test_importing_again_makes_the_next_version(originals, tmp_path):
    folder, _ = originals["ziya"]
    first = import_checkpoint(str(folder), tmp_path, "ziya")
    second = import_checkpoint(str(folder), tmp_path, "ziya")
    assert (first[1], second[1]) == (1, 2)
    assert sorted(p.name for p in (tmp_path / "ziya").iterdir()) == ["1", "2", "config.pbtxt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ziya"]  # no staging left behind
