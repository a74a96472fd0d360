"""64 concurrent clients, each with its own inputs, under a batcher with a non-zero queue delay:
every answer belongs to its own request."""

from __future__ import annotations

import asyncio
import random

from helpers import add_model, config_text, random_chat, serve_repo
from reference import close, reference_score
from reward_client import AsyncRewardClient

CLIENTS = 64


def test_64_concurrent_clients_get_their_own_scores(tiny_checkpoint, tmp_path):
    add_model(tmp_path, "tiny", tiny_checkpoint, config_text("tiny", max_batch_size=16, delay_us=10_000))
    rng = random.Random(2024)
    work = [
        [random_chat(rng, turns=rng.randint(1, 2)) for _ in range(rng.randint(1, 3))] for _ in range(CLIENTS)
    ]
    expected = [[reference_score(tiny_checkpoint, chat) for chat in chats] for chats in work]

    async def one_client(chats):
        async with AsyncRewardClient(server.target, model="tiny") as rm:
            return await rm.get_scores(chats)

    async def all_clients():
        return await asyncio.gather(*(one_client(chats) for chats in work))

    with serve_repo(tmp_path) as server:
        answers = asyncio.run(all_clients())
        stats = server.running.repository.resolve("tiny", "").instances[0].stats
    for got, want in zip(answers, expected):
        assert len(got) == len(want)
        assert all(close(g, w) for g, w in zip(got, want)), (got, want)
    assert stats.computed == sum(len(chats) for chats in work)
    assert max(stats.batch_sizes) > 1, "requests from different clients were never batched together"
