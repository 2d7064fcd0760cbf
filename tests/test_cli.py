"""The command line for people and pipelines: usage errors, --fail-on exit codes, reports from compare and
from a saved JSON, and the documented table of exit codes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from modelkin import cli

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
BASE, CHILD, OTHER = (str(EXAMPLES / n) for n in ("base", "finetuned", "independent"))


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


# ---------------------------------------------------------------- usage errors


def test_unknown_option_is_a_usage_error_not_an_internal_one():
    proc = subprocess.run([sys.executable, "-m", "modelkin", "compare", "--bogus"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("Usage: modelkin compare [OPTIONS]")
    assert "No such option: --bogus" in proc.stderr and "internal error" not in proc.stderr


@pytest.mark.parametrize("args, problem", [
    (["compare", BASE], "Missing argument 'B'"),
    (["compare"], "Missing argument 'A'"),
    (["report"], "Missing argument"),
    (["compare", BASE, CHILD, "--fail-on", "relatd"], "Invalid value for '--fail-on'"),
    (["compare", BASE, CHILD, "--threads", "two"], "Invalid value for '--threads'"),
    (["frobnicate"], "No such command"),
])
def test_usage_errors_show_the_usage_line_and_exit_2(capsys, args, problem):
    code, out, err = run(capsys, *args)
    assert code == 2
    assert "Usage: modelkin" in err and problem in err and "internal error" not in err


def test_internal_errors_still_exit_3(capsys, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("a bug")

    monkeypatch.setattr("modelkin.api.compare", boom)
    code, _, err = run(capsys, "compare", BASE, CHILD, "-q")
    assert code == 3 and err.startswith("modelkin: internal error: RuntimeError: a bug")


# ---------------------------------------------------------------- --fail-on


@pytest.mark.parametrize("b, fail_on, code", [
    (CHILD, ["related"], 4),
    (CHILD, ["independent", "inconclusive"], 0),
    (OTHER, ["independent"], 4),
    (OTHER, ["related", "inconclusive"], 0),
])
def test_fail_on_sets_its_own_exit_code(capsys, b, fail_on, code):
    flags = [x for v in fail_on for x in ("--fail-on", v)]
    got, out, err = run(capsys, "compare", BASE, b, "--quiet", *flags)
    assert got == code
    assert out == "" and err == ""  # --quiet: the exit code says it all


def test_fail_on_says_why_unless_quiet(capsys):
    code, out, err = run(capsys, "compare", BASE, CHILD, "--fail-on", "related")
    assert code == 4
    assert "Verdict: related" in out
    assert err.strip().splitlines()[-1] == "modelkin: verdict is related (--fail-on related): exit code 4"


def test_fail_on_with_json_to_stdout_keeps_stdout_json(capsys):
    code, out, _ = run(capsys, "compare", BASE, CHILD, "--json", "-", "--fail-on", "related")
    assert code == 4 and json.loads(out)["verdict"] == "related"


# ---------------------------------------------------------------- reports


def test_compare_writes_reports_that_report_reproduces_from_the_json(capsys, tmp_path):
    a, b = str(EXAMPLES / "vlm-donor"), str(EXAMPLES / "vlm-graft")
    code, _, err = run(capsys, "compare", a, b, "--json", str(tmp_path / "r.json"), "--html", str(tmp_path / "r.html"),
                       "--md", str(tmp_path / "r.md"), "--quiet")
    assert code == 0 and err == ""
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["command"] == ["modelkin", "compare", a, b, "--json", str(tmp_path / "r.json"), "--html",
                              str(tmp_path / "r.html"), "--md", str(tmp_path / "r.md"), "--quiet"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", doc["created"])
    html = (tmp_path / "r.html").read_text()
    assert "modelkin compare " in html and doc["created"] in html

    (tmp_path / "again").mkdir()
    code, _, err = run(capsys, "report", str(tmp_path / "r.json"), "--html", str(tmp_path / "again" / "r.html"),
                       "--md", str(tmp_path / "again" / "r.md"), "--fail-on", "related")
    assert code == 4
    assert err.splitlines()[:2] == [f"modelkin: wrote HTML report {tmp_path / 'again' / 'r.html'}",
                                    f"modelkin: wrote Markdown report {tmp_path / 'again' / 'r.md'} and 7 figure files in "
                                    f"{tmp_path / 'again' / 'r_figures'}"]
    assert (tmp_path / "again" / "r.html").read_bytes() == (tmp_path / "r.html").read_bytes()
    assert (tmp_path / "again" / "r.md").read_bytes() == (tmp_path / "r.md").read_bytes()
    for svg in (tmp_path / "r_figures").iterdir():
        assert (tmp_path / "again" / "r_figures" / svg.name).read_bytes() == svg.read_bytes()


def test_report_input_problems_are_one_line_and_exit_2(capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"verdict": "related"}')
    code, _, err = run(capsys, "report", str(bad), "--html", str(tmp_path / "x.html"))
    assert code == 2 and err == f"modelkin: error: {bad}: not a modelkin comparison report: 'modelkin_version' missing or of the wrong type\n"
    code, _, err = run(capsys, "report", str(tmp_path / "none.json"), "--html", str(tmp_path / "x.html"))
    assert code == 2 and err == f"modelkin: error: {tmp_path / 'none.json'}: no such JSON report\n"
    code, _, err = run(capsys, "report", str(bad))
    assert code == 2 and err.startswith("modelkin: error:")


def test_report_folders_are_checked_before_the_work(capsys, tmp_path):
    missing = tmp_path / "no" / "such" / "r.html"
    code, _, err = run(capsys, "compare", "does-not-exist-a", "does-not-exist-b", "--html", str(missing))
    assert code == 2 and err == f"modelkin: error: {missing}: cannot write HTML report: its folder does not exist\n"


# ---------------------------------------------------------------- the documented table


def test_exit_codes_are_documented_alike_in_readme_and_cli():
    readme = (REPO / "README.md").read_text()
    table = dict(re.findall(r"^\| `(\d+)` \| ([^|]+) \|$", readme, re.M))
    doc = dict(re.findall(r"^    (\d+) +(.+)$", cli.__doc__, re.M))
    assert set(table) == set(doc) == {"0", "1", "2", "3", "4", "130"}
    assert (cli.EXIT_OK, cli.EXIT_CHECK_FAILED, cli.EXIT_BAD_INPUT, cli.EXIT_INTERNAL, cli.EXIT_FAIL_ON,
            cli.EXIT_INTERRUPTED) == (0, 1, 2, 3, 4, 130)
