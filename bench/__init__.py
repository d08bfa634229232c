"""Benchmark of meta-training speed against a PyTorch reference (benchmark-only; see bench.py)."""
