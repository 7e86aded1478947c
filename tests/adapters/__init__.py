"""Tests of raiox.adapters."""
