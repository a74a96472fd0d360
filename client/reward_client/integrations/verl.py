"""veRL: `compute_score` functions for `reward.custom_reward_function` (no veRL import needed).

    reward.custom_reward_function.path=pkg://reward_client.integrations.verl   # or this file's path
    reward.custom_reward_function.name=compute_score       # per sample (naive reward manager / reward loop)
    reward.custom_reward_function.name=compute_score_batch # with reward.reward_manager.name=batch
    reward.custom_reward_function.reward_kwargs.model=rm   # optional: any setting below, else REWARD_SERVER_*

How veRL calls them (verl 0.9.1):
- per sample, `verl/experimental/reward_loop/reward_manager/naive.py` (`NaiveRewardManager.run_single`):
  `compute_score(data_source=..., solution_str=..., ground_truth=..., extra_info=..., **extra_reward_kwargs)`,
  in the loop's default executor (a thread) for a plain function, awaited for a coroutine function
  (`inspect.iscoroutinefunction`), every sample of a batch concurrently; the result is a float or a
  dict with "score";
- batched, `verl/workers/reward_manager/batch.py` (`BatchRewardManager.verify`):
  `compute_score(data_sources=..., solution_strs=..., ground_truths=..., extra_infos=..., **reward_kwargs)`
  -> one score per sample;
- both through `verl/trainer/ppo/reward.py:get_custom_reward_fn`, which loads the object named `name`
  from `path` (`pkg://module` or a file) and merges `custom_reward_function.reward_kwargs` into the
  keyword arguments of every call. veRL adds `reward_router_address` / `reward_model_tokenizer` when it
  runs a reward router: ignored here.

What is sent: `solution_str` is the decoded response only (`tokenizer.decode(valid_response_ids,
skip_special_tokens=True)` in both managers: no prompt, no chat template). It is scored as
- a conversation `[{"role": "user", "content": q}, {"role": "assistant", "content": solution_str}]` when
  `prompt_key` (a reward kwarg, default "question": veRL's data_preprocess scripts store the raw
  question in `extra_info["question"]`) names an `extra_info` entry; that entry may also be a list of
  {"role", "content"} messages (the whole prompt), which then precedes the assistant turn;
- otherwise a pre-formatted `text` input: `solution_str` as it is.
A per-sample call is one Score of one input (the server batches concurrent calls); a batched call is one
Score of all inputs (chunked by `chunk_size`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# Absolute imports: veRL may load this module by file path (`path=/.../verl.py`) as well as `pkg://`.
from reward_client._types import Chat
from reward_client.integrations._clients import CLIENTS, ClientSettings
from reward_client.integrations._messages import is_conversational, to_messages

DEFAULT_PROMPT_KEY = "question"

# The reward kwargs (custom_reward_function.reward_kwargs) that configure the client.
_CLIENT_KEYS = (
    "target",
    "model",
    "version",
    "token",
    "tls",
    "ca_cert",
    "timeout",
    "chunk_size",
    "wait_for_ready",
)


def _settings(kwargs: Mapping[str, Any]) -> ClientSettings:
    return ClientSettings.from_env(**{k: kwargs.get(k) for k in _CLIENT_KEYS})


def score_input(
    solution_str: str, extra_info: Mapping[str, Any] | None, prompt_key: str | None
) -> Chat | str:
    """The input one veRL sample is scored as (pure: tested without a server)."""
    if not isinstance(solution_str, str):
        raise TypeError(f"solution_str must be a string, got {type(solution_str).__name__}")
    prompt = extra_info.get(prompt_key) if prompt_key and isinstance(extra_info, Mapping) else None
    if prompt is None:
        return solution_str
    answer = {"role": "assistant", "content": solution_str}
    if hasattr(prompt, "tolist") and not isinstance(prompt, str):
        prompt = prompt.tolist()  # veRL keeps non-tensor data in numpy object arrays; a list may be one
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}, answer]
    if is_conversational(prompt):
        return [*to_messages(prompt, f"extra_info[{prompt_key!r}]"), answer]
    raise TypeError(
        f"extra_info[{prompt_key!r}] must be a string or a list of messages, got {type(prompt).__name__}"
    )


def compute_score(
    data_source: Any = None,
    solution_str: str = "",
    ground_truth: Any = None,
    extra_info: Mapping[str, Any] | None = None,
    *,
    prompt_key: str | None = DEFAULT_PROMPT_KEY,
    **kwargs: Any,
) -> float:
    """The per-sample reward function of veRL (`custom_reward_function`).

    The served model's score of one response.
    """
    item = score_input(solution_str, extra_info, prompt_key)
    return CLIENTS.sync_client(_settings(kwargs)).score([item])[0].score


async def compute_score_async(
    data_source: Any = None,
    solution_str: str = "",
    ground_truth: Any = None,
    extra_info: Mapping[str, Any] | None = None,
    *,
    prompt_key: str | None = DEFAULT_PROMPT_KEY,
    **kwargs: Any,
) -> float:
    """`compute_score` as a coroutine: veRL's reward loop awaits it on its own event loop."""
    item = score_input(solution_str, extra_info, prompt_key)
    return (await CLIENTS.async_client(_settings(kwargs)).score([item]))[0].score


def compute_score_batch(
    data_sources: Sequence[Any] = (),
    solution_strs: Sequence[str] = (),
    ground_truths: Sequence[Any] = (),
    extra_infos: Sequence[Mapping[str, Any] | None] | None = None,
    *,
    prompt_key: str | None = DEFAULT_PROMPT_KEY,
    **kwargs: Any,
) -> list[float]:
    """The batched reward function of veRL (BatchRewardManager): one score per sample, in order."""
    infos = list(extra_infos) if extra_infos is not None else [None] * len(solution_strs)
    if len(infos) != len(solution_strs):
        raise ValueError(f"{len(solution_strs)} solution_strs but {len(infos)} extra_infos")
    items = [score_input(s, info, prompt_key) for s, info in zip(solution_strs, infos)]
    if not items:
        return []
    return [r.score for r in CLIENTS.sync_client(_settings(kwargs)).score(items)]


__all__ = ["compute_score", "compute_score_async", "compute_score_batch", "score_input"]
