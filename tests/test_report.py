"""The HTML and Markdown reports (issue: a report people can publish).

The reports are views of the JSON record: the tests check the plain-word findings, that a saved JSON renders
the same bytes, the Markdown's structure and figure files, escaping of hostile names, and — in a real
headless Chromium — that the HTML works offline: no request, no console error, every card and figure there,
a table that sorts and filters, a non-blank screenshot.
"""

from __future__ import annotations

import copy
import io
import json
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

import modelkin
from modelkin.errors import FormatError, SourceNotFoundError
from modelkin.report.findings import build_findings, fmt_count, fmt_share
from modelkin.report.html import render_html, write_html
from modelkin.report.load import load_result
from modelkin.report.markdown import figure_dir, render_markdown, write_markdown

from builders import perturb, qwen2_tensors, write_model
from chromium import Chromium, find_chromium

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DROP_PAIR = ("models/qwen2-A-tA512-s1", "models/qwen2-A-tA512-s1~drop1")  # layer 1 of A dropped


def _doc(result) -> dict:
    return json.loads(result.to_json())


@pytest.fixture(scope="module")
def vlm():
    """The README's example: B grafted A's vision tower (then trained it) onto its own text tower."""
    return _doc(modelkin.compare(EXAMPLES / "vlm-donor", EXAMPLES / "vlm-graft"))


@pytest.fixture(scope="module")
def dropped(smoke_zoo):
    return _doc(modelkin.compare(smoke_zoo / DROP_PAIR[0], smoke_zoo / DROP_PAIR[1]))


@pytest.fixture(scope="module")
def moe(tmp_path_factory):
    """A mixture of experts whose experts B reordered (as tests/test_compare.py builds it)."""
    tmp = tmp_path_factory.mktemp("moe")
    base = {k: v for k, v in qwen2_tensors(1, hidden=64, ffn=64).items() if ".mlp." not in k}
    r = np.random.default_rng(9)
    for layer in range(2):
        base[f"model.layers.{layer}.mlp.gate.weight"] = r.normal(size=(4, 64)).astype(np.float32)
        for e in range(4):
            for proj in ("gate_proj", "up_proj", "down_proj"):
                base[f"model.layers.{layer}.mlp.experts.{e}.{proj}.weight"] = r.normal(size=(64, 64)).astype(np.float32)
    order = [2, 0, 3, 1]
    child = dict(base)
    for layer in range(2):
        p = f"model.layers.{layer}.mlp."
        child[p + "gate.weight"] = base[p + "gate.weight"][order]
        for j, i in enumerate(order):
            for proj in ("gate_proj", "up_proj", "down_proj"):
                child[f"{p}experts.{j}.{proj}.weight"] = base[f"{p}experts.{i}.{proj}.weight"]
    a = write_model(tmp / "a", base, {"model_type": "qwen3_moe"})
    b = write_model(tmp / "b", perturb(child, 0.3), {"model_type": "qwen3_moe"})
    return _doc(modelkin.compare(a, b))


# ---------------------------------------------------------------- findings in plain words


def test_headline_says_per_component_what_was_found(vlm):
    f = build_findings(vlm)
    assert f.verdict == "related"
    assert f.headline == ("B's vision encoder comes from the same weights as A's. "
                          "B's text backbone and projector show no sign of derivation from A's (independent).")
    assert [c.name for c in f.cards] == ["vision", "text", "projector"]  # the finding first, then by size
    vision, text, projector = f.cards
    params = vlm["b"]["parameters"]
    assert params == {"projector": 82304, "text": 139840, "vision": 107904}  # numel of the example's tensors by prefix
    assert vision.sentence.startswith("vision encoder: 108 K parameters, 33 % of B, comes from the same weights as "
                                      "A's vision encoder (median Pearson 0.")
    assert re.search(r"over 11 evidence tensors; log10 p = −\d+\.\d\)\.$", vision.sentence), vision.sentence
    assert text.sentence.startswith("text backbone: 140 K parameters, 42 % of B, independent of A's: "
                                    "no unit-level match in 16 evidence tensors")
    assert dict(vision.facts)["parameters compared"] == "108 K (100 % of A's vision encoder)"
    assert vision.deciding_test == "same-index"
    assert vision.what_would_change.startswith("11 of the 11 evidence tensors are each decisive on their own")
    assert re.match(r"It would be called related at combined log10 p ≤ −4\.5; it is −?\d+\.\d\. If B's units matched",
                    text.what_would_change), text.what_would_change
    assert "(95 % power) and made it related" in text.what_would_change


