"""The registry of weights formats: which file names each format owns and how to open one.

A format is one module in ``sources/`` with a ``WeightFile`` subclass; adding a format is adding one
``Format`` entry here. Folder resolution (``local``, ``hub``) asks this table, never the suffixes directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatch
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
    not_weights: tuple[str, ...] = ()  # name patterns with a weights suffix that a folder scan skips

    def owns(self, filename: str) -> bool:
        return filename.endswith(self.suffixes)

    def weights_in_folder(self, filename: str) -> bool:
        """A file a folder scan takes as weights (a file given by name is opened whatever its name)."""
        return self.owns(filename) and not any(fnmatch(filename, p) for p in self.not_weights)


def _safetensors(transport: Transport) -> WeightFile:
    from .safetensors_format import SafetensorsFile

    return SafetensorsFile(transport)


def _gguf(transport: Transport) -> WeightFile:
    from .gguf_format import GGUFFile

    return GGUFFile(transport)


def _pytorch(transport: Transport) -> WeightFile:
    from .pytorch_format import PytorchFile

    return PytorchFile(transport)


def _onnx(transport: Transport) -> WeightFile:
    from .onnx_format import OnnxFile

    return OnnxFile(transport)


# In order of preference when a folder holds several formats (the first that has files wins).
FORMATS: tuple[Format, ...] = (
    Format("safetensors", (".safetensors",), ".safetensors.index.json", ("model.safetensors",), _safetensors),
    Format("gguf", (".gguf",), None, (), _gguf),
    Format(
        "pytorch", (".bin", ".pt", ".pth"), ".bin.index.json", ("pytorch_model.bin",), _pytorch,
        # what a Hugging Face Trainer checkpoint folder keeps beside the weights
        not_weights=("training_args.bin", "optimizer*.pt", "optimizer*.bin", "scheduler*.pt", "scaler*.pt", "rng_state*.pth"),
    ),
    Format("onnx", (".onnx",), None, ("model.onnx",), _onnx),
)


def format_of(filename: str) -> Format | None:
    return next((f for f in FORMATS if f.owns(filename)), None)


def index_format(filename: str) -> Format | None:
    return next((f for f in FORMATS if f.index_suffix and filename.endswith(f.index_suffix)), None)
