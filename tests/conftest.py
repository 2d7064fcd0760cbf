"""Shared fixtures.  ``smoke_zoo`` builds the smoke zoo once (torch needed) and caches it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def smoke_zoo() -> Path:
    """Path of a built smoke zoo: ``$MODELKIN_ZOO_CACHE`` or ``<repo>/.cache/zoo-smoke``.

    Reused when its manifest exists (delete the folder to rebuild); skipped without torch.
    """
    pytest.importorskip("torch")
    pytest.importorskip("tokenizers")
    root = Path(os.environ.get("MODELKIN_ZOO_CACHE") or REPO / ".cache" / "zoo-smoke")
    manifest = root / "manifest.json"
    from modelkin.zoo.build import build_zoo, write_manifest

    if not manifest.exists() or json.loads(manifest.read_text()).get("size") != "smoke" or not _complete(root):
        build_zoo(root, "smoke")
    else:
        write_manifest(root, "smoke")  # cheap; keeps pair labels in step with the current plan
    return root


def _complete(root: Path) -> bool:
    """True when the cached manifest lists every model of the current smoke plan."""
    from modelkin.zoo.recipes import plan

    models = json.loads((root / "manifest.json").read_text())["models"]
    return set(plan("smoke").models) <= set(models)


@pytest.fixture(autouse=True)
def _private_digest_cache(tmp_path_factory, monkeypatch):
    """Tests never write into the user's ~/.cache/modelkin."""
    monkeypatch.setenv("MODELKIN_CACHE", str(tmp_path_factory.getbasetemp() / "modelkin-cache"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
