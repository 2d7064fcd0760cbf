"""Alignment: which tensor of A corresponds to which tensor of B."""

from .units import normalise_rows
from .layers import LayerMap, map_layers, repair_by_layers
from .vocab import VocabMap, load_vocab, map_vocab
from .fused import split_fused
from .experts import map_experts
from .names import Alignment, TensorPair, Unmatched, align_by_name, logical_shape

__all__ = ["map_experts", "split_fused", "VocabMap", "load_vocab", "map_vocab", "LayerMap", "map_layers", "repair_by_layers", "normalise_rows", "Alignment", "TensorPair", "Unmatched", "align_by_name", "logical_shape"]
