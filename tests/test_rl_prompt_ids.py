"""Which ids OpenRLHF's `/get_reward` query gets, per prompt format, with the seed families' real tokenizers.

OpenRLHF posts the policy's full chat-templated text, special tokens included, as `query`; the server
scores it as a `text` input: the tokenizer's ids of the text as sent (special-token strings matched),
framed by the format's `add_special_tokens` (BOS, Ziya's EOS) and followed by the format's suffix
(InternLM2's reward token). A query that already starts with `<s>` therefore gets a second BOS where the
frame adds one. The expected ids are computed here with each card's own tokenizer (the original folder's
sentencepiece / LlamaTokenizer / AutoTokenizer), not the server's, and each reward must equal the score
of exactly those ids sent as `token_ids`."""

from __future__ import annotations

import asyncio
import json
import shutil

import aiohttp
import jinja2
import pytest

from helpers import close, serve_repo
from reward_client import RewardClient
from reward_server.datatypes import Text
from test_families import (
    internlm2_card_ids,
    mistral_card_ids,
    sentencepiece_ids,
    starling_card_ids,
    ziya_card_ids,
)

BOS, EOS = 1, 2  # every seed family's sentencepiece / Llama tokenizer
CHATS = [
    [
        {"role": "user", "content": "Hello! What's your name?"},
        {"role": "assistant", "content": "My name is InternLM2."},
    ],
    [
        {"role": "user", "content": "Write an article about the AI revolution."},
        {"role": "assistant", "content": "你好 😀"},
    ],
]
# What these tests do not exercise, off: a faster load.
FAST_LOAD = "pytorch { torchscript: false }\nmodel_warmup [ { batch_size: 1 sequence_length: 8 } ]\n"
# served name -> (seed family, the change to its imported config.pbtxt)
MODELS = {
    "internlm2": ("internlm2", None),
    "ziya": ("ziya", None),
    "ziya-unframed": ("ziya", ("add_special_tokens: true", "add_special_tokens: false")),
    "starling": ("starling", None),
    "mistral": (
        "mistral",
        None,
    ),  # chat_template, add_special_tokens: true (the sequence-classification import)
    "mistral-default": ("mistral", ("add_special_tokens: true", "")),  # chat_template's default frame: none
}


@pytest.fixture(scope="module")
def server(seed_repository, tmp_path_factory):
    repo = tmp_path_factory.mktemp("rl_prompt_ids")
    for name, (family, change) in MODELS.items():
        config = (seed_repository / family / "config.pbtxt").read_text()
        if change:
            assert change[0] in config
            config = config.replace(change[0], change[1])
        shutil.copytree(seed_repository / family / "1", repo / name / "1")
        (repo / name / "config.pbtxt").write_text(
            config.replace(f'name: "{family}"', f'name: "{name}"') + FAST_LOAD
        )
    with serve_repo(repo, http_port=0) as running:
        yield running


def get_reward(server, model: str, queries: list[str]) -> list[float]:
    """OpenRLHF's request: one JSON body, the model chosen by `?model=`."""

    async def go():
        async with aiohttp.ClientSession() as session:
            body = {"query": queries, "prompts": ["" for _ in queries], "labels": [None for _ in queries]}
            url = f"http://127.0.0.1:{server.server.http.port}/get_reward?model={model}"
            async with session.post(
                url, data=json.dumps(body), headers={"Content-Type": "application/json"}
            ) as r:
                assert r.status == 200, await r.text()
                return (await r.json())["rewards"]

    return asyncio.run(go())


def assert_scored_as(server, model: str, queries: list[str], expected: list[list[int]]) -> None:
    """The server encodes each query to `expected`, and /get_reward's reward is the score of those ids."""
    encoder = server.running.repository.resolve(model, "").encoder
    assert [list(e.ids) for e in encoder.encode([Text(q) for q in queries])] == expected
    rewards = get_reward(server, model, queries)
    with RewardClient(server.target, model=model) as rm:
        as_text = rm.score(queries)
        as_ids = rm.score(expected)
    assert [r.num_tokens for r in as_text] == [len(ids) for ids in expected]
    assert [r.num_tokens for r in as_ids] == [len(ids) for ids in expected]
    for reward, text, ids in zip(rewards, as_text, as_ids):
        assert close(reward, ids.score) and close(reward, text.score), (reward, text.score, ids.score)


def leading_bos(ids: list[int]) -> int:
    return next(i for i, t in enumerate(ids) if t != BOS)


