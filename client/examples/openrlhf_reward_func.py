"""OpenRLHF custom reward function scoring with the reward server: `--reward.remote_url <path to this file>`.

The server address and model come from the environment of OpenRLHF's rollout workers (Ray actors: put
them in the job's runtime env `env_vars`):
  REWARD_SERVER_ADDRESS  host:port, or host-a:port,host-b:port for replicas (required)
  REWARD_SERVER_MODEL    the served model (optional when the server serves one model)
  REWARD_SERVER_TOKEN    bearer token (optional); REWARD_SERVER_CA_CERT / REWARD_SERVER_TLS for TLS
Needs `pip install reward-client` (the client/ folder) where OpenRLHF runs. docs/rl-frameworks.md.
"""

from reward_client.integrations.openrlhf import reward_func

__all__ = ["reward_func"]