def test_counts_and_shares_are_worded_for_readers():
    assert [fmt_count(n) for n in (812, 12_345, 82_304, 6_700_000, 670_000_000, 31_000_000_000)] == \
        ["812", "12.3 K", "82.3 K", "6.7 M", "0.67 B", "31 B"]
    assert [fmt_share(p, 100_000) for p in (0, 50, 2_000, 42_000)] == ["0 %", "< 0.1 %", "2.0 %", "42 %"]


def test_each_non_evidence_reason_is_listed_once_with_its_tensors(vlm):
    f = build_findings(vlm)
    reasons = [g.title for g in f.non_evidence]
    assert len(reasons) == len(set(reasons)) == len({t["non_evidence_reason"] for t in vlm["tensors"] if not t["evidence"]})
    norms = next(g for g in f.non_evidence if g.title.startswith("norm gains"))
    assert norms.detail == "10 tensors: cosine 1.00, Pearson " + norms.detail.split("Pearson ")[1]
    assert norms.detail.endswith("— not counted")
    assert sorted(norms.names) == sorted(t["a"] for t in vlm["tensors"] if t["non_evidence_reason"] == norms.title)


def test_layer_map_of_a_pruned_model_is_worded_and_drawn(dropped):
    f = build_findings(dropped)
    (card,) = f.cards
    assert card.verdict == "related"
    assert card.layer_map == "recovered by similarity: 0→0, 2→1; A's layers [1] dropped"
    lm = dropped["components"]["text"]["layer_map"]
    assert lm["layers_a"] == [0, 1, 2] and lm["layers_b"] == [0, 1]
    s = np.array(lm["similarity"])
    assert s.shape == (3, 2) and s[0, 0] > 0.9 and s[2, 1] > 0.9 and abs(s[1]).max() < 0.2
    assert dict(card.facts)["tensors without a counterpart"] == "12"
    assert [g.title for g in f.unmatched] == ["only in A: layer dropped in B (no layer of B matches it)"]


# ---------------------------------------------------------------- one source: the JSON


def test_saved_json_renders_the_same_reports(tmp_path):
    result = modelkin.compare(EXAMPLES / "vlm-donor", EXAMPLES / "vlm-graft")
    saved = tmp_path / "result.json"
    saved.write_text(result.to_json())
    # two independent renders, one from the live result and one from the file: no date, no random ids
    assert render_html(result) == render_html(load_result(saved))
    assert render_markdown(result, "f") == render_markdown(load_result(saved), "f")


def test_reports_of_older_json_without_the_new_fields(vlm):
    old = copy.deepcopy(vlm)
    for key in ("created", "command", "min_effect"):
        old.pop(key)
    for side in ("a", "b"):
        old[side].pop("parameters")
    for comp in old["components"].values():
        for key in ("layers_a", "layers_b", "similarity"):
            comp["layer_map"].pop(key, None)
    f = build_findings(old)
    assert f.cards[0].sentence.startswith("vision encoder: comes from the same weights as A's vision encoder")
    html = render_html(old)
    assert html.count('data-figure="vision-layer-map"') == 0 and html.count('data-figure="vision-layers"') == 1


