"""Benchmarks: reliable_client against plain httpx and peer retry libraries.

Run ``python -m benchmarks`` (``--quick`` for a smoke run); see README.md.
"""
