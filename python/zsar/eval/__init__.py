"""Evaluation: zero-shot protocols and metrics (DESIGN.md §6)."""