def test_get_reward_gives_internlm2_queries_one_bos_and_the_reward_token_when_the_query_is_the_chat_template(
    server, seed_originals
):
    folder, config = seed_originals["internlm2"]
    template = json.loads((folder / "tokenizer_config.json").read_text())["chat_template"]
    queries = [jinja2.Template(template).render(messages=chat, bos_token="<s>") for chat in CHATS]
    assert all(q.startswith("<s><|im_start|>user\n") for q in queries)
    expected = [sentencepiece_ids(folder, q) + [config["reward_token_id"]] for q in queries]
    for ids, chat in zip(expected, CHATS):
        assert leading_bos(ids) == 1 and ids.count(BOS) == 1 and ids[-1] == config["reward_token_id"]
        assert ids == internlm2_card_ids(folder, chat)  # the card's own ids for the conversation
    assert_scored_as(server, "internlm2", queries, expected)


def test_get_reward_gives_ziya_queries_the_cards_bos_and_eos_when_the_query_is_the_cards_rendering(
    server, seed_originals
):
    from transformers import LlamaTokenizer

    folder = seed_originals["ziya"][0]
    card = LlamaTokenizer.from_pretrained(folder, add_eos_token=True, legacy=True)
    queries = [f"Human:{chat[0]['content']}\n\nAssistant:{chat[1]['content']}" for chat in CHATS]
    expected = [card(q)["input_ids"] for q in queries]
    for ids, chat in zip(expected, CHATS):
        assert leading_bos(ids) == 1 and ids.count(BOS) == 1 and ids[-1] == EOS and ids[-2] != EOS
        assert ids == ziya_card_ids(folder, chat)
    assert_scored_as(server, "ziya", queries, expected)


def test_get_reward_gives_ziya_queries_two_bos_and_two_eos_when_the_query_carries_the_policys_own(
    server, seed_originals
):
    from transformers import LlamaTokenizer

    folder = seed_originals["ziya"][0]
    card = LlamaTokenizer.from_pretrained(folder, add_eos_token=True, legacy=True)
    # A Llama policy's decoded sequence: its BOS and its EOS as text around the card's rendering.
    queries = [f"<s>Human:{chat[0]['content']}\n\nAssistant:{chat[1]['content']}</s>" for chat in CHATS]
    expected = [card(q)["input_ids"] for q in queries]
    for ids, chat in zip(expected, CHATS):
        assert leading_bos(ids) == 2 and ids.count(BOS) == 2 and ids[-2:] == [EOS, EOS]
        assert ids == [BOS] + ziya_card_ids(folder, chat) + [EOS]  # one more of each than the card
    assert_scored_as(server, "ziya", queries, expected)
    # add_special_tokens: false scores such a query with the card's ids.
    assert_scored_as(server, "ziya-unframed", queries, [ziya_card_ids(folder, chat) for chat in CHATS])


def test_get_reward_gives_llama2_queries_two_bos_as_the_card_when_the_query_is_the_cards_rendering(
    server, seed_originals
):
    from transformers import LlamaTokenizer

    folder = seed_originals["starling"][0]
    card = LlamaTokenizer(vocab_file=str(folder / "tokenizer.model"), legacy=True)
    queries = [f"<s>[INST] {chat[0]['content']} </s> [/INST] {chat[1]['content']}</s>" for chat in CHATS]
    expected = [card(q)["input_ids"] for q in queries]
    for ids, chat in zip(expected, CHATS):
        assert leading_bos(ids) == 2 and ids.count(BOS) == 2 and ids[-1] == EOS
        assert ids == starling_card_ids(folder, chat)  # the card's ids have the two BOS too
    assert_scored_as(server, "starling", queries, expected)


def test_get_reward_gives_chat_template_queries_two_bos_as_the_card_when_add_special_tokens_is_on(
    server, seed_originals
):
    from transformers import AutoTokenizer

    folder = seed_originals["mistral"][0]
    card = AutoTokenizer.from_pretrained(folder)
    queries = [card.apply_chat_template(chat, tokenize=False) for chat in CHATS]
    assert all(q.startswith("<s>[INST] ") for q in queries)
    expected = [card(q)["input_ids"] for q in queries]  # the card's encode_plus of its templated text
    for ids, chat in zip(expected, CHATS):
        assert leading_bos(ids) == 2 and ids.count(BOS) == 2 and ids[-1] == EOS
        assert ids == mistral_card_ids(folder, chat)
    assert_scored_as(server, "mistral", queries, expected)


def test_get_reward_gives_chat_template_queries_one_bos_when_the_default_frame_adds_nothing(
    server, seed_originals
):
    from transformers import AutoTokenizer

    folder = seed_originals["mistral"][0]
    card = AutoTokenizer.from_pretrained(folder)
    queries = [card.apply_chat_template(chat, tokenize=False) for chat in CHATS]
    expected = [card(q, add_special_tokens=False)["input_ids"] for q in queries]
    for ids, chat in zip(expected, CHATS):
        assert leading_bos(ids) == 1 and ids.count(BOS) == 1 and ids[-1] == EOS
        assert [BOS] + ids == mistral_card_ids(folder, chat)  # one BOS fewer than the card's recipe
    assert_scored_as(server, "mistral-default", queries, expected)
