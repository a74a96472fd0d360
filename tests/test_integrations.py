"""reward_client.integrations: TRL, veRL and OpenRLHF reward functions against a real server.

Each function is called the way its framework calls it: TRL and OpenRLHF through their own code (a real
`GRPOTrainer` step; OpenRLHF's `SingleTurnAgentExecutor`, which loads the .py file given as
`--reward.remote_url`); veRL cannot be installed next to this project's transformers pin (veRL 0.9.1 needs
transformers >= 5.5.3), so its loader and call sites are replayed line for line (cited at each test).
Every reward must equal what RewardClient gives for the same input, and the number of RPCs is read from
the server's own metrics.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import pickle
import textwrap
from copy import deepcopy
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from helpers import add_model, run_client_only, serve_repo
from reference import close
from reward_client import InvalidArgumentError, RewardClient
from reward_client.integrations import ClientSettings, close_clients
from reward_client.integrations import openrlhf as rc_openrlhf
from reward_client.integrations import trl as rc_trl
from reward_client.integrations import verl as rc_verl

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "client" / "examples" / "openrlhf_reward_func.py"
REL = 1e-6
# Where the server may batch the inputs differently from the RewardClient call compared against (concurrent
# single-sample calls, chunks over replicas), float32 results may differ by an ulp or two of the padded
# forward: compared within 1e-5 there, and within 1e-6 where the request is the same.
REL_REBATCHED = 1e-5


def same(a: float, b: float, rel: float = REL) -> bool:
    return close(a, b, rel=rel)


@pytest.fixture(scope="module")
def server(tiny_checkpoint, tmp_path_factory):
    repo = tmp_path_factory.mktemp("integrations_repo")
    add_model(repo, "tiny", tiny_checkpoint)
    with serve_repo(repo) as running:
        yield running
    close_clients()


@pytest.fixture(scope="module")
def rm(server):
    with RewardClient(server.target, model="tiny") as client:
        yield client


def rpcs(server, method: str) -> float:
    value = server.running.metrics.registry.get_sample_value(
        "reward_request_success_total", {"model": "tiny", "version": "1", "method": method}
    )
    return value or 0.0


class RpcCounter:
    """Score and Rank RPCs the server answered while the block ran."""

    def __init__(self, server) -> None:
        self.server = server

    def __enter__(self) -> RpcCounter:
        self.start = {m: rpcs(self.server, m) for m in ("Score", "Rank")}
        return self

    def __exit__(self, *exc: object) -> None:
        self.sent = {m: rpcs(self.server, m) - self.start[m] for m in ("Score", "Rank")}


# --- settings -------------------------------------------------------------------------------------


def test_client_settings_read_replicas_and_options_when_set_in_the_environment():
    env = {
        "REWARD_SERVER_ADDRESS": "a:1, b:2",
        "REWARD_SERVER_MODEL": "rm",
        "REWARD_SERVER_TOKEN": "t",
        "REWARD_SERVER_TIMEOUT": "5",
        "REWARD_SERVER_CHUNK_SIZE": "0",
        "REWARD_SERVER_WAIT_FOR_READY": "0",
    }
    settings = ClientSettings.from_env(env)
    assert settings == ClientSettings(
        target=("a:1", "b:2"), model="rm", token="t", timeout=5.0, chunk_size=None, wait_for_ready=False
    )
    assert (
        ClientSettings.from_env(env, target="c:3", model=None).target == "c:3"
    )  # arguments win, None does not
    assert ClientSettings(["a:1", "b:2"]) == ClientSettings("a:1,b:2") == ClientSettings(("a:1", "b:2"))
    assert ClientSettings.from_env({}, target="a:1", chunk_size=0).chunk_size is None  # veRL's reward_kwargs


@pytest.mark.parametrize(
    "env, message",
    [
        ({}, "REWARD_SERVER_ADDRESS"),
        ({"REWARD_SERVER_ADDRESS": "a:1", "REWARD_SERVER_TIMEOUT": "soon"}, "REWARD_SERVER_TIMEOUT"),
        ({"REWARD_SERVER_ADDRESS": "a:1", "REWARD_SERVER_TLS": "maybe"}, "REWARD_SERVER_TLS"),
    ],
)
def test_client_settings_raise_naming_the_variable_when_the_environment_is_wrong(env, message):
    with pytest.raises(ValueError, match=message):
        ClientSettings.from_env(env)


# --- import-light ---------------------------------------------------------------------------------

# What the script must run without: the heavy libraries, the server and the frameworks themselves.
BLOCKED = {"torch", "transformers", "tokenizers", "safetensors", "numpy", "reward_server", "trl", "verl"}
BLOCKED |= {"openrlhf", "datasets", "accelerate"}
INTEGRATIONS_SCRIPT = textwrap.dedent(
    """
    import importlib.util, json, sys
    import reward_client.integrations
    from reward_client.integrations import openrlhf, trl, verl
    target, prompt, completions, query, example = sys.argv[1:]
    reward = trl.reward_func(target, model="tiny")
    spec = importlib.util.spec_from_file_location("reward_func", example)  # as OpenRLHF loads it
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    print(json.dumps({
        "trl": reward(prompts=[prompt] * 2, completions=json.loads(completions), completion_ids=None),
        "verl": verl.compute_score("src", json.loads(completions)[0], None, {}, target=target, model="tiny"),
        "openrlhf": module.reward_func([query], [prompt], [None])["rewards"],
    }))
    assert not any(m.split(".")[0] in BLOCKED for m in sys.modules), sorted(sys.modules)
    """
)


def test_integrations_import_and_score_without_torch_or_frameworks_when_they_are_absent(server, rm):
    completions = ["A reward model scores answers.", "No idea."]
    query = "<s><|im_start|>user\nWhat is a reward model?<|im_end|>\n"
    answer = run_client_only(
        INTEGRATIONS_SCRIPT,
        server.target,
        "What is a reward model?",
        json.dumps(completions),
        query,
        str(EXAMPLE),
        blocked=BLOCKED,
        REWARD_SERVER_ADDRESS=server.target,
        REWARD_SERVER_MODEL="tiny",
    )
    expected = rm.rank_candidates(
        [{"role": "user", "content": "What is a reward model?"}], completions
    ).scores
    assert all(same(a, b) for a, b in zip(answer["trl"], expected, strict=True))
    assert same(answer["verl"], rm.score([completions[0]])[0].score)
    assert isinstance(answer["openrlhf"], list) and same(answer["openrlhf"][0], rm.score([query])[0].score)


# --- TRL ------------------------------------------------------------------------------------------

PROMPT = [
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": "What is a reward model?"},
]


@pytest.fixture(scope="module")
def make_trainer(tiny_checkpoint, tmp_path_factory):
    """A real trl.GRPOTrainer on CPU: a tiny random causal LM as the policy, our functions as rewards."""
    from datasets import Dataset
    from transformers import AutoConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from trl import GRPOConfig, GRPOTrainer

    tokenizer = PreTrainedTokenizerFast.from_pretrained(tiny_checkpoint)
    tokenizer.model_input_names = ["input_ids", "attention_mask"]  # generate() takes no token_type_ids
    config = AutoConfig.from_pretrained(tiny_checkpoint)
    out = tmp_path_factory.mktemp("grpo")

    def make(reward_funcs, prompts):
        # "model" is a dataset column too: TRL passes every column as a keyword to each reward function.
        dataset = Dataset.from_dict({"prompt": prompts, "model": ["policy-v1"] * len(prompts)})
        args = GRPOConfig(
            output_dir=str(out),
            per_device_train_batch_size=4,
            num_generations=4,
            max_completion_length=6,
            max_steps=1,
            report_to=[],
            use_cpu=True,
            logging_steps=1,
            save_strategy="no",
            bf16=False,
            seed=0,
        )
        return GRPOTrainer(
            model=LlamaForCausalLM(config),
            reward_funcs=reward_funcs,
            args=args,
            train_dataset=dataset,
            processing_class=tokenizer,
        )

    return make


def test_trl_grpo_step_sends_one_rank_per_group_and_logs_client_scores_when_trained(server, rm, make_trainer):
    sync = rc_trl.reward_func(server.target, model="tiny")
    agen = rc_trl.async_reward_func(server.target, model="tiny", name="tiny_async")
    trainer = make_trainer([sync, agen], [PROMPT] * 4)
    assert trainer.reward_func_names == ["tiny", "tiny_async"]
    with RpcCounter(server) as sent:
        trainer.train()  # one step: 1 prompt x 4 generations = one call of each reward function
    assert sent.sent == {"Score": 0, "Rank": 2}
    logged = trainer.state.log_history[0]
    assert "rewards/tiny/mean" in logged and "rewards/tiny_async/mean" in logged
    prompts, completions = list(trainer._logs["prompt"]), list(trainer._logs["completion"])
    assert len(completions) == 4 and all(p == PROMPT for p in prompts)
    contents = [c[0]["content"] for c in completions]
    ranked = rm.rank_candidates(PROMPT, contents).scores
    scored = rm.get_scores([PROMPT + c for c in completions])
    for name in ("tiny", "tiny_async"):
        rewards = list(trainer._logs["rewards"][name])
        assert all(same(a, b) for a, b in zip(rewards, ranked, strict=True))
        assert all(close(a, b) for a, b in zip(rewards, scored, strict=True))  # Rank and Score agree


def _calculate(trainer, prompts, completions):
    """TRL's own reward step (GRPOTrainer._calculate_rewards) on given completions, as
    `_generate_and_score_completions` calls it: inputs are the dataset rows, one per completion."""
    inputs = [{"prompt": p, "model": "policy-v1"} for p in prompts]
    completion_ids = [[1, 2, 3] for _ in completions]
    return trainer._calculate_rewards(inputs, prompts, completions, completion_ids).tolist()


def test_trl_rewards_equal_client_scores_with_one_score_when_prompts_differ(server, rm, make_trainer):
    sync = rc_trl.reward_func(server.target, model="tiny")
    agen = rc_trl.async_reward_func(server.target, model="tiny", name="tiny_async")
    trainer = make_trainer([sync, agen], [PROMPT] * 4)
    other = [{"role": "user", "content": "Write a haiku about gradients."}]
    prompts = [PROMPT, PROMPT, other, other]
    completions = [
        [{"role": "assistant", "content": text}]
        for text in ["It scores answers.", "No idea.", "Loss descends the slope", "🙂 café"]
    ]
    with RpcCounter(server) as sent:
        rows = _calculate(trainer, prompts, completions)
    assert sent.sent == {"Score": 2, "Rank": 0}
    expected = rm.get_scores([p + c for p, c in zip(prompts, completions)])
    assert all(same(row[0], e) and same(row[1], e) for row, e in zip(rows, expected, strict=True))


def test_trl_plain_text_rewards_equal_client_scores_when_the_dataset_is_plain_text(server, rm, make_trainer):
    chat = rc_trl.reward_func(server.target, model="tiny")
    text = rc_trl.reward_func(server.target, model="tiny", name="tiny_text", plain_text="text")
    trainer = make_trainer([chat, text], ["The sky is"] * 4)
    prompts, completions = ["The sky is"] * 3, [" blue.", " green today", " 😀"]
    with RpcCounter(server) as sent:
        rows = _calculate(trainer, prompts, completions)
    assert sent.sent == {"Score": 1, "Rank": 1}  # the group as one Rank (chat); the texts as one Score
    as_chat = rm.rank_candidates([{"role": "user", "content": "The sky is"}], completions).scores
    as_text = [r.score for r in rm.score([p + c for p, c in zip(prompts, completions)])]
    assert all(same(row[0], a) and same(row[1], b) for row, a, b in zip(rows, as_chat, as_text, strict=True))


def test_trl_reward_pickles_with_its_name_and_async_form_is_detected_when_given_to_trl(server):
    from trl.trainer.utils import get_callable_name, is_async_callable

    sync = rc_trl.reward_func(server.target, model="tiny")
    agen = rc_trl.async_reward_func(server.target, model="tiny", name="rm_async")
    assert (get_callable_name(sync), is_async_callable(sync)) == ("tiny", False)
    assert (get_callable_name(agen), is_async_callable(agen)) == ("rm_async", True)
    copy = pickle.loads(pickle.dumps(sync))
    assert copy.__name__ == "tiny" and copy.config == sync.config


def test_trl_plan_raises_when_a_completion_has_non_text_parts():
    config = rc_trl.TrlRewardConfig(ClientSettings("a:1"))
    with pytest.raises(ValueError, match="completions\\[0\\]\\[0\\].*'image'"):
        rc_trl.plan_call([PROMPT], [[{"role": "assistant", "content": [{"type": "image"}]}]], config)
    with pytest.raises(ValueError, match="2 prompts and 1 completions"):
        rc_trl.plan_call([PROMPT, PROMPT], [[]], config)


# --- veRL -----------------------------------------------------------------------------------------
# veRL 0.9.1 requires transformers >= 5.5.3 (this project pins 4.57), so it is not installed here; these
# tests replay its loader and its two call sites exactly.


def _verl_custom_reward_fn(path: str, name: str, reward_kwargs: dict):
    """verl/trainer/ppo/reward.py:get_custom_reward_fn with verl/utils/import_utils.py:load_module: import the
    module (`pkg://`) or load the file, take `name`, wrap it so reward_kwargs win over call-time kwargs."""
    import importlib
    import importlib.util

    if path.startswith("pkg://"):
        module = importlib.import_module(path[len("pkg://") :].replace("/", "."))
    else:  # a file path: a module of its own, under a derived name
        spec = importlib.util.spec_from_file_location(f"custom_module_{hash(os.path.abspath(path))}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    raw_fn = getattr(module, name)

    def _call_with_kwargs(raw_fn, extra_kwargs, *args, **kwargs):
        return raw_fn(*args, **{**kwargs, **extra_kwargs})

    async def _call_with_kwargs_async(raw_fn, extra_kwargs, *args, **kwargs):
        return await raw_fn(*args, **{**kwargs, **extra_kwargs})

    if not inspect.iscoroutinefunction(raw_fn):
        return partial(_call_with_kwargs, raw_fn, reward_kwargs)
    return partial(_call_with_kwargs_async, raw_fn, reward_kwargs)


VERL_SAMPLES = [
    ("It scores answers.", {"index": 0, "question": "What is a reward model?"}),
    ("No idea.", {"index": 1, "question": "What is a reward model?"}),
    ("####  42", {"index": 2}),  # no question: the response alone, as text
    ("", {"index": 3, "question": "Say nothing."}),  # an empty response (EOS first) is still a conversation
    (
        "Sure.",
        {
            "index": 4,
            "question": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Agree?"}],
        },
    ),
    # veRL keeps non-tensor data in numpy object arrays: a list of messages may arrive as one
    ("Yes.", {"index": 5, "question": np.array([{"role": "user", "content": "Agree?"}], dtype=object)}),
]


def _verl_expected(rm) -> list[float]:
    items = [rc_verl.score_input(s, info, "question") for s, info in VERL_SAMPLES]
    assert items[2] == "####  42" and items[0][-1] == {"role": "assistant", "content": "It scores answers."}
    return [r.score for r in rm.score(items)]


@pytest.mark.parametrize("name", ["compute_score", "compute_score_async"])
def test_verl_compute_score_equals_client_score_when_the_reward_loop_calls_it(server, rm, name):
    compute_score = _verl_custom_reward_fn(
        "pkg://reward_client.integrations.verl", name, {"target": server.target, "model": "tiny"}
    )

    async def run_single(solution_str, extra_info):
        # verl/experimental/reward_loop/reward_manager/naive.py:NaiveRewardManager.run_single; the reward
        # loop runs every sample of a batch at once (reward_loop.py:compute_score_batch).
        extra_info = {**extra_info, "num_turns": None, "rollout_reward_scores": {}}
        kwargs = dict(
            data_source="openai/gsm8k",
            solution_str=solution_str,
            ground_truth="42",
            extra_info=extra_info,
            reward_router_address="127.0.0.1:1",
            reward_model_tokenizer=None,
        )
        if inspect.iscoroutinefunction(compute_score):
            return await compute_score(**kwargs)
        return await asyncio.get_running_loop().run_in_executor(None, lambda: compute_score(**kwargs))

    async def run_batch():
        return await asyncio.gather(*(run_single(s, info) for s, info in VERL_SAMPLES))

    with RpcCounter(server) as sent:
        scores = asyncio.run(run_batch())
    assert sent.sent == {"Score": len(VERL_SAMPLES), "Rank": 0}  # one Score per sample, batched by the server
    assert all(isinstance(s, float) for s in scores)
    assert all(same(a, b, REL_REBATCHED) for a, b in zip(scores, _verl_expected(rm), strict=True))


def test_async_clients_are_dropped_when_their_event_loop_has_closed(server):
    from reward_client.integrations._clients import CLIENTS

    async def one():
        return await rc_verl.compute_score_async("src", "text", None, {}, target=server.target, model="tiny")

    first, second = asyncio.run(one()), asyncio.run(one())  # a new loop each time, as asyncio.run makes
    assert first == second
    # The first loop's client was dropped when the second loop made its own; only the last one is left.
    assert sum(loop.is_closed() for loop in CLIENTS._async) == 1


@pytest.mark.parametrize(
    "path", ["pkg://reward_client.integrations.verl", rc_verl.__file__], ids=["pkg", "file"]
)
def test_verl_compute_score_batch_sends_one_score_when_the_batch_manager_calls_it(server, rm, path):
    compute_score = _verl_custom_reward_fn(
        path, "compute_score_batch", {"target": server.target, "model": "tiny"}
    )
    # verl/workers/reward_manager/batch.py:BatchRewardManager.verify: non_tensor_batch columns are numpy
    # object arrays; each extra_info gets "rollout_reward_scores".
    extras = np.array([{**info, "rollout_reward_scores": {}} for _, info in VERL_SAMPLES], dtype=object)
    with RpcCounter(server) as sent:
        scores = compute_score(
            data_sources=np.array(["openai/gsm8k"] * len(VERL_SAMPLES), dtype=object),
            solution_strs=[s for s, _ in VERL_SAMPLES],
            ground_truths=["42"] * len(VERL_SAMPLES),
            extra_infos=extras,
        )
    assert sent.sent == {"Score": 1, "Rank": 0}
    assert all(same(a, b) for a, b in zip(scores, _verl_expected(rm), strict=True))


def test_verl_compute_score_raises_invalid_argument_when_an_empty_response_has_no_prompt(server):
    with pytest.raises(InvalidArgumentError, match="empty text"):
        rc_verl.compute_score("src", "", None, {}, target=server.target, model="tiny")


def test_verl_batch_spreads_chunks_over_replicas_when_given_two_addresses(
    server, rm, tiny_checkpoint, tmp_path
):
    add_model(tmp_path, "tiny", tiny_checkpoint)
    solutions = [f"answer number {i}" for i in range(12)]
    expected = [r.score for r in rm.score(solutions)]
    with serve_repo(tmp_path) as second:
        before = (rpcs(server, "Score"), rpcs(second, "Score"))
        # One cached client per settings: it connects to the second replica in the background, and
        # round_robin uses a replica once connected, so a few calls may go to the first one only.
        calls = 0
        while calls < 20:
            calls += 1
            scores = rc_verl.compute_score_batch(
                ["src"] * 12,
                solutions,
                [None] * 12,
                [{}] * 12,
                target=f"{server.target},{second.target}",
                model="tiny",
                chunk_size=2,
            )
            assert all(same(a, b, REL_REBATCHED) for a, b in zip(scores, expected, strict=True))
            sent = (rpcs(server, "Score") - before[0], rpcs(second, "Score") - before[1])
            if min(sent) > 0:
                break
    assert sum(sent) == 6 * calls and min(sent) > 0, sent  # 12 inputs in chunks of 2, over both replicas


# --- OpenRLHF -------------------------------------------------------------------------------------


class CannedEngine:
    """Stands in for OpenRLHF's vLLM engine (GPU-only): `generate` returns fixed response ids. Generation is
    not under test; what OpenRLHF does with the result (decode, call reward_func, read it) is."""

    def __init__(self, response_ids: list[int]) -> None:
        self.response_ids = response_ids

    async def generate(self, prompt_token_ids, sampling_params, multi_modal_data=None):
        output = SimpleNamespace(token_ids=list(self.response_ids), finish_reason="stop", logprobs=None)
        return SimpleNamespace(outputs=[output])


@pytest.mark.parametrize("path", [EXAMPLE, Path(rc_openrlhf.__file__)], ids=["example", "module"])
def test_openrlhf_rewards_equal_client_scores_when_openrlhf_loads_the_file(
    server, rm, tiny_checkpoint, monkeypatch, path
):
    import torch
    from openrlhf.utils.agent import SingleTurnAgentExecutor
    from transformers import PreTrainedTokenizerFast

    monkeypatch.setenv("REWARD_SERVER_ADDRESS", server.target)
    monkeypatch.setenv("REWARD_SERVER_MODEL", "tiny")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tiny_checkpoint)
    executor = SingleTurnAgentExecutor(remote_rm_url=[str(path)])  # loads reward_func from the .py file
    prompts = [
        tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False)
        for q in ("What is a reward model?", "你好", "Write code: def f(x):")
    ]
    answers = [
        tokenizer("<|im_start|>assistant\n" + a + "<|im_end|>", add_special_tokens=False)["input_ids"]
        for a in ("It scores answers.", "你好！", "return x")
    ]
    params = SimpleNamespace(max_tokens=16, logprobs=None)

    async def rollouts():  # every rollout of a batch at once, as OpenRLHF's vLLM workers run them
        return await asyncio.gather(
            *(
                executor.execute(p, None, deepcopy(params), 256, tokenizer, CannedEngine(a))
                for p, a in zip(prompts, answers)
            )
        )

    with RpcCounter(server) as sent:
        outputs = asyncio.run(rollouts())
    assert sent.sent == {"Score": 3, "Rank": 0}  # one sample per call
    queries = [tokenizer.decode(o["observation_tokens"], skip_special_tokens=False) for o in outputs]
    assert queries[0].startswith("<s><|im_start|>user\nWhat is a reward model?")
    expected = [r.score for r in rm.score(queries)]
    for output, e in zip(outputs, expected, strict=True):
        # openrlhf/trainer/ppo_utils/samples_generator.py: info["reward"] = torch.tensor([reward_val])
        reward = torch.tensor([output["reward"]])
        assert reward.shape == (1,) and same(float(reward[0]), e, REL_REBATCHED)
        assert float(output["scores"][0]) == float(reward[0]) and output["extra_logs"] == {}


def test_openrlhf_reward_func_answers_empty_lists_when_given_no_queries(server, monkeypatch):
    monkeypatch.setenv("REWARD_SERVER_ADDRESS", server.target)
    result = rc_openrlhf.reward_func([], [], [])
    assert result["rewards"].tolist() == [] and result["extra_logs"] == {}
