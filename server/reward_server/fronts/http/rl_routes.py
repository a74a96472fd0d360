"""The routes RL frameworks call a reward model with, on the HTTP port beside KServe v2:

- OpenRLHF's remote reward URL: `POST /get_reward` `{"query": [str, ...], ...}` -> `{"rewards", "scores",
  "extra_logs"}`, one float per query, in order (an empty list answers empty lists);
- vLLM's `POST /classify` and `POST /pooling` (veRL's reward loop, vLLM clients) and `GET /v1/models`.

Each request becomes the tensors of the KServe tensor view (`sentences`, `messages` or `tokens`) and goes
through KServeCore.infer: the same validation, limits, batcher and scores as every other front. The model
is the body's `model` (a path ending in a served model's name counts: veRL sends its model path), else the
`?model=` query parameter, else the only model the server has.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
from aiohttp import web

from reward_server.errors import InvalidArgument
from reward_server.fronts.http.codec import parse_json
from reward_server.fronts.kserve.service import KServeCore
from reward_server.fronts.kserve.tensors import (
    MESSAGES,
    NUM_TOKENS,
    REWARDS,
    SENTENCES,
    SEQUENCE_LENGTHS,
    TOKENS,
    InferTensor,
)

# vLLM's label of a one-label classifier (transformers' default id2label).
LABEL = "LABEL_0"
OWNER = "reward-server"


async def _body(request: web.Request) -> dict[str, Any]:
    value = parse_json(await request.read())
    if not isinstance(value, dict):
        raise InvalidArgument(f"the request body must be a JSON object, got {type(value).__name__}")
    return value


def _bytes_tensor(name: str, rows: Sequence[str]) -> InferTensor:
    data = np.empty(len(rows), dtype=object)
    data[:] = [r.encode("utf-8", "surrogatepass") for r in rows]
    return InferTensor(name, "BYTES", (len(rows), 1), data)


def _token_tensors(rows: Sequence[Sequence[int]]) -> list[InferTensor]:
    width = max(len(r) for r in rows)
    if width == 0:
        raise InvalidArgument("'input' has an empty list of token ids")
    ids = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        try:
            ids[i, : len(row)] = row
        except OverflowError:
            raise InvalidArgument(f"'input' row {i}: a token id does not fit in 64 bits") from None
    lengths = np.array([[len(r)] for r in rows], dtype=np.int64)
    if int(lengths.min()) < 1:
        raise InvalidArgument("'input' has an empty list of token ids")
    return [
        InferTensor(TOKENS, "INT64", ids.shape, ids.reshape(-1)),
        InferTensor(SEQUENCE_LENGTHS, "INT64", lengths.shape, lengths.reshape(-1)),
    ]


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def vllm_input_tensors(body: dict[str, Any]) -> list[InferTensor]:
    """vLLM's `input` (str | [str] | [int] | [[int]]) or `messages` (one conversation) as tensors."""
    if "messages" in body and body["messages"] is not None:
        if "input" in body and body["input"] is not None:
            raise InvalidArgument("give 'input' or 'messages', not both")
        messages = body["messages"]
        if not isinstance(messages, list):
            raise InvalidArgument('\'messages\' must be a list of {"role", "content"} objects')
        return [_bytes_tensor(MESSAGES, [json.dumps([_plain_message(m) for m in messages])])]
    given = body.get("input")
    if isinstance(given, str):
        return [_bytes_tensor(SENTENCES, [given])]
    if not isinstance(given, list) or not given:
        raise InvalidArgument(
            "'input' must be a string, a non-empty list of strings, a list of token ids or a "
            "list of lists of token ids"
        )
    if all(isinstance(x, str) for x in given):
        return [_bytes_tensor(SENTENCES, given)]
    if all(_is_int(x) for x in given):
        return _token_tensors([given])
    if all(isinstance(x, list) and all(_is_int(t) for t in x) for x in given):
        return _token_tensors(given)
    raise InvalidArgument("'input' mixes types: give strings, or token ids, or lists of token ids")


def _plain_message(message: Any) -> Any:
    """OpenAI-style content parts ([{"type": "text", "text": ...}]) joined into one string; the rest is
    left for the tensor view's checks (role, content, shape)."""
    if isinstance(message, dict) and isinstance(message.get("content"), list):
        parts = message["content"]
        if not all(
            isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in parts
        ):
            raise InvalidArgument('only text content parts ({"type": "text", "text": ...}) are supported')
        return {**message, "content": "".join(p["text"] for p in parts)}
    return message


def _use_activation(body: dict[str, Any]) -> bool:
    """vLLM's rule: `use_activation`, else its older names `activation` and `softmax`; default on."""
    for key in ("use_activation", "activation", "softmax"):
        value = body.get(key)
        if value is not None:
            if not isinstance(value, bool):
                raise InvalidArgument(f"'{key}' must be a boolean, got {value!r}")
            return value
    return True


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


