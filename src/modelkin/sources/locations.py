"""What a location string names: a Hub id (``org/name``), an HTTP(S) URL, or a local path.

A Hub location may pick one file of a repository that holds several models (GGUF quantisations, ONNX
exports): ``org/name:Q4_K_M`` (a quantisation tag, matched case-insensitively against the weights files'
paths, as llama.cpp's ``-hf`` takes it) or ``org/name/path/in/repo.gguf`` (one file, by its path).
Kept apart from ``hub`` so that telling them apart costs no import of the remote machinery.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

_REPO = r"[A-Za-z0-9][\w.\-]*/[\w.\-]+"
HUB_ID = re.compile(rf"^{_REPO}$")
HUB_TAG = re.compile(rf"^({_REPO}):([A-Za-z0-9][\w.\-]*)$")
HUB_FILE = re.compile(rf"^({_REPO})/((?:[\w.\-]+/)*[\w\-][\w.\-]*\.[A-Za-z0-9]+)$")
SYNTAX = "ORG/NAME:QUANT (e.g. :Q4_K_M) or ORG/NAME/PATH/IN/REPO"


@dataclass(frozen=True, slots=True)
class HubLocation:
    repo_id: str
    path: str | None = None  # one file of the repository, by its path
    tag: str | None = None  # a quantisation tag matched against the weights files' paths

    def matches(self, path: str) -> bool:
        """Whether a file path carries the tag as a whole word (``Q4_K`` is not in ``model-Q4_K_M.gguf``)."""
        pattern = rf"(?<![A-Za-z0-9]){re.escape(self.tag or '')}(?![A-Za-z0-9_])"
        return re.search(pattern, path, re.IGNORECASE) is not None


def parse_hub(location: str) -> HubLocation | None:
    """The Hub repository (and the file or tag picked in it) a location names; None for anything else,
    including an existing local path."""
    if os.path.exists(location):
        return None
    if HUB_ID.match(location):
        return HubLocation(location)
    if m := HUB_TAG.match(location):
        return HubLocation(m[1], tag=m[2])
    if m := HUB_FILE.match(location):
        return HubLocation(m[1], path=m[2])
    return None


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def is_hub_id(location: str) -> bool:
    """``org/name`` (or ``org/name:TAG``, ``org/name/path/file.ext``) that is not an existing local path."""
    return parse_hub(location) is not None
