"""Benchmarks: ``python -m benchmarks.run`` (accuracy tables) and ``python -m benchmarks.speed``."""
