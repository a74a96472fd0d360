"""Seeded workloads of the suite, generated locally: what the clients send and the token ids the model reads.

- mixed: one conversation per Score request, 16..1024 tokens (uniform target lengths);
- rank:  one Rank request = a shared prompt of ~P tokens + N responses of ~R tokens;
- tiny:  one short conversation per Score request (per-request overhead dominates).

Texts are built from words of the tiny tokenizer's corpus and sized with the served model's own encoder,
so the token counts are those the server computes.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from reward_server.datatypes import Candidates, Conversation, Message
from reward_server.offline.tiny_models import CORPUS
from reward_server.runtime.encoding import InputEncoder, candidate_conversations

WORDS = " ".join(CORPUS).split()


@dataclass(frozen=True)
class Workload:
    name: str
    kind: str  # "score" (one conversation per request) | "rank" (prompt + responses per request)
    requests: list[
        dict
    ]  # JSON-able, what a client sends: {"chat": [...]} or {"prompt": [...], "responses": [...]}
    sequences: list[list[tuple[int, ...]]]  # per request, the token ids of each input the model computes

    @property
    def tokens(self) -> int:
        return sum(len(ids) for request in self.sequences for ids in request)


def _words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(count))


def _sized(length_of: Callable[[str], int], rng: random.Random, target: int) -> str:
    """Random words whose encoded length is as close to `target` as a word boundary allows (bisection)."""
    words = [rng.choice(WORDS) for _ in range(max(1, target))]
    low, high = 0, len(words)
    while low < high:
        middle = (low + high + 1) // 2
        if length_of(" ".join(words[:middle])) <= target:
            low = middle
        else:
            high = middle - 1
    return " ".join(words[:low])


def _chat(user: str, assistant: str) -> list[dict]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def _conversation(chat: list[dict]) -> Conversation:
    return Conversation(tuple(Message(m["role"], m["content"]) for m in chat))


def _ids(encoder: InputEncoder, conversations: list[Conversation]) -> list[tuple[int, ...]]:
    return [e.ids for e in encoder.encode(conversations)]


def _reply_length(encoder: InputEncoder, user: str, base: int, reply: str) -> int:
    """Tokens of the conversation (user, reply), less `base`."""
    return len(_ids(encoder, [_conversation(_chat(user, reply))])[0]) - base


def score_workload(
    name: str, encoder: InputEncoder, count: int, min_tokens: int, max_tokens: int, seed: int = 0
) -> Workload:
    """`count` single-conversation requests with token lengths spread uniformly over
    [min_tokens, max_tokens]."""
    rng = random.Random(seed)
    requests, sequences = [], []
    for _ in range(count):
        user = _words(rng, rng.randint(1, 6))
        target = rng.randint(min_tokens, max_tokens)
        reply = _sized(partial(_reply_length, encoder, user, 0), rng, target)
        chat = _chat(user, reply)
        requests.append({"chat": chat})
        sequences.append(_ids(encoder, [_conversation(chat)]))
    return Workload(name, "score", requests, sequences)


def rank_workload(
    encoder: InputEncoder,
    count: int,
    prompt_tokens: int = 1024,
    responses: int = 8,
    response_tokens: int = 128,
    seed: int = 0,
) -> Workload:
    """`count` Rank requests: each a prompt of ~prompt_tokens and `responses` answers of ~response_tokens."""
    rng = random.Random(seed)
    requests, sequences = [], []
    for _ in range(count):
        user = _sized(
            lambda text: len(_ids(encoder, [_conversation([{"role": "user", "content": text}])])[0]),
            rng,
            prompt_tokens,
        )
        prompt = [{"role": "user", "content": user}]
        base = len(_ids(encoder, [_conversation(_chat(user, ""))])[0])
        answers = [
            _sized(partial(_reply_length, encoder, user, base), rng, response_tokens)
            for _ in range(responses)
        ]
        requests.append({"prompt": prompt, "responses": answers})
        candidates = Candidates(_conversation(prompt).messages, tuple(answers))
        sequences.append(_ids(encoder, list(candidate_conversations(candidates))))
    return Workload("rank", "rank", requests, sequences)
