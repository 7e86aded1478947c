"""Tests of raiox.review."""
