"""The registry of weights formats: which file names each format owns and how to open one.

A format is one module in ``sources/`` with a ``WeightFile`` subclass; adding a format is adding one
``Format`` entry here. Folder resolution (``local``, ``hub``) asks this table, never the suffixes directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .transport import Transport
from .weightfile import WeightFile


@dataclass(frozen=True, slots=True)
class Format:
    name: str
    suffixes: tuple[str, ...]  # file name endings of a weights file of this format
    index_suffix: str | None  # a shard index naming files of this format ("*.safetensors.index.json")
    preferred: tuple[str, ...]  # single-file names preferred in a folder ("model.safetensors")
    opener: Callable[[Transport], WeightFile]

    def owns(self, filename: str) -> bool:
        return filename.endswith(self.suffixes)


def _safetensors(transport: Transport) -> WeightFile:
    from .safetensors_format import SafetensorsFile

    return SafetensorsFile(transport)


def _gguf(transport: Transport) -> WeightFile:
    from .gguf_format import GGUFFile

    return GGUFFile(transport)


# In order of preference when a folder holds several formats (the first that has files wins).
FORMATS: tuple[Format, ...] = (
    Format("safetensors", (".safetensors",), ".safetensors.index.json", ("model.safetensors",), _safetensors),
    Format("gguf", (".gguf",), None, (), _gguf),
)


def format_of(filename: str) -> Format | None:
    return next((f for f in FORMATS if f.owns(filename)), None)


def index_format(filename: str) -> Format | None:
    return next((f for f in FORMATS if f.index_suffix and filename.endswith(f.index_suffix)), None)
