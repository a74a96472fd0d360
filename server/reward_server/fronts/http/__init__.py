"""The HTTP port (--http-port): KServe v2 REST (Triton's HTTP API), the RL frameworks' routes (OpenRLHF's
/get_reward, vLLM's /classify and /pooling) and /metrics, over the same core as gRPC."""

from reward_server.fronts.http.app import HttpFront, build_app, start_http

__all__ = ["HttpFront", "build_app", "start_http"]
