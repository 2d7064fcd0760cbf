"""Metrics: effect sizes (cosine, Pearson, rel-L2, identical bytes) from one streaming pass per pair."""

from .streaming import Moments, TensorMetrics, chunk_moments, same_bytes, stream_metrics

__all__ = ["Moments", "TensorMetrics", "chunk_moments", "same_bytes", "stream_metrics"]
