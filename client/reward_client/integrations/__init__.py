"""Ready reward functions for RL frameworks, scoring with the reward server over gRPC.

- TRL: `trl.reward_func(...)` / `trl.async_reward_func(...)` for `GRPOTrainer(reward_funcs=[...])`;
- veRL: `verl.compute_score` / `verl.compute_score_async` / `verl.compute_score_batch` for
  `reward.custom_reward_function` (path `pkg://reward_client.integrations.verl`);
- OpenRLHF: `openrlhf.reward_func` for `--reward.remote_url <file>.py`.

Importing this package imports no framework and no torch: each function speaks the framework's call
shape with plain Python values. Settings come from arguments or REWARD_SERVER_* environment variables
(`ClientSettings.from_env`); each process makes one client per settings, on first use, and reuses it
(replicas, retries of UNAVAILABLE and chunking are the client's). docs/rl-frameworks.md has the details.
"""

from . import openrlhf, trl, verl
from ._clients import ClientSettings, close_clients

__all__ = ["ClientSettings", "close_clients", "openrlhf", "trl", "verl"]
