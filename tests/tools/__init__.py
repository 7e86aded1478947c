"""Tests of raiox.tools."""
