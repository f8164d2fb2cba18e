"""Benchmarks that a user runs (``rodimus-lab bench …``); the numbers go to docs/results/ and docs/benchmarks.md."""
