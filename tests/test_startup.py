"""The CLI starts fast: heavy modules load only in the commands that use them (measured, with times, by
``python -X importtime``; here the rule is checked by the modules a start actually imports)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("scipy", "torch", "tokenizers", "huggingface_hub", "matplotlib", "numba", "transformers", "onnx", "gguf")


def _imported_after(code: str) -> set[str]:
    probe = f"import sys, json\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return {m.split(".")[0] for m in json.loads(out.strip().splitlines()[-1])}


def test_help_imports_nothing_heavy():
    code = "import sys\nsys.argv = ['modelkin', '--help']\nfrom modelkin.cli import entry\ntry:\n    entry()\nexcept SystemExit as e:\n    assert not e.code, e.code"
    loaded = _imported_after(code)
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    assert "numpy" not in loaded  # --help reads no weights


def test_inspect_imports_nothing_heavy(tmp_path):
    from builders import qwen2_tensors, write_model

    folder = write_model(tmp_path / "m", qwen2_tensors(0), {"model_type": "qwen2"})
    code = f"import sys\nsys.argv = ['modelkin', 'inspect', {str(folder)!r}]\nfrom modelkin.cli import entry\ntry:\n    entry()\nexcept SystemExit as e:\n    assert not e.code, e.code"
    loaded = _imported_after(code)
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_package_exports_load_on_first_use():
    assert not _imported_after("import modelkin") & {"scipy", "numpy"}
    code = (
        "import modelkin, modelkin.api, modelkin.errors\n"
        "assert modelkin.compare is modelkin.api.compare and modelkin.ModelkinError is modelkin.errors.ModelkinError\n"
        "assert modelkin.CompareOptions().threads >= 1 and 'compare' in dir(modelkin)"
    )
    _imported_after(code)  # raises (check=True) when an assertion fails
