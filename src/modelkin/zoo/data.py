"""Training data generated on the machine: stdlib source text and synthetic images.

Nothing here touches the network.  Text comes from the Python standard library that ships with
the interpreter (different module groups give genuinely different data distributions); images
are coloured shapes on textured backgrounds drawn with numpy from a seed.  Corpora use only pure-Python
packages that every CPython installs (no tkinter or idlelib, which distributions package apart); their
text follows the interpreter's version, so a zoo is byte-for-byte reproducible on one Python version.
"""

from __future__ import annotations

import os
import sysconfig
from dataclasses import dataclass

import numpy as np
import torch

# Named text corpora.  "A"/"B"/"D"/"E" are different code bases; "C" is English prose (the
# pydoc topic help), so fine-tuning A -> C is a real distribution shift.
CORPORA: dict[str, tuple[str, ...]] = {
    "A": ("asyncio", "concurrent", "multiprocessing"),
    "B": ("email", "http", "urllib"),
    "C": ("pydoc_data",),
    "D": ("xml", "importlib", "html", "wsgiref", "xmlrpc"),
    "E": ("unittest", "logging", "json"),
}
MAX_CHARS = 600_000  # per corpus: plenty for a few hundred steps of tiny batches
MIN_CHARS = 150_000  # below this a corpus is too small for the zoo's training windows


def corpus_name(key: str) -> str:
    """Human-readable data tag stored in the manifest, e.g. ``stdlib:asyncio+concurrent``."""
    return "stdlib:" + "+".join(CORPORA[key])


def stdlib_text(key: str, max_chars: int = MAX_CHARS) -> str:
    """Concatenate the ``.py`` files of a corpus' stdlib packages, in sorted (deterministic) order."""
    lib = sysconfig.get_paths()["stdlib"]
    parts: list[str] = []
    total = 0
    for module in CORPORA[key]:
        root = os.path.join(lib, module)
        files = [root + ".py"] if os.path.isfile(root + ".py") else []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            files.extend(os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".py"))
        for path in files:
            with open(path, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
            parts.append(text)
            total += len(text)
            if total >= max_chars:
                return "".join(parts)[:max_chars]
    if total < min(MIN_CHARS, max_chars):
        raise ValueError(f"corpus {key} ({', '.join(CORPORA[key])}): this Python's stdlib has only {total:,} characters "
                         f"of them at {lib}, the zoo needs {MIN_CHARS:,}")
    return "".join(parts)


class TokenStream:
    """A corpus encoded once; batches are random windows drawn with a seeded generator."""

    def __init__(self, ids: list[int]):
        self.ids = torch.tensor(ids, dtype=torch.long)

    def batch(self, gen: torch.Generator, batch: int, length: int) -> torch.Tensor:
        starts = torch.randint(0, len(self.ids) - length - 1, (batch,), generator=gen)
        return torch.stack([self.ids[s : s + length] for s in starts.tolist()])


# ---------------------------------------------------------------------------------------------
# Synthetic images: shape x colour classes, with size/background nuisance and noise texture.

SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {"red": (0.9, 0.1, 0.1), "green": (0.1, 0.8, 0.2), "blue": (0.15, 0.25, 0.95),
           "yellow": (0.95, 0.85, 0.1)}
SIZES = ("small", "large")
NUM_CLASSES = len(SHAPES) * len(COLOURS)


@dataclass
class ImageSet:
    images: torch.Tensor  # [N, 3, S, S] float32, roughly zero-mean
    labels: torch.Tensor  # [N] class = shape * len(COLOURS) + colour
    captions: list[str]  # "a large red circle"

    def batch(self, gen: torch.Generator, batch: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        idx = torch.randint(0, len(self.labels), (batch,), generator=gen)
        return self.images[idx], self.labels[idx], idx.tolist()


def _draw(shape: str, size: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    if shape == "circle":
        return (dy**2 + dx**2) <= r**2
    if shape == "square":
        return (np.abs(dy) <= r * 0.85) & (np.abs(dx) <= r * 0.85)
    if shape == "triangle":
        return (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
    return ((np.abs(dy) <= r * 0.3) & (np.abs(dx) <= r)) | ((np.abs(dx) <= r * 0.3) & (np.abs(dy) <= r))


def make_images(n: int, size: int = 32, seed: int = 0) -> ImageSet:
    """``n`` labelled images; the seed fixes everything, so "different data" = different seed."""
    rng = np.random.default_rng(seed)
    colour_names = list(COLOURS)
    images = np.empty((n, 3, size, size), dtype=np.float32)
    labels = np.empty(n, dtype=np.int64)
    captions = []
    for i in range(n):
        s, c, z = rng.integers(len(SHAPES)), rng.integers(len(COLOURS)), rng.integers(len(SIZES))
        r = size * (0.18 if z == 0 else 0.34) * rng.uniform(0.9, 1.1)
        cy, cx = rng.uniform(r, size - r, 2)
        # Background: a random dull tint plus a smooth-ish noise texture.
        bg = rng.uniform(0.0, 0.5, 3)[:, None, None] + 0.1 * rng.standard_normal((3, size, size))
        mask = _draw(SHAPES[s], size, cy, cx, r)
        img = np.where(mask[None], np.array(COLOURS[colour_names[c]])[:, None, None], bg)
        img += 0.05 * rng.standard_normal(img.shape)
        images[i] = (img - 0.45) / 0.3
        labels[i] = s * len(COLOURS) + c
        captions.append(f"a {SIZES[z]} {colour_names[c]} {SHAPES[s]}")
    return ImageSet(torch.from_numpy(images), torch.from_numpy(labels), captions)
