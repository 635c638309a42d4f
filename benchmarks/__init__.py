"""Speed benchmarks against the official implementations: ``python -m benchmarks``."""
