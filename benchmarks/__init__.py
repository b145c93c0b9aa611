"""Benchmarks of the governed server against its floors (``make bench`` / ``python -m benchmarks``)."""
