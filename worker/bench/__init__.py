"""Benchmarks: commands of their own, never part of the test suite."""
