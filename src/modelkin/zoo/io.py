"""Saving and loading zoo models as HF-style folders (config.json, model.safetensors, tokenizer.json).

Folders are written to a temporary sibling and renamed into place, so a folder that exists is
complete; that is what makes the zoo build resumable.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer

from .models import from_config

META_FILE = "zoo.json"  # the model's manifest entry, so the manifest can be rebuilt from folders
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def save_model(path: str | Path, model: torch.nn.Module, tokenizer: Tokenizer | None,
               meta: dict, dtype: str = "float32") -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    config = model.config_dict()
    config["torch_dtype"] = dtype
    # Floating tensors take the requested dtype; integer buffers (position_ids, BN counters) stay.
    tensors = {k: (v.to(DTYPES[dtype]) if v.is_floating_point() else v).detach().contiguous().clone()
               for k, v in model.state_dict().items()}
    save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if tokenizer is not None:
        tokenizer.save(str(tmp / "tokenizer.json"))
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def load_model(path: str | Path) -> tuple[torch.nn.Module, Tokenizer | None, dict]:
    """Rebuild the module in float32 (whatever dtype it was saved in), its tokenizer and meta."""
    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    model = from_config(config)
    state = {k: (v.float() if v.is_floating_point() else v)
             for k, v in load_file(str(path / "model.safetensors")).items()}
    model.load_state_dict(state)
    model.eval()
    tok_path = path / "tokenizer.json"
    tok = Tokenizer.from_file(str(tok_path)) if tok_path.exists() else None
    meta_path = path / META_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    return model, tok, meta


def is_complete(path: str | Path) -> bool:
    path = Path(path)
    return all((path / f).exists() for f in ("config.json", "model.safetensors", META_FILE))
