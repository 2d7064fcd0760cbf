"""Picking one model in a repository or folder that holds several (issue 9): ``org/name:TAG`` (a quantisation
tag, case-insensitive, a whole word of the file's path), ``org/name/path/in/repo.gguf`` (one file), and a
plain ``org/name`` that fails with one line listing the files and the syntax. Split GGUFs are refused in one
line. Served by the local Hub stand-in on 127.0.0.1; nothing touches the internet.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
pytest.importorskip("huggingface_hub")
pytest.importorskip("tokenizers")

import modelkin  # noqa: E402
from modelkin.cli import main as cli_main  # noqa: E402
from modelkin.errors import SourceNotFoundError, UnsupportedError  # noqa: E402
from modelkin.sources import open_model  # noqa: E402
from modelkin.sources.locations import HubLocation, parse_hub  # noqa: E402

try:  # tests/ may or may not become a package
    from .hub_server import HubServer, patch_hf_endpoint
    from .test_gguf import EXAMPLES, Q4_K_M, Q, convert
except ImportError:
    from hub_server import HubServer, patch_hf_endpoint
    from test_gguf import EXAMPLES, Q4_K_M, Q, convert


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ggufs")
    return {"Q8_0": convert(EXAMPLES / "base", d / "q8.gguf", "llama", Q.Q8_0),
            "Q4_K_M": convert(EXAMPLES / "base", d / "q4km.gguf", "llama", Q4_K_M),
            "independent": convert(EXAMPLES / "independent", d / "ind.gguf", "llama", Q.Q8_0)}


@pytest.fixture
def hub(tmp_path, monkeypatch):
    with HubServer() as server:
        patch_hf_endpoint(monkeypatch, server.url)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        monkeypatch.setenv("MODELKIN_CACHE", str(tmp_path / "mk-cache"))
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        yield server


def _repo(tmp_path: Path, name: str, files: dict[str, Path]) -> Path:
    folder = tmp_path / name
    for rel, src in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, folder / rel)
    return folder


def _one_line_error(capsys, argv: list[str]) -> str:
    assert cli_main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("modelkin: error: "), lines
    return lines[0]


def test_locations_parse():
    assert parse_hub("org/name") == HubLocation("org/name")
    assert parse_hub("org/name:Q4_K_M") == HubLocation("org/name", tag="Q4_K_M")
    assert parse_hub("org/Name-GGUF/sub/dir/model-q8_0.gguf") == HubLocation("org/Name-GGUF", path="sub/dir/model-q8_0.gguf")
    assert parse_hub("org/name/onnx/model_quantized.onnx") == HubLocation("org/name", path="onnx/model_quantized.onnx")
    assert parse_hub("org/name/folder") is None  # a path in a repo names a file
    assert parse_hub("/abs/path/model.gguf") is None and parse_hub("org/name:") is None
    tag = HubLocation("o/n", tag="q4_k")
    assert tag.matches("Model-Q4_K.gguf") and tag.matches("q4_k/model-00001-of-00002.gguf")
    assert not tag.matches("model-Q4_K_M.gguf") and not tag.matches("model-IQ4_K.gguf")


def test_tag_and_path_pick_one_gguf_of_a_repo(hub, ggufs, tmp_path, capsys):
    repo = _repo(tmp_path, "multi", {"model-Q8_0.gguf": ggufs["Q8_0"], "model-Q4_K_M.gguf": ggufs["Q4_K_M"],
                                     "mmproj/other-Q8_0-vision.gguf": ggufs["independent"]})
    hub.add_repo("someone/base-GGUF", repo)
    with open_model("someone/base-GGUF:q4_k_m") as src:  # case-insensitive
        assert [Path(f.name).name for f in src.files] == ["model-Q4_K_M.gguf"]
        assert src.tensors["blk.0.attn_q.weight"].dtype.code == "Q5_0"  # 64-wide rows: llama-quantize's fallback
    with open_model("someone/base-GGUF/model-Q8_0.gguf") as src:
        assert [Path(f.name).name for f in src.files] == ["model-Q8_0.gguf"]
    r = modelkin.compare(EXAMPLES / "base", "someone/base-GGUF:Q4_K_M", hash_files=False)
    assert r.verdict == "related"
    r = modelkin.compare("someone/base-GGUF/model-Q8_0.gguf", "someone/base-GGUF/mmproj/other-Q8_0-vision.gguf", hash_files=False)
    assert r.verdict == "independent"
    # a plain id: one line naming the files and the syntax
    line = _one_line_error(capsys, ["inspect", "someone/base-GGUF"])
    assert "holds 2 gguf files, each a whole model" in line and "ORG/NAME:QUANT" in line
    assert "model-Q4_K_M.gguf" in line and "model-Q8_0.gguf" in line
    # a tag matching two files, or none; a path the repository lacks
    line = _one_line_error(capsys, ["inspect", "someone/base-GGUF:Q8_0"])
    assert "the tag 'Q8_0' matches several" in line and "mmproj/other-Q8_0-vision.gguf" in line
    line = _one_line_error(capsys, ["inspect", "someone/base-GGUF:Q4_K"])
    assert "no weights file of the repository matches the tag 'Q4_K'" in line and "model-Q4_K_M.gguf" in line
    line = _one_line_error(capsys, ["inspect", "someone/base-GGUF/model-Q2_K.gguf"])
    assert "holds no file 'model-Q2_K.gguf'" in line
    # inspect shows the picked file
    assert cli_main(["inspect", "someone/base-GGUF:Q4_K_M"]) == 0
    out = capsys.readouterr().out
    assert "model-Q4_K_M.gguf: format gguf; stored types: Q5_0 (13), F32 (11), Q8_0 (3)" in out


def test_revision_applies_to_a_picked_file(hub, ggufs, tmp_path):
    old = _repo(tmp_path, "v1", {"model-Q8_0.gguf": ggufs["independent"], "model-Q4_K_M.gguf": ggufs["Q4_K_M"]})
    new = _repo(tmp_path, "v2", {"model-Q8_0.gguf": ggufs["Q8_0"], "model-Q4_K_M.gguf": ggufs["Q4_K_M"]})
    first = hub.add_repo("someone/m", old, revision="v1")
    hub.add_repo("someone/m", new)
    base = EXAMPLES / "base"
    assert modelkin.compare(base, "someone/m:Q8_0", hash_files=False).verdict == "related"
    assert modelkin.compare(base, "someone/m:Q8_0", revision_b="v1", hash_files=False).verdict == "independent"
    with open_model("someone/m/model-Q8_0.gguf", revision=first) as src:
        assert src.revision == first


def test_onnx_exports_in_a_subfolder(hub, tmp_path, capsys):
    """transformers.js-style repos keep exports under onnx/: a plain id lists them, a path opens one."""
    pytest.importorskip("onnx")
    try:
        from . import onnx_builders as ob
    except ImportError:
        import onnx_builders as ob
    from safetensors.numpy import load_file

    base = load_file(str(EXAMPLES / "base" / "model.safetensors"))
    folder = tmp_path / "xenova"
    ob.save(ob.export_decoder(base), folder / "onnx", name="model.onnx")
    ob.save(ob.export_decoder(base, quant="nbits"), folder / "onnx", name="model_q4.onnx")
    shutil.copy(EXAMPLES / "base" / "config.json", folder / "config.json")
    hub.add_repo("someone/x", folder)
    line = _one_line_error(capsys, ["inspect", "someone/x"])
    assert "no weights at its top level" in line and "onnx/model.onnx, onnx/model_q4.onnx" in line
    r = modelkin.compare(EXAMPLES / "base", "someone/x/onnx/model_q4.onnx", hash_files=False)
    assert r.verdict == "related"
    assert {t.dtype_b for t in r.tensors if len(t.shape) == 2} == {"QU4", "F32"}  # embeddings stay float


def _split_part(path: Path, no: int, count: int) -> Path:
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint16("split.no", no)
    w.add_uint16("split.count", count)
    w.add_int32("split.tensors.count", 1)
    w.add_tensor(f"blk.{no}.attn_norm.weight", np.ones(8, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_split_gguf_is_refused_in_one_line(hub, tmp_path, capsys):
    parts = {f"model-Q4_K_M-0000{i + 1}-of-00002.gguf": _split_part(tmp_path / f"p{i}.gguf", i, 2) for i in range(2)}
    hub.add_repo("someone/split", _repo(tmp_path, "split", parts))
    for location in ("someone/split", "someone/split:Q4_K_M"):
        line = _one_line_error(capsys, ["inspect", location])
        assert "split into 2 files" in line and "not supported yet" in line and "llama-gguf-split --merge" in line
    line = _one_line_error(capsys, ["inspect", "someone/split/model-Q4_K_M-00002-of-00002.gguf"])
    assert "part 2 of a GGUF split in 2 files: split GGUFs are not supported yet" in line
    with pytest.raises(UnsupportedError, match="part 1 of a GGUF split"):
        open_model(tmp_path / "p0.gguf")


def test_local_folder_with_several_ggufs(ggufs, tmp_path, capsys):
    folder = _repo(tmp_path, "local", {"a-Q8_0.gguf": ggufs["Q8_0"], "a-Q4_K_M.gguf": ggufs["Q4_K_M"]})
    with pytest.raises(SourceNotFoundError, match="holds 2 gguf files, each a whole model: give the path of the one to use"):
        open_model(folder)
    line = _one_line_error(capsys, ["inspect", str(folder)])
    assert "a-Q4_K_M.gguf, a-Q8_0.gguf" in line
    with open_model(folder / "a-Q8_0.gguf") as src:
        assert len(src.files) == 1
