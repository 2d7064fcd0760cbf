"""Verdict: evidence -> related / independent / inconclusive per component."""

from .components import judge_components, overall

__all__ = ["judge_components", "overall"]
