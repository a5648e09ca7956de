"""Benchmarks for digestmail: see docs/performance.md and `python3 -m bench`."""
