"""Metrics: effect sizes (cosine, Pearson, rel-L2, identical bytes) from one streaming pass per pair."""

from .streaming import Moments, TensorMetrics, chunk_moments, read_block, stream_metrics

__all__ = ["Moments", "TensorMetrics", "chunk_moments", "read_block", "stream_metrics"]
