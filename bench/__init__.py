"""Benchmarks with recorded figures (see README, Performance)."""
