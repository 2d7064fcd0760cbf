"""Sources: where weights come from. Each opener returns a ``ModelSource``.

Layers, bottom up: a ``Transport`` gives bytes (a local file, HTTP ranges); a ``WeightFile`` subclass per
format parses its header into ``TensorInfo`` records and decodes elements; ``ModelSource`` gathers a
model's files and answers the only questions later stages ask: rows, columns, blocks, or a stream.
"""

from __future__ import annotations

from pathlib import Path

from .dtypes import DType, decode
from .local import open_local
from .model import ModelSource
from .safetensors_format import SafetensorsFile
from .tensors import TensorInfo
from .weightfile import WeightFile


def open_model(location: str | Path) -> ModelSource:
    """Open a local file or folder of weights."""
    return open_local(location)


__all__ = ["DType", "ModelSource", "SafetensorsFile", "TensorInfo", "WeightFile", "decode", "open_model"]
