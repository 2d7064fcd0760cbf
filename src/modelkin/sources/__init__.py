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


def open_model(location: str | Path, revision: str | None = None, stats=None) -> ModelSource:
    """Open a local file or folder of weights, a Hugging Face Hub id (``org/name``) or an HTTP(S) URL.

    ``revision`` (branch, tag or commit) applies to Hub ids; ``stats`` (a ``FetchStats``) counts the bytes
    and requests of remote reads.
    """
    text = str(location)
    if isinstance(location, str):
        from .locations import is_hub_id, is_url

        if is_url(text):
            from .hub import open_url

            return open_url(text, stats)
        if is_hub_id(text):
            from .hub import open_hub

            return open_hub(text, revision, stats)
    if revision is not None:
        from ..errors import UsageError

        raise UsageError(f"a revision applies to Hub ids, not to the local path {text!r}")
    return open_local(location)


__all__ = ["DType", "ModelSource", "SafetensorsFile", "TensorInfo", "WeightFile", "decode", "open_model"]
