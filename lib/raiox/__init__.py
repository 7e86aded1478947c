"""Raiox: identify dental implant systems on X-rays (Jotform intake, CLIP + pgvector matching, review)."""

__version__ = "0.1.0"