def test_revision_reads_and_file_records_are_shown(vlm):
    doc = copy.deepcopy(vlm)
    assert doc["a"]["files"]["model.safetensors"]["sha256_source"] == "hashed"
    doc["a"]["revision"] = "0123456789abcdef0123456789abcdef01234567"
    doc["b"]["files"] = {"model.safetensors": {"size": 1325816, "sha256": "ab" * 32, "sha256_source": "hub", "etag": '"x1"'}}
    doc["reads"] = {"mode": "sampled", "planned_bytes": 2_000_000, "full_bytes": 8_000_000, "remote_bytes_fetched": 900_000,
                    "remote_bytes_cached": 100_000, "remote_requests": 12, "max_bytes": 3_000_000,
                    "left_out": ["model.layers.1.mlp.up_proj.weight"]}
    doc["tensors"][0].update(pearson_ci=[0.1, 0.2], sampled_rows=[64, 512], identical=True, identity_basis="sampled")
    f = build_findings(doc)
    assert f.inputs[0]["revision"] == "0123456789abcdef0123456789abcdef01234567" and f.inputs[1]["revision"] == "—"
    assert f.inputs[1]["files"] == [("model.safetensors", "ab" * 32, 'as reported by the Hub, 1.33 MB, etag "x1"')]
    assert f.inputs[0]["files"][0][2] == "hashed by modelkin, 1.33 MB"
    assert dict(f.provenance)["reads"] == (
        "sampled: key-seeded blocks of rows of each compared tensor were read (see the method notes); 2 MB of 8 MB of "
        "tensor data (25 %); 12 HTTP range requests, 900 KB fetched, 100 KB from the cache; byte cap 3 MB; "
        "1 tensors left out by the cap (listed under Not compared)")
    assert f.unmatched[-1].names == ["model.layers.1.mlp.up_proj.weight"]
    assert f.caveats[-1].startswith("The tensors were read at sampled rows")
    row = f.tensors[0]
    assert row["pearson"].endswith(" [0.100, 0.200]") and row["shape"].endswith("(rows read 64/512)")
    assert row["identical"] == "yes (sampled rows)"


@pytest.mark.parametrize("text, problem", [
    ("{not json", "not a readable JSON report"),
    ("[1, 2]", "the JSON is not an object"),
    ('{"modelkin_version": "0.1.0"}', "'a' missing"),
])
def test_a_file_that_is_no_report_is_named_in_one_line(tmp_path, text, problem):
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    with pytest.raises(FormatError) as e:
        load_result(bad)
    assert str(e.value).startswith(f"{bad}: ") and problem in str(e.value)
    with pytest.raises(SourceNotFoundError):
        load_result(tmp_path / "missing.json")


def test_a_report_missing_a_tensor_field_is_rejected(vlm, tmp_path):
    doc = copy.deepcopy(vlm)
    del doc["tensors"][3]["pearson"]
    bad = tmp_path / "r.json"
    bad.write_text(json.dumps(doc))
    with pytest.raises(FormatError, match="tensor record 3 lacks pearson"):
        load_result(bad)


# ---------------------------------------------------------------- HTML: self-contained and safe


def test_html_is_one_file_that_fetches_nothing(vlm):
    html = render_html(vlm)
    refs = re.findall(r'\b(?:src|href|action|poster|data)\s*=\s*"([^"]*)"', html)
    assert refs and all(r.startswith(("#", "data:")) for r in refs), [r for r in refs if not r.startswith(("#", "data:"))]
    assert "url(http" not in html and "@import" not in html and "<link rel=\"stylesheet\"" not in html
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1)
    assert "default-src 'none'" in csp
    # the one inline script is allowed by its hash, nothing else
    import base64
    import hashlib

    script = re.search(r"<script>(.*?)</script>", html, re.S).group(1)
    assert f"'sha256-{base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()}'" in csp
    assert html.count("<script") == 1


def test_hostile_names_are_escaped(vlm):
    doc = copy.deepcopy(vlm)
    doc["tensors"][0]["a"] = '<img src="http://evil.example/x.png">'
    doc["a"]["location"] = "<script>alert(1)</script>|*_"
    html = render_html(doc)
    assert "<img src=\"http://evil" not in html and "&lt;img src=&#34;http://evil." in html
    assert "<script>alert(1)" not in html
    md, _ = render_markdown(doc, "f")
    assert md.splitlines()[0] == r"# modelkin report: \<script\>alert(1)\</script\>\|\*\_ vs examples/vlm-graft".replace(
        "examples/vlm-graft", vlm["b"]["location"])


