"""The RL frameworks' routes on the HTTP port: OpenRLHF's /get_reward (through OpenRLHF's own request code),
vLLM's /classify, /pooling and /v1/models. Each reward equals RewardClient's for the same input."""

from __future__ import annotations

import asyncio
import json
import math

import aiohttp
import pytest
from transformers import PreTrainedTokenizerFast

from helpers import CHAT_1, CHAT_2, add_model, close, config_text, serve_repo
from reward_client import RewardClient

TOKEN = "rl-token"


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    # A queue delay, so that concurrent one-sample requests meet in one batch.
    add_model(repo, "tiny", tiny_checkpoint, config=config_text("tiny", max_batch_size=16, delay_us=100_000))
    with serve_repo(repo, http_port=0, max_message_bytes=64 * 1024) as running:
        yield running


@pytest.fixture(scope="module")
def base(server) -> str:
    return f"http://127.0.0.1:{server.server.http.port}"


@pytest.fixture(scope="module")
def rm(server):
    with RewardClient(server.target, model="tiny") as c:
        yield c


@pytest.fixture(scope="module")
def templated(tiny_checkpoint) -> list[str]:
    """What OpenRLHF sends as `query`: the policy's chat-templated text, special tokens included."""
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(tiny_checkpoint))
    return [tokenizer.apply_chat_template(chat, tokenize=False) for chat in (CHAT_1, CHAT_2)]


def post(url: str, body, headers: dict | None = None) -> tuple[int, dict]:
    async def go():
        async with aiohttp.ClientSession() as session:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            async with session.post(
                url, data=data, headers={"Content-Type": "application/json", **(headers or {})}
            ) as r:
                return r.status, await r.json(content_type=None)

    return asyncio.run(go())


def test_get_reward_scores_templated_queries_once_framed_when_openrlhf_posts_them(
    base, rm, templated, tiny_checkpoint
):
    from openrlhf.utils.agent import SingleTurnAgentExecutor

    # OpenRLHF's own request code, unmodified: one sample per request, URLs rotated (two URLs, one sample:
    # only one server is asked).
    executor = SingleTurnAgentExecutor(remote_rm_url=[f"{base}/get_reward", f"{base}/get_reward?model=tiny"])
    answers = asyncio.run(executor._fetch_rewards_via_http(templated[:1], ["prompt"], ["label"]))
    assert len(answers) == 1 and set(answers[0]) == {"rewards", "scores", "extra_logs"}
    # chat_template format: the text is tokenized without adding special tokens, so the template's BOS
    # appears once: the same ids, and score, as the conversation itself and as the tokenizer's ids.
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(tiny_checkpoint))
    ids = tokenizer(templated[0], add_special_tokens=False)["input_ids"]
    assert ids.count(tokenizer.bos_token_id) == 1
    assert close(answers[0]["rewards"][0], rm.get_score(CHAT_1))
    assert close(answers[0]["rewards"][0], rm.score([ids])[0].score)
    status, body = post(
        f"{base}/get_reward", {"query": templated, "prompts": ["a", "b"], "labels": [None, None]}
    )
    assert status == 200 and all(
        close(r, e) for r, e in zip(body["rewards"], rm.get_scores([CHAT_1, CHAT_2]))
    )
    assert body["scores"] == body["rewards"]


def test_get_reward_answers_empty_lists_when_openrlhf_sends_an_empty_shard(base):
    assert post(f"{base}/get_reward", {"query": [], "prompts": [], "labels": []}) == (
        200,
        {"rewards": [], "scores": [], "extra_logs": {}},
    )


def test_get_reward_batches_across_requests_when_many_workers_send_one_sample(base, server, rm):
    texts = [f"sample number {i} of the rollout" for i in range(12)]

    async def many() -> list[float]:
        async with aiohttp.ClientSession() as session:

            async def one(text):
                async with session.post(
                    f"{base}/get_reward", json={"query": [text], "prompts": [""], "labels": [""]}
                ) as r:
                    return (await r.json())["rewards"][0]

            return await asyncio.gather(*(one(t) for t in texts))

    rewards = asyncio.run(many())
    assert all(close(r, e.score) for r, e in zip(rewards, rm.score(texts)))

    async def stats():
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/v2/models/tiny/stats") as r:
                return await r.json()

    batches = asyncio.run(stats())["model_stats"][0]["batch_stats"]
    assert max(b["batch_size"] for b in batches) > 1


