"""Sources: where weights come from. Each opener returns a ``ModelSource``."""

from __future__ import annotations

from pathlib import Path

from .local import open_local
from .model import ModelSource, decode
from .safetensors_format import SafetensorsFile, TensorInfo


def open_model(location: str | Path) -> ModelSource:
    """Open a local file or folder of weights."""
    return open_local(location)


__all__ = ["ModelSource", "SafetensorsFile", "TensorInfo", "decode", "open_model"]
