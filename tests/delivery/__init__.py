"""Tests of raiox.delivery."""