class RLRoutes:
    def __init__(self, kserve: KServeCore) -> None:
        self._kserve = kserve

    def add_to(self, app: web.Application) -> None:
        app.add_routes(
            [
                web.post("/get_reward", self.get_reward, name="GetReward"),
                web.post("/classify", self.classify, name="Classify"),
                web.post("/pooling", self.pooling, name="Pooling"),
                web.get("/v1/models", self.models, name="ListModelsV1"),
            ]
        )

    def _model(self, request: web.Request, body: dict[str, Any]) -> str:
        """The body's `model`, else ?model=, else the only model. veRL sends its reward model's path
        (vLLM's default served name): a path whose last component names a served model means that one."""
        name = body.get("model") or request.query.get("model")
        models = [m.name for m in self._kserve.core.list_models()]
        if name:
            if not isinstance(name, str):
                raise InvalidArgument(f"'model' must be a string, got {name!r}")
            tail = name.rstrip("/").rsplit("/", 1)[-1]
            return tail if name not in models and tail in models else name
        if len(models) != 1:
            raise InvalidArgument(
                f"the server has {len(models)} models ({', '.join(models) or 'none'}): name one "
                f"with ?model=NAME or a 'model' field"
            )
        return models[0]

    async def _scores(self, model: str, tensors: list[InferTensor]) -> tuple[str, list[float], int]:
        """(served model name, one raw score per input, tokens scored)."""
        name, _, outputs = await self._kserve.infer(model, "", tensors, [REWARDS, NUM_TOKENS], None)
        by_name = {t.name: t.data for t in outputs}
        return name, [float(s) for s in by_name[REWARDS].reshape(-1)], int(by_name[NUM_TOKENS].sum())

    async def get_reward(self, request: web.Request) -> web.Response:
        body = await _body(request)
        queries = body.get("query")
        if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
            raise InvalidArgument("'query' must be a list of strings (the chat-templated texts to score)")
        if not queries:  # OpenRLHF sends empty lists to the extra URLs when it has fewer samples than servers
            return web.json_response({"rewards": [], "scores": [], "extra_logs": {}})
        _, rewards, _ = await self._scores(self._model(request, body), [_bytes_tensor(SENTENCES, queries)])
        return web.json_response({"rewards": rewards, "scores": rewards, "extra_logs": {}})

    @staticmethod
    def _vllm_list(id_prefix: str, model: str, data: list[dict[str, Any]], tokens: int) -> web.Response:
        """vLLM's envelope of a /classify or /pooling answer: one `data` entry per input, and the usage
        (every token read is a prompt token)."""
        return web.json_response(
            {
                "id": f"{id_prefix}-{uuid.uuid4().hex}",
                "object": "list",
                "created": int(time.time()),
                "model": model,
                "data": data,
                "usage": {
                    "prompt_tokens": tokens,
                    "total_tokens": tokens,
                    "completion_tokens": 0,
                    "prompt_tokens_details": None,
                },
            }
        )

    async def classify(self, request: web.Request) -> web.Response:
        body = await _body(request)
        activate = _use_activation(body)
        name, scores, tokens = await self._scores(self._model(request, body), vllm_input_tensors(body))
        data = [
            {"index": i, "label": LABEL, "probs": [_sigmoid(s) if activate else s], "num_classes": 1}
            for i, s in enumerate(scores)
        ]
        return self._vllm_list("classify", name, data, tokens)

    async def pooling(self, request: web.Request) -> web.Response:
        """The sequence-reward case: one value per input, the raw score (task "classify": vLLM's
        activation rule applies, as on /classify)."""
        body = await _body(request)
        task = body.get("task")
        if task not in (None, "reward", "classify", "score"):
            raise InvalidArgument(
                f"task {task!r} is not served: this server pools one reward per input "
                f"(tasks reward, classify, score)"
            )
        activate = task == "classify" and _use_activation(body)
        name, scores, tokens = await self._scores(self._model(request, body), vllm_input_tensors(body))
        data = [
            {"index": i, "object": "pooling", "data": [_sigmoid(s) if activate else s]}
            for i, s in enumerate(scores)
        ]
        return self._vllm_list("pool", name, data, tokens)

    async def models(self, request: web.Request) -> web.Response:
        created = int(time.time())
        data = [
            {
                "id": m.name,
                "object": "model",
                "created": created,
                "owned_by": OWNER,
                "root": m.name,
                "parent": None,
                "max_model_len": m.max_sequence_length,
            }
            for m in self._kserve.core.list_models()
        ]
        return web.json_response({"object": "list", "data": data})
