"""Server scores against an independent transformers forward, through a real server and client."""

from __future__ import annotations

import random

import pytest

from helpers import CHAT_1, CHAT_2, add_model, config_text, random_chat, serve_repo
from reference import close, reference_ids, reference_score, reference_score_ids
from reward_client import AsyncRewardClient, RewardClient


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tiny_checkpoint_b, tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    add_model(repo, "tiny", tiny_checkpoint, config_text("tiny", max_batch_size=16, delay_us=20_000))
    add_model(repo, "biased", tiny_checkpoint_b, config_text("biased", max_batch_size=16, delay_us=20_000))
    with serve_repo(repo) as running:
        yield running


def test_score_equals_reference_forward_when_single_input(server, tiny_checkpoint):
    with RewardClient(server.target, model="tiny") as rm:
        result = rm.score([CHAT_1])[0]
        assert close(result.score, reference_score(tiny_checkpoint, CHAT_1))
        assert result.num_tokens == len(reference_ids(tiny_checkpoint, CHAT_1))
        assert result.num_truncated_tokens == 0
        assert rm.get_score(CHAT_1) == result.score


def test_scores_equal_reference_when_batched_with_mixed_lengths(server, tiny_checkpoint):
    rng = random.Random(7)
    chats = [random_chat(rng, turns=rng.randint(1, 3)) for _ in range(12)]
    with RewardClient(server.target, model="tiny") as rm:
        scores = rm.get_scores(chats)
    for chat, score in zip(chats, scores):
        assert close(score, reference_score(tiny_checkpoint, chat)), (
            score,
            reference_score(tiny_checkpoint, chat),
        )


def test_score_is_batch_invariant_when_alone_or_with_longer_inputs(server):
    rng = random.Random(11)
    short = random_chat(rng)
    others = [random_chat(rng, turns=3) for _ in range(7)]
    with RewardClient(server.target, model="tiny") as rm:
        alone = rm.get_score(short)
        batched = rm.get_scores([*others[:3], short, *others[3:]])[3]
    assert close(batched, alone)


def test_head_bias_and_mistral_backbone_match_reference(server, tiny_checkpoint_b):
    with RewardClient(server.target, model="biased") as rm:
        scores = rm.get_scores([CHAT_1, CHAT_2])
    assert close(scores[0], reference_score(tiny_checkpoint_b, CHAT_1))
    assert close(scores[1], reference_score(tiny_checkpoint_b, CHAT_2))


def test_text_and_token_id_inputs_score_like_the_conversation(server, tiny_checkpoint):
    ids = reference_ids(tiny_checkpoint, CHAT_1)
    from transformers import PreTrainedTokenizerFast

    text = PreTrainedTokenizerFast.from_pretrained(tiny_checkpoint).apply_chat_template(
        CHAT_1, tokenize=False
    )
    with RewardClient(server.target, model="tiny") as rm:
        by_chat, by_text, by_ids = rm.score([CHAT_1, text, ids])
    assert by_text.num_tokens == by_ids.num_tokens == len(ids)
    assert close(by_text.score, by_chat.score) and close(by_ids.score, by_chat.score)
    assert close(by_ids.score, reference_score_ids(tiny_checkpoint, ids))


def test_card_verbs_agree_with_scores(server, tiny_checkpoint):
    chats = [CHAT_1, CHAT_2, random_chat(random.Random(3))]
    with RewardClient(server.target, model="tiny") as rm:
        scores = rm.get_scores(chats)
        assert rm.compare(CHAT_1, CHAT_2) == (scores[0] > scores[1])
        assert rm.compare(CHAT_2, CHAT_1) == (scores[1] > scores[0])
        ranks = rm.rank(chats)
        expected_order = sorted(range(3), key=lambda i: -scores[i])
        assert [ranks[i] for i in expected_order] == [0, 1, 2]


def test_best_of_n_scores_the_prompt_followed_by_each_response(server, tiny_checkpoint):
    prompt = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Write an article about the AI revolution."},
    ]
    responses = ["It began with data.", "No.", "", "Reward models score answers 😀"]
    with RewardClient(server.target, model="tiny") as rm:
        best = rm.best_of_n(prompt, responses)
        ranked = rm.rank_candidates(prompt, responses)
    expected = [
        reference_score(tiny_checkpoint, prompt + [{"role": "assistant", "content": r}]) for r in responses
    ]
    assert all(close(a, b) for a, b in zip(best.scores, expected))
    assert best.index == max(range(len(expected)), key=lambda i: expected[i])
    assert ranked.order[0] == best.index
    assert sorted(ranked.rank) == [0, 1, 2, 3]
    assert all(ranked.rank[i] == pos for pos, i in enumerate(ranked.order))


def test_rank_breaks_ties_by_input_order(server):
    with RewardClient(server.target, model="tiny") as rm:
        ranked = rm.rank_conversations([CHAT_2, CHAT_1, CHAT_2])
    assert ranked.scores[0] == ranked.scores[2]
    assert ranked.rank[0] < ranked.rank[2]


def test_async_client_offers_the_same_verbs(server):
    import asyncio

    async def run():
        async with AsyncRewardClient(server.target, model="tiny") as rm:
            return (
                await rm.get_score(CHAT_1),
                await rm.get_scores([CHAT_1, CHAT_2]),
                await rm.compare(CHAT_1, CHAT_2),
                await rm.rank([CHAT_1, CHAT_2]),
                await rm.best_of_n(CHAT_1[:1], ["a", "b"]),
                await rm.model_metadata(),
            )

    single, pair, better, ranks, best, info = asyncio.run(run())
    with RewardClient(server.target, model="tiny") as rm:
        assert single == rm.get_score(CHAT_1)
        assert pair == rm.get_scores([CHAT_1, CHAT_2])
    assert better == (pair[0] > pair[1])
    assert ranks == ([0, 1] if pair[0] >= pair[1] else [1, 0])
    assert best.index in (0, 1) and len(best.scores) == 2
    assert info.name == "tiny" and info.backend == "pytorch"


def test_metadata_lists_models_versions_and_settings(server):
    with RewardClient(server.target, model="tiny") as rm:
        info = rm.model_metadata()
        everything = rm.list_models()
    assert [m.name for m in everything] == ["biased", "tiny"]
    assert [(v.version, v.state) for v in info.versions] == [("1", "READY")]
    assert info.max_sequence_length == 512 and info.prompt_format == "chat_template"
    assert info.dtype == "float32" and info.device == "cpu" and info.max_batch_size == 16
