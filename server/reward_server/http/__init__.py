"""KServe v2 REST (Triton's HTTP API) and /metrics, on --http-port, over the same core as gRPC."""

from .app import HttpFront, build_app, start_http

__all__ = ["HttpFront", "build_app", "start_http"]
