"""Tests of raiox.embed."""