@pytest.mark.parametrize("field", ["use_activation", "activation"])
def test_classify_returns_the_raw_score_when_activation_is_off_and_its_sigmoid_by_default(
    base, rm, templated, field
):
    expected = [r.score for r in rm.score(templated)]
    status, raw = post(
        f"{base}/classify", {"model": "tiny", "input": templated, field: False, "extra": "ignored"}
    )
    assert (
        status == 200
        and raw["object"] == "list"
        and raw["model"] == "tiny"
        and raw["id"].startswith("classify-")
    )
    assert [d["index"] for d in raw["data"]] == [0, 1] and raw["data"][0]["num_classes"] == 1
    assert all(close(d["probs"][-1], e) for d, e in zip(raw["data"], expected))
    assert raw["usage"]["prompt_tokens"] == sum(r.num_tokens for r in rm.score(templated))
    # veRL: its reward model's path as `model`, one templated string, use_activation off, data[-1].probs[-1]
    status, one = post(
        f"{base}/classify", {"model": "/models/rm/tiny", "input": templated[1], "use_activation": False}
    )
    assert close(one["data"][-1]["probs"][-1], expected[1])
    status, default = post(f"{base}/classify", {"input": templated})
    assert all(close(d["probs"][0], 1 / (1 + math.exp(-e))) for d, e in zip(default["data"], expected))


@pytest.mark.parametrize("kind", ["ids", "batch of ids", "messages", "content parts"])
def test_classify_and_pooling_score_each_input_form_as_reward_client(base, rm, kind):
    if kind == "ids":
        body, expected = {"input": [5, 6, 7]}, rm.score([[5, 6, 7]])
    elif kind == "batch of ids":
        body, expected = {"input": [[5, 6, 7], [8, 9]]}, rm.score([[5, 6, 7], [8, 9]])
    elif kind == "messages":
        body, expected = {"messages": CHAT_1}, rm.score([CHAT_1])
    else:
        parts = [{**m, "content": [{"type": "text", "text": m["content"]}]} for m in CHAT_1]
        body, expected = {"messages": parts}, rm.score([CHAT_1])
    status, classified = post(f"{base}/classify", {**body, "use_activation": False})
    assert status == 200 and all(close(d["probs"][0], e.score) for d, e in zip(classified["data"], expected))
    status, pooled = post(f"{base}/pooling", {**body, "task": "reward"})
    assert status == 200 and [d["object"] for d in pooled["data"]] == ["pooling"] * len(expected)
    assert all(close(d["data"][0], e.score) for d, e in zip(pooled["data"], expected))


def test_v1_models_lists_the_served_models_as_vllm_does(base):
    async def go():
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/v1/models") as r:
                return await r.json()

    listed = asyncio.run(go())
    assert listed["object"] == "list" and [m["id"] for m in listed["data"]] == ["tiny"]
    assert listed["data"][0]["object"] == "model"


BAD = {
    "malformed json": (b"{nope", "not valid JSON"),
    "not an object": (b"[]", "must be a JSON object"),
    "query not a list": ({"query": "text"}, "'query' must be a list of strings"),
    "query of numbers": ({"query": [1, 2]}, "'query' must be a list of strings"),
    "input dict": ({"input": {"a": 1}}, "'input' must be"),
    "mixed input": ({"input": ["a", 1]}, "mixes types"),
    "empty input": ({"input": []}, "'input' must be"),
    "activation not bool": ({"input": "a", "use_activation": "no"}, "must be a boolean"),
    "bad role": ({"messages": [{"role": "robot", "content": "x"}]}, "unknown role"),
    "unknown model": ({"model": "nope", "input": "a"}, "nope"),
    "negative id": ({"input": [[5, -1]]}, "negative token id"),
    "huge id": ({"input": [[5, 10**30]]}, "does not fit in 64 bits"),
    "embedding task": ({"input": "a", "task": "embed"}, "not served"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_rl_routes_answer_4xx_with_a_message_and_keep_serving_when_the_body_is_bad(base, rm, case):
    body, fragment = BAD[case]
    path = "/get_reward" if "query" in case else "/pooling" if "task" in case else "/classify"
    status, answer = post(f"{base}{path}", body)
    assert 400 <= status < 500 and fragment in answer["error"], answer
    status, answer = post(f"{base}/get_reward", {"query": ["still serving"]})
    assert status == 200 and close(answer["rewards"][0], rm.score(["still serving"])[0].score)


def test_rl_routes_refuse_a_huge_body_with_413_when_over_the_message_limit(base):
    status, answer = post(f"{base}/get_reward", {"query": ["x" * 1000] * 100})
    assert status == 413 and answer["error"]


def test_rl_routes_need_the_token_and_a_model_name_when_the_server_has_auth_and_two_models(
    tiny_checkpoint, tiny_checkpoint_b, tmp_path, rm
):
    add_model(tmp_path, "tiny", tiny_checkpoint)
    add_model(tmp_path, "other", tiny_checkpoint_b)
    with serve_repo(tmp_path, http_port=0, auth_token=TOKEN) as running:
        url = f"http://127.0.0.1:{running.server.http.port}/get_reward"
        body = {"query": ["hello"]}
        assert post(url, body)[0] == 401
        assert post(url, body, {"Authorization": "Bearer wrong"})[0] == 403
        status, answer = post(url, body, {"Authorization": f"Bearer {TOKEN}"})
        assert status == 400 and "name one with ?model=NAME" in answer["error"]
        status, answer = post(url + "?model=tiny", body, {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and close(answer["rewards"][0], rm.score(["hello"])[0].score)
