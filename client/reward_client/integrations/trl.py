"""TRL: reward functions for `GRPOTrainer(reward_funcs=[...])` (and RLOO / Online DPO trainers, same shape).

    from reward_client.integrations.trl import reward_func
    trainer = GRPOTrainer(model=..., reward_funcs=[reward_func("rm-host:50051", model="rm")], ...)

How TRL calls it (trl/trainer/grpo_trainer.py, `GRPOTrainer._calculate_rewards`, TRL 1.16):
`reward_func(prompts=prompts, completions=completions, completion_ids=completion_ids_list, **reward_kwargs)`
where `reward_kwargs` holds every other dataset column plus `trainer_state`, `log_extra`, `log_metric`
(and `environments`); it expects one float (or None) per completion. An async function (detected with
`trl.trainer.utils.is_async_callable`, which also checks an instance's `__call__`) is awaited on the
trainer's own event-loop thread, together with the other async reward functions. TRL names each function
in its logs (`rewards/<name>/mean`) from its `__name__` (`trl.trainer.utils.get_callable_name`), so the
callable instances returned here carry one. (A TRL release whose async check is only
`inspect.iscoroutinefunction(func)` would not await an instance: use the blocking form there.)

What is sent, one RPC per call (a Score of more than `chunk_size` inputs goes as concurrent chunks):
- conversational dataset (prompts and completions are lists of {"role", "content"} messages): each
  conversation is `prompt + completion`, scored with the served model's own prompt format;
- plain-text dataset (strings): `[{"role": "user", "content": prompt}, {"role": "assistant",
  "content": completion}]` by default (`plain_text="chat"`), or the string `prompt + completion` as a
  pre-formatted `text` input (`plain_text="text"`, what TRL does with a local reward model);
- when every completion of the call answers the same prompt (TRL calls once per process and generation
  batch, `per_device_train_batch_size * steps_per_generation` completions: one GRPO group when that equals
  `num_generations`) and each completion is one assistant message (or a plain string, in "chat" mode), one
  Rank of candidates (the prompt sent once; the server may compute it once) instead of a Score.
`completion_ids` are the policy's token ids, which the reward model's tokenizer does not share: unused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .._types import Chat
from ._clients import CLIENTS, ClientSettings
from ._messages import is_conversational, to_messages

PlainText = Literal["chat", "text"]


@dataclass(frozen=True)
class TrlRewardConfig:
    """How a TRL reward function reaches the server and shapes its requests."""

    client: ClientSettings
    plain_text: PlainText = "chat"
    # Send a GRPO group (one prompt, N completions) as one Rank of candidates.
    rank_groups: bool = True


@dataclass(frozen=True)
class _Plan:
    """What one call sends: a Rank of `responses` to `prompt`, or a Score of `inputs`."""

    prompt: Chat | None = None
    responses: Sequence[str] = ()
    inputs: Sequence[Chat | str] = ()


def _plain_chat(prompt: str, completion: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]


def _single_assistant(completion: list[dict[str, str]]) -> str | None:
    if len(completion) == 1 and completion[0]["role"] == "assistant":
        return completion[0]["content"]
    return None


def plan_call(prompts: Sequence[Any], completions: Sequence[Any], config: TrlRewardConfig) -> _Plan:
    """The request for one TRL call (pure: tested without a server)."""
    if len(prompts) != len(completions):
        raise ValueError(
            f"TRL passed {len(prompts)} prompts and {len(completions)} completions; they pair up"
        )
    if not prompts:
        return _Plan()
    if is_conversational(prompts[0]):
        chats_p = [to_messages(p, f"prompts[{i}]") for i, p in enumerate(prompts)]
        chats_c = [to_messages(c, f"completions[{i}]") for i, c in enumerate(completions)]
        if config.rank_groups and len(prompts) > 1 and chats_p[0] and all(p == chats_p[0] for p in chats_p):
            responses = [_single_assistant(c) for c in chats_c]
            if all(r is not None for r in responses):
                return _Plan(prompt=chats_p[0], responses=[r for r in responses if r is not None])
        return _Plan(inputs=[p + c for p, c in zip(chats_p, chats_c)])
    for i, (p, c) in enumerate(zip(prompts, completions)):
        if not isinstance(p, str) or not isinstance(c, str):
            raise TypeError(
                f"prompts[{i}] / completions[{i}]: a plain-text dataset gives strings, "
                f"got {type(p).__name__} / {type(c).__name__}"
            )
    if config.plain_text == "text":
        return _Plan(inputs=[p + c for p, c in zip(prompts, completions)])
    if config.rank_groups and len(prompts) > 1 and all(p == prompts[0] for p in prompts):
        return _Plan(prompt=[{"role": "user", "content": prompts[0]}], responses=list(completions))
    return _Plan(inputs=[_plain_chat(p, c) for p, c in zip(prompts, completions)])


class _TrlRewardBase:
    """A picklable callable with a `__name__`, as TRL's reward functions are.

    Callable class instances are one of TRL's supported forms; `get_callable_name` reads the
    instance's `__name__`.
    """

    def __init__(self, config: TrlRewardConfig, name: str | None = None) -> None:
        self.config = config
        self.__name__ = name or config.client.model or "reward_server"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.__name__!r}, target={self.config.client.target!r})"


class TrlReward(_TrlRewardBase):
    """Blocking: TRL calls it in the training process, between generation and the loss."""

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Any = None, **kwargs: Any
    ) -> list[float]:
        """One reward per completion, in order, as TRL's GRPOTrainer calls a reward function."""
        # kwargs: the dataset's other columns and trainer_state / log_extra / log_metric (unused).
        plan = plan_call(prompts, completions, self.config)
        client = CLIENTS.sync_client(self.config.client)
        if plan.prompt is not None:
            return client.rank_candidates(plan.prompt, plan.responses).scores
        if not plan.inputs:
            return []
        return [r.score for r in client.score(plan.inputs)]


