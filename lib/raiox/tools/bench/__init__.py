"""Benchmarks (`raiox bench …`), each measuring its baseline in the same run."""
