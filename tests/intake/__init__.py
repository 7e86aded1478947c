"""Tests of raiox.intake."""
