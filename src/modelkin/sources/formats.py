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
    # The file carries its own config, vocabulary and provenance (a fingerprint): files beside it are not read.
    self_contained: bool = False
    # Each file is a whole model: several in one folder or repository are alternatives (quantisations,
    # exports), not shards; the user picks one.
    whole_file: bool = False
    split_parts: str | None = None  # a regex on file names of a model split into several files of this format

    def owns(self, filename: str) -> bool:
        return filename.endswith(self.suffixes)

    def split_part(self, filename: str) -> bool:
        import re

        return self.split_parts is not None and re.search(self.split_parts, filename) is not None

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


def _fingerprint(transport: Transport) -> WeightFile:
    from .fingerprint_format import FingerprintFile

    return FingerprintFile(transport)


# In order of preference when a folder holds several formats (the first that has files wins).
FORMATS: tuple[Format, ...] = (
    Format("safetensors", (".safetensors",), ".safetensors.index.json", ("model.safetensors",), _safetensors),
    Format("gguf", (".gguf",), None, (), _gguf, whole_file=True, split_parts=r"-\d{5}-of-\d{5}\.gguf$"),
    Format(
        "pytorch", (".bin", ".pt", ".pth"), ".bin.index.json", ("pytorch_model.bin",), _pytorch,
        # what a Hugging Face Trainer checkpoint folder keeps beside the weights
        not_weights=("training_args.bin", "optimizer*.pt", "optimizer*.bin", "scheduler*.pt", "scaler*.pt", "rng_state*.pth"),
    ),
    Format("onnx", (".onnx",), None, ("model.onnx",), _onnx, whole_file=True),
    # A modelkin fingerprint is opened by its file name only (a folder of fingerprints is not one model).
    Format("fingerprint", (".mkfp",), None, (), _fingerprint, not_weights=("*",), self_contained=True),
)


def format_of(filename: str) -> Format | None:
    return next((f for f in FORMATS if f.owns(filename)), None)


def index_format(filename: str) -> Format | None:
    return next((f for f in FORMATS if f.index_suffix and filename.endswith(f.index_suffix)), None)


SHOWN_NAMES = 12  # file names listed in a one-line error before "… (N more)"


def shown_names(names: list[str]) -> str:
    """Up to ``SHOWN_NAMES`` file names, comma-separated, then how many more."""
    more = len(names) - SHOWN_NAMES
    return ", ".join(names[:SHOWN_NAMES]) + (f", … ({more} more)" if more > 0 else "")


def alternatives_message(fmt: Format, names: list[str], how: str) -> str:
    """The one-line error for several whole-model files where one model is meant: a split model is said
    unsupported; else the files are listed with ``how`` to pick one."""
    shown = shown_names(names)
    if all(fmt.split_part(n) for n in names):
        return (f"holds a {fmt.name} model split into {len(names)} files ({shown}): split {fmt.name.upper()} files are not "
                "supported yet (merge them with llama-gguf-split --merge FIRST-PART OUT.gguf)")
    return f"holds {len(names)} {fmt.name} files, each a whole model: {how} ({shown})"
