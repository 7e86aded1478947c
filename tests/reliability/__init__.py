"""Reliability tests: load, faults and hostile input against real Raiox processes (issue 9)."""
