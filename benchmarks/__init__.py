"""Latency harness: ``python -m benchmarks latency`` (see README, "Benchmarks")."""
