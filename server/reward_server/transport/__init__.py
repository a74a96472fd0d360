"""gRPC transport: servicer, interceptors, codec and the server lifecycle."""

from .server import RewardServer, StartupError, build_server, serve

__all__ = ["RewardServer", "StartupError", "build_server", "serve"]
