"""Wire formats in, RewardCore calls out: RewardService, Triton's KServe v2 (gRPC, HTTP), the RL routes."""
