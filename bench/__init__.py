"""Benchmarks. The suite: `python -m bench run` (see bench/suite.py); single studies: precision.py,
onnx_vs_torch.py."""
