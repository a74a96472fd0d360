"""Shared-prompt Rank: the prompt computed once and its KV cache expanded to the N responses gives the
scores of the N full conversations (fp32, 1e-4), with plain chat templates and with a special-token
format (internlm2), with the last layer cut to the read position or not, with a sliding window, and
falls back to the plain path when the candidates share too little."""

from __future__ import annotations

import random
import time

import pytest

from helpers import WORDS, add_model, config_text, serve_repo
from reward_client import RewardClient
from reward_server.runtime.batching import GroupTask
from reward_server.runtime.shared_prompt_plan import MIN_SHARED_TOKENS, plan_shared_prompt

TOLERANCE = 1e-4


def long_prompt(seed: int, words: int = 120) -> list[dict]:
    rng = random.Random(seed)
    return [
        {"role": "system", "content": "You judge answers."},
        {"role": "user", "content": " ".join(rng.choices(WORDS, k=words))},
    ]


def responses(seed: int, n: int = 6) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(0, 25))) for _ in range(n)] + [""]


def full(prompt: list[dict], response: str) -> list[dict]:
    return prompt + [{"role": "assistant", "content": response}]


def shared_groups(server, model: str) -> int:
    return sum(b.stats.shared_groups for b in server.running.repository.resolve(model, "").instances)


def assert_rank_equals_full_conversations(server, model: str, prompt: list[dict], answers: list[str]) -> None:
    with RewardClient(server.target, model=model) as rm:
        before = shared_groups(server, model)
        ranked = rm.rank_candidates(prompt, answers)
        assert shared_groups(server, model) == before + 1  # the shared path ran
        want = [r.score for r in rm.score([full(prompt, a) for a in answers])]  # plain path, batched
        alone = [rm.get_score(full(prompt, a)) for a in answers]
    assert ranked.scores == pytest.approx(want, rel=TOLERANCE, abs=TOLERANCE)
    assert ranked.scores == pytest.approx(alone, rel=TOLERANCE, abs=TOLERANCE)


@pytest.fixture(scope="module")
def real_backend(tiny_checkpoint):
    from reward_server.backends.pytorch import PyTorchBackend
    from reward_server.checkpoint import read_checkpoint

    return PyTorchBackend(read_checkpoint(tiny_checkpoint), "cpu", "float32")


def test_plan_shared_prompt_splits_at_common_prefix_when_long_enough():
    prefix = tuple(range(100, 100 + MIN_SHARED_TOKENS + 3))
    group = plan_shared_prompt([prefix + (1, 2), prefix + (3,), prefix + (1, 4, 5)])
    assert group is not None
    assert group.prefix == prefix  # (1,) is common to two only
    assert group.suffixes == ((1, 2), (3,), (1, 4, 5))
    assert group.tokens == prefix + (1, 2, 3, 1, 4, 5)


def test_plan_shared_prompt_keeps_a_token_per_suffix_when_one_candidate_is_the_prefix():
    prefix = tuple(range(100, 100 + MIN_SHARED_TOKENS + 3))
    group = plan_shared_prompt([prefix, prefix + (7,)])
    assert group is not None and group.prefix == prefix[:-1]
    assert group.suffixes == (prefix[-1:], prefix[-1:] + (7,))


def test_plan_shared_prompt_declines_when_prefix_short_or_one_candidate():
    assert plan_shared_prompt([(1, 2, 3), (1, 2, 4)]) is None
    assert plan_shared_prompt([tuple(range(200))]) is None
    assert plan_shared_prompt([tuple(range(200)), (5,) + tuple(range(199))]) is None


def test_rank_candidates_scores_equal_full_conversations_when_prompt_shared(tiny_checkpoint, tmp_path):
    add_model(tmp_path, "m", tiny_checkpoint)
    with serve_repo(tmp_path) as server:
        assert_rank_equals_full_conversations(server, "m", long_prompt(1), responses(2))


def test_rank_candidates_scores_equal_full_conversations_when_format_has_special_tokens(seed_repository):
    models = ("internlm2", "mistral")  # reward token after the response; BOS framing
    with serve_repo(seed_repository, model_control_mode="explicit", load_models=models) as server:
        for model in models:
            assert_rank_equals_full_conversations(server, model, long_prompt(3, 80), responses(4))


def test_rank_candidates_take_plain_path_when_prompt_short(tiny_checkpoint, tmp_path):
    add_model(tmp_path, "m", tiny_checkpoint)
    with serve_repo(tmp_path) as server, RewardClient(server.target, model="m") as rm:
        prompt = [{"role": "user", "content": "hi"}]
        ranked = rm.rank_candidates(prompt, ["a", "b c"])
        want = [r.score for r in rm.score([full(prompt, a) for a in ["a", "b c"]])]
        assert shared_groups(server, "m") == 0
    assert ranked.scores == pytest.approx(want, rel=TOLERANCE, abs=TOLERANCE)


