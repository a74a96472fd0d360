"""OpenRLHF: `reward_func(queries, prompts, labels)` for `--reward.remote_url <this file>.py`.

    export REWARD_SERVER_ADDRESS=rm-host:50051 REWARD_SERVER_MODEL=rm   # in the Ray job's env_vars
    python -m openrlhf.cli.train_ppo_ray ... \
        --reward.remote_url \
            "$(python -c 'import reward_client.integrations.openrlhf as m; print(m.__file__)')"

(or the ready copy client/examples/openrlhf_reward_func.py). This file uses absolute imports only, since
OpenRLHF loads it by path, not as part of its package.

How OpenRLHF calls it (openrlhf/utils/agent.py, `SingleTurnAgentExecutor`, OpenRLHF 0.11.2): a remote_url
ending in ".py" is loaded with `importlib.util.spec_from_file_location("reward_func", path)` and its
`reward_func` attribute is called through `asyncio.to_thread(reward_func, [query], [prompt], [label])`,
one sample per call, from every rollout at once. `query` is
`hf_tokenizer.decode(prompt_ids + response_ids, skip_special_tokens=False)`: the policy's full
chat-templated text with its special tokens. The result is read as a dict: `rewards` (the reward),
`scores` (used for dynamic filtering; `rewards` when absent) and `extra_logs` (a dict of per-sample
values), each turned into `torch.tensor([value])` per sample (samples_generator.py), so the values are
1-D tensors of one float per query, as OpenRLHF's own example reward_func returns.

What is sent: each query as a pre-formatted `text` input of the served model (the server adds its prompt
format's frame and reward token around it); prompts and labels are not sent. One Score per call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reward_client.integrations._clients import CLIENTS, ClientSettings


def score_queries(queries: Sequence[str], settings: ClientSettings | None = None) -> list[float]:
    """The served model's score of each query (full templated text), in order."""
    for i, query in enumerate(queries):
        if not isinstance(query, str):
            raise TypeError(f"queries[{i}] must be a string, got {type(query).__name__}")
    if not queries:
        return []
    client = CLIENTS.sync_client(settings or ClientSettings.from_env())
    return [r.score for r in client.score(list(queries))]


def _as_tensor(values: list[float]) -> Any:
    # OpenRLHF runs with torch; it is imported here, on the first call, so that importing this module
    # (and reward_client) never pulls torch in. Without torch (not an OpenRLHF process) lists are returned.
    try:
        import torch
    except ImportError:
        return values
    return torch.tensor(values, dtype=torch.float32)


def reward_func(
    queries: Sequence[str], prompts: Sequence[str] | None = None, labels: Sequence[Any] | None = None
) -> dict[str, Any]:
    """OpenRLHF's reward function: {"rewards", "scores", "extra_logs"} for the given queries."""
    rewards = _as_tensor(score_queries(queries))
    return {"rewards": rewards, "scores": rewards, "extra_logs": {}}


__all__ = ["reward_func", "score_queries"]
