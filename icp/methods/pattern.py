"""Kept for imports written before the pattern moved to `icp.pattern` (torch-free)."""

from ..pattern import Pattern, parse_pattern

__all__ = ["Pattern", "parse_pattern"]