def test_rank_candidates_take_plain_path_when_truncation_cuts_the_prompt(tiny_checkpoint, tmp_path):
    add_model(tmp_path, "m", tiny_checkpoint, config_text("m", reward="max_sequence_length: 64"))
    prompt, answers = long_prompt(5), responses(6)
    with serve_repo(tmp_path) as server, RewardClient(server.target, model="m") as rm:
        ranked = rm.rank_candidates(prompt, answers)
        want = [r.score for r in rm.score([full(prompt, a) for a in answers])]
        assert shared_groups(server, "m") == 0  # left truncation cut each candidate at a different place
    assert all(r.num_truncated_tokens > 0 for r in ranked.results)
    assert ranked.scores == pytest.approx(want, rel=TOLERANCE, abs=TOLERANCE)


def test_rank_conversations_take_plain_path_when_sent_as_full_conversations(tiny_checkpoint, tmp_path):
    add_model(tmp_path, "m", tiny_checkpoint)
    prompt, answers = long_prompt(7), responses(8, 3)
    with serve_repo(tmp_path) as server, RewardClient(server.target, model="m") as rm:
        conversations = rm.rank_conversations([full(prompt, a) for a in answers])
        candidates = rm.rank_candidates(prompt, answers)
        assert shared_groups(server, "m") == 1  # the candidates only
    assert candidates.order == conversations.order
    assert candidates.scores == pytest.approx(conversations.scores, rel=TOLERANCE, abs=TOLERANCE)


def test_batcher_runs_a_shared_group_alone_when_inputs_wait_beside_it(real_backend):
    from test_batching import make

    batcher, backend = make(real_backend, max_batch_size=8, max_queue_delay_s=0.0)
    backend.gate.clear()  # hold the thread on a first batch so that the rest queue up together
    first = batcher.submit([[5, 6]], None)
    for _ in range(500):  # bounded: until the thread has taken the first input and waits at the gate
        if not batcher.pending():
            break
        time.sleep(0.01)
    prefix, suffixes = tuple(range(10, 60)), ((7,), (8, 9))
    group = plan_shared_prompt([prefix + s for s in suffixes])
    assert group is not None
    task = batcher.submit_task(
        group.tokens,
        GroupTask(lambda: real_backend.score_shared_prompt(prefix, suffixes), group.computed_tokens),
        None,
    )
    rest = batcher.submit([[5, 7], [5, 8]], None)
    backend.gate.set()
    scores = [scored.score for scored in task.result(10)]
    [f.result(10) for f in first + rest]
    batcher.close()
    assert [len(b) for b in backend.batches] == [1, 2]  # the plain inputs never joined the group
    assert batcher.stats.shared_groups == 1 and batcher.stats.computed == 5
    assert scores == pytest.approx(real_backend.score_batch([prefix + s for s in suffixes]), rel=TOLERANCE)


@pytest.mark.parametrize("last_position_only", [True, False])
@pytest.mark.parametrize("architecture", ["llama", "mistral"])
def test_shared_prompt_scores_equal_full_sequences(tmp_path, architecture, last_position_only):
    """The backend's own two paths on the same sequences; mistral's window (8) is shorter than the
    prefix, so most of the prefix's keys lie outside it."""
    from reward_server.backends.pytorch import PyTorchBackend
    from reward_server.backends.settings import PyTorchSettings
    from test_serving_forward import tiny_architecture

    config = PyTorchSettings(torchscript=True, intra_op_threads=0, last_position_only=last_position_only)
    backend = PyTorchBackend(tiny_architecture(tmp_path, architecture), "cpu", "float32", config)
    assert backend.last_position == last_position_only
    rng = random.Random(9)
    prefix = [rng.randrange(5, 500) for _ in range(40)]
    suffixes = [[rng.randrange(5, 500) for _ in range(n)] for n in (1, 6, 13, 3)]
    shared = backend.score_shared_prompt(prefix, suffixes)
    assert shared == pytest.approx(backend.score_batch([prefix + s for s in suffixes]), rel=1e-5, abs=1e-5)


def test_shared_prompt_scores_equal_full_sequences_when_attention_is_eager(tmp_path):
    """An eager-attention model (test_serving_forward.eager_attention_llama) is checked at load against its
    own eager forward and keeps the shared prompt: its prompt runs under an explicit causal mask (eager
    attention given no mask attends every key) and its masks are additive."""
    from reward_server.backends.pytorch import PyTorchBackend
    from test_serving_forward import eager_attention_llama

    backend = PyTorchBackend(eager_attention_llama(tmp_path), "cpu", "float32")
    assert backend.forward_plan.attention == "eager" and backend.supports_shared_prompt
    rng = random.Random(9)
    prefix = [rng.randrange(5, 500) for _ in range(40)]
    suffixes = [[rng.randrange(5, 500) for _ in range(n)] for n in (1, 6, 13, 3)]
    shared = backend.score_shared_prompt(prefix, suffixes)
    assert shared == pytest.approx(backend.score_batch([prefix + s for s in suffixes]), rel=1e-5, abs=1e-5)