def test_expert_map_is_drawn_for_reordered_experts(moe):
    html = render_html(moe)
    assert 'data-figure="text-experts"' in html
    _, files = render_markdown(moe, "f")
    assert "text-experts.svg" in files


# ---------------------------------------------------------------- Markdown: golden structure


def test_markdown_report_structure_and_figure_files(vlm, tmp_path):
    out = tmp_path / "report.md"
    written = write_markdown(vlm, out)
    text = out.read_text()
    headings = [line for line in text.splitlines() if line.startswith("#")]
    assert headings == [
        f"# modelkin report: {vlm['a']['location']} vs {vlm['b']['location']}".replace("_", r"\_"),
        "## Components",
        "### vision encoder: related",
        "### text backbone: independent",
        "### projector: independent",
        "## Strongest evidence tensors",
        "## Not evidence",
        "## How to read this",
        "### Caveats",
        "### Notes on this comparison",
        "## Provenance",
    ]
    assert text.startswith(headings[0] + "\n\n**Verdict: related.** B's vision encoder comes from the same weights as A's.")
    # every figure is a relative link to a file beside the report, and every file is linked
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    folder = figure_dir(out)
    assert sorted(links) == sorted(f"{folder.name}/{p.name}" for p in folder.iterdir())
    assert sorted(p.name for p in folder.iterdir()) == [
        "projector-unit-scores.svg", "text-layer-map.svg", "text-layers.svg", "text-unit-scores.svg",
        "vision-layer-map.svg", "vision-layers.svg", "vision-unit-scores.svg",
    ]
    assert set(written) == {out, *folder.iterdir()}
    for link in links:
        root = ET.parse(tmp_path / link).getroot()
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
    # one bullet per non-evidence reason, each naming its tensors
    section = text.split("## Not evidence\n")[1].split("\n## ")[0]
    bullets = [line for line in section.splitlines() if line.startswith("- ")]
    assert len(bullets) == len({t["non_evidence_reason"] for t in vlm["tensors"] if not t["evidence"]})
    assert all("— not counted: `" in b for b in bullets)
    # provenance names both weights files with their digests
    for side in ("a", "b"):
        digest = vlm[side]["files"]["model.safetensors"]["sha256"]
        assert f"| {side.upper()} | `model.safetensors` | `{digest}` | hashed by modelkin, 1.33 MB |" in text


# ---------------------------------------------------------------- a real browser

REQUIRE_CHROMIUM = os.environ.get("MODELKIN_REQUIRE_CHROMIUM") == "1"  # set by .ci/run, which installs it


@pytest.fixture(scope="module")
def browser():
    binary = find_chromium()
    if binary is None:
        if REQUIRE_CHROMIUM:
            pytest.fail("chromium is required (MODELKIN_REQUIRE_CHROMIUM=1) but not installed")
        pytest.skip("no chromium installed (.ci/run installs Debian's chromium)")
    b = Chromium(binary)
    yield b
    b.close()


def _check_in_browser(browser, doc: dict, path: Path) -> "object":
    write_html(doc, path)
    page = browser.open(path.resolve().as_uri(), 1280, 1500)
    assert page.requests() == []
    assert page.errors() == []
    cards = page.eval("Array.from(document.querySelectorAll('article.card')).map(c => c.dataset.component)")
    assert sorted(cards) == sorted(doc["components"])
    figures = page.eval("Array.from(document.querySelectorAll('figure.figure')).map(f => "
                        "[f.dataset.figure, f.querySelector('svg').getBoundingClientRect().width > 200])")
    expected = [fig for comp in doc["components"] for fig in _expected_figures(doc, comp)]
    assert sorted(f for f, _ in figures) == sorted(expected)
    assert all(visible for _, visible in figures)
    return page


