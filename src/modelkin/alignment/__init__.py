"""Alignment: which tensor of A corresponds to which tensor of B."""

from .names import Alignment, TensorPair, Unmatched, align_by_name, logical_shape

__all__ = ["Alignment", "TensorPair", "Unmatched", "align_by_name", "logical_shape"]