class AsyncTrlReward(_TrlRewardBase):
    """Coroutine form of TrlReward.

    TRL (`is_async_callable`, which checks `__call__`) awaits it on its async loop, concurrently with
    its other async reward functions; one grpc.aio client per event loop.
    """

    async def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Any = None, **kwargs: Any
    ) -> list[float]:
        """One reward per completion, in order (awaited by TRL)."""
        plan = plan_call(prompts, completions, self.config)
        client = CLIENTS.async_client(self.config.client)
        if plan.prompt is not None:
            return (await client.rank_candidates(plan.prompt, plan.responses)).scores
        if not plan.inputs:
            return []
        return [r.score for r in await client.score(plan.inputs)]


def _config(
    target: str | Sequence[str] | None,
    plain_text: PlainText,
    rank_groups: bool,
    client_options: dict[str, Any],
) -> TrlRewardConfig:
    if plain_text not in ("chat", "text"):
        raise ValueError(f"plain_text must be 'chat' or 'text', got {plain_text!r}")
    return TrlRewardConfig(ClientSettings.from_env(target=target, **client_options), plain_text, rank_groups)


def reward_func(
    target: str | Sequence[str] | None = None,
    *,
    model: str | None = None,
    name: str | None = None,
    plain_text: PlainText = "chat",
    rank_groups: bool = True,
    **client_options: Any,
) -> TrlReward:
    """A TRL reward function scoring with the server (blocking).

    `target`, `model` and `client_options` (`version`, `token`, `tls`, `ca_cert`, `timeout`, `chunk_size`,
    `wait_for_ready`) default to the REWARD_SERVER_* environment variables. `name` is what TRL logs
    (`rewards/<name>/mean`; default: the model name). The client is made on first use, once per process.
    """
    return TrlReward(_config(target, plain_text, rank_groups, {"model": model, **client_options}), name)


def async_reward_func(
    target: str | Sequence[str] | None = None,
    *,
    model: str | None = None,
    name: str | None = None,
    plain_text: PlainText = "chat",
    rank_groups: bool = True,
    **client_options: Any,
) -> AsyncTrlReward:
    """The same as `reward_func`, as a coroutine function."""
    return AsyncTrlReward(_config(target, plain_text, rank_groups, {"model": model, **client_options}), name)


__all__ = ["AsyncTrlReward", "TrlReward", "TrlRewardConfig", "async_reward_func", "plan_call", "reward_func"]
