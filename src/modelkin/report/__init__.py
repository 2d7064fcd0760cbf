"""Report: render a ComparisonResult for people (rich) or machines (JSON, ``ComparisonResult.to_json``)."""

from .console import render, render_inventory

__all__ = ["render", "render_inventory"]
