"""The client works where torch and transformers are not installed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from helpers import CHAT_1, add_model, serve_repo
from reference import close, reference_score

BLOCKED_CLIENT = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"torch", "transformers", "tokenizers", "safetensors", "reward_server"}:
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, Block())
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
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent / "client")
        done = subprocess.run(
            [sys.executable, "-c", BLOCKED_CLIENT, server.target, json.dumps(CHAT_1)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert close(answer["score"], reference_score(tiny_checkpoint, CHAT_1))
    assert answer["rank"] == [0, 1]
