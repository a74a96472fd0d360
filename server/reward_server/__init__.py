"""Reward-model server: gRPC Score/Rank over a Triton-style model repository."""

__version__ = "0.1.0"