def _expected_figures(doc: dict, comp: str) -> list[str]:
    layered = {t["layer_a"] for t in doc["tensors"] if t["component"] == comp and t["layer_a"] is not None}
    lm = doc["components"][comp]["layer_map"]
    out = []
    if len(layered | set(lm.get("dropped_a") or [])) >= 2:
        out.append(f"{comp}-layers")
    if lm.get("similarity"):
        out.append(f"{comp}-layer-map")
    if any(t["evidence"] for t in doc["tensors"] if t["component"] == comp):
        out.append(f"{comp}-unit-scores")
    return out


def test_vlm_report_in_chromium(browser, vlm, tmp_path):
    page = _check_in_browser(browser, vlm, tmp_path / "vlm.html")
    # sort by log10 p: ascending puts the strongest evidence first, missing values last
    keys = ("Array.from(document.querySelectorAll('#tensor-table tbody tr')).map(r => r.cells[12].dataset.k)")
    page.eval("Array.from(document.querySelectorAll('#tensor-table th')).find(h => h.textContent === 'log10 p').click()")
    asc = page.eval(keys)
    numbers = [float(k) for k in asc if k]
    assert numbers == sorted(numbers) and asc[len(numbers):] == [""] * (len(asc) - len(numbers))
    assert len(numbers) == sum(1 for t in vlm["tensors"] if t["evidence"])
    page.eval("Array.from(document.querySelectorAll('#tensor-table th')).find(h => h.textContent === 'log10 p').click()")
    desc = [float(k) for k in page.eval(keys) if k]
    assert desc == sorted(numbers, reverse=True)
    # filter: a name fragment, then evidence only
    page.eval("const q = document.getElementById('tensor-filter'); q.value = 'layernorm'; q.dispatchEvent(new Event('input'))")
    shown = page.eval("Array.from(document.querySelectorAll('#tensor-table tbody tr')).filter(r => !r.hidden).length")
    assert shown == sum(1 for t in vlm["tensors"] if "layernorm" in (t["a"] + t["b"]).lower()) > 0
    page.eval("const e = document.getElementById('tensor-evidence'); e.checked = true; e.dispatchEvent(new Event('change'))")
    assert page.eval("document.getElementById('tensor-count').textContent") == f"0 of {len(vlm['tensors'])} tensor pairs shown"
    _assert_not_blank(page.screenshot())
    assert page.errors() == [] and page.requests() == []


def test_layer_pruned_report_in_chromium(browser, dropped, tmp_path):
    page = _check_in_browser(browser, dropped, tmp_path / "dropped.html")
    text = page.eval("document.getElementById('component-text').innerText")
    assert "recovered by similarity: 0→0, 2→1; A's layers [1] dropped" in text
    _assert_not_blank(page.screenshot())


def _assert_not_blank(png: bytes) -> None:
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    assert img.shape == (1500, 1280)
    assert (img < 200).mean() > 0.03  # text, badges and figures, not an empty page
    assert len(np.unique(img)) > 50


def test_the_browser_check_sees_requests_and_console_errors(browser, tmp_path):
    """The checks above can fail: a page that fetches and logs an error is caught."""
    bad = tmp_path / "bad.html"
    # The policy blocks the fetch (no packet leaves), yet the attempt is reported, as is the violation.
    bad.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"><link rel="icon" href="data:,">'
                   '<meta http-equiv="Content-Security-Policy" content="img-src data:; script-src \'unsafe-inline\'">'
                   '</head><body><img src="http://192.0.2.1/x.png"><script>console.error("boom")</script></body></html>')
    page = browser.open(bad.as_uri())
    assert page.requests() == ["http://192.0.2.1/x.png"]
    errors = page.errors()
    assert "boom" in errors and any("Content Security Policy" in e for e in errors)


def test_the_method_notes_shipped_with_the_templates_are_docs_method_md():
    from modelkin.report.templating import TEMPLATES

    assert (TEMPLATES / "method.md").read_text() == (Path(__file__).resolve().parent.parent / "docs" / "method.md").read_text()
