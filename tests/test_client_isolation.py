"""The client works where torch and transformers are not installed."""

from __future__ import annotations

import textwrap

from helpers import CHAT_1, add_model, run_client_only, serve_repo
from reference import close, reference_score

BLOCKED_CLIENT = textwrap.dedent(
    """
    import json, sys
    from reward_client import RewardClient
    chat = json.loads(sys.argv[2])
    with RewardClient(sys.argv[1], model="tiny") as rm:
        print(json.dumps({"score": rm.get_score(chat), "rank": rm.rank([chat, chat])}))
    assert not any(m.split(".")[0] in {"torch", "transformers"} for m in sys.modules)
    """
)


def test_client_imports_and_scores_without_torch_or_transformers(tiny_checkpoint, tmp_path):
    import json

    add_model(tmp_path, "tiny", tiny_checkpoint)
    with serve_repo(tmp_path) as server:
        answer = run_client_only(
            BLOCKED_CLIENT,
            server.target,
            json.dumps(CHAT_1),
            blocked={"torch", "transformers", "tokenizers", "safetensors", "reward_server"},
        )
    assert close(answer["score"], reference_score(tiny_checkpoint, CHAT_1))
    assert answer["rank"] == [0, 1]
