"""``edge bench`` from the command line: the document, the reports, the terminal summary, one-line errors,
no torch on the way, the bundled model by default."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge.cli.main import main
from tests.bench.checks import REQUIRED, _check_case
from tests.paths import REPO as ROOT


def test_cli_end_to_end(model, tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(["bench", str(model), "--source", "test://160x120?frames=40", "--frames", "20", "--repeats", "1",
               "--threads", "1", "--json", str(out), "--report-dir", str(tmp_path / "rep"), "--no-raw-reference"])
    assert rc == 0
    doc = json.loads(out.read_text())
    for key in REQUIRED:
        assert doc[key] >= 0
    _check_case(doc["cases"][0], 20)
    assert doc["command"].startswith(f"edge bench {model} --source test://160x120?frames=40 --frames 20")
    assert doc["command"].endswith("--no-raw-reference --json " + str(out) + " --report-dir " + str(tmp_path / "rep"))
    assert (tmp_path / "rep" / "bench.md").read_text().count("| fp32 96x128 |") == 2
    assert (tmp_path / "rep" / "bench.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "e2e" in printed and f"wrote {out}" in printed


def test_cli_errors_are_one_clear_line(model, tmp_path, caplog):
    out = str(tmp_path / "b.json")
    assert main(["bench", str(tmp_path / "missing.onnx"), "--json", out]) == 2
    assert "not found" in caplog.text
    assert main(["bench", str(model), "--imgsz", "320", "--frames", "5", "--json", out,
                 "--source", "test://64x48?frames=5"]) == 2
    assert "fixed 96x128 input" in caplog.text
    assert main(["bench", str(model), "--json", str(tmp_path / "nowhere" / "b.json")]) == 2
    assert "does not exist" in caplog.text
    with pytest.raises(SystemExit):
        main(["bench", str(model), "--imgsz", "big", "--json", out])


def test_bench_path_imports_no_torch(model, tmp_path):
    """The bench runs where the runtime runs (a Jetson without torch)."""
    code = (
        "import sys, edge.bench, edge.bench.report\n"
        "from edge.cli.main import main\n"
        f"rc = main(['-q', 'bench', {str(model)!r}, '--source', 'test://64x48?frames=8', '--frames', '6', "
        f"'--repeats', '1', '--threads', '1', '--no-raw-reference', '--json', {str(tmp_path / 'b.json')!r}])\n"
        "assert rc == 0, rc\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=120)


def test_bench_without_a_model_runs_the_bundled_one(tmp_path):
    from edge.bundled import ASSETS, DEPLOY_MODEL

    if not (ASSETS / DEPLOY_MODEL).is_file():
        pytest.skip(f"no bundled model in {ASSETS}")
    out = tmp_path / "b.json"
    assert main(["bench", "--source", "test://160x120?frames=6", "--frames", "6", "--repeats", "1", "--threads", "1",
                 "--no-raw-reference", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert Path(doc["model"]).name == DEPLOY_MODEL and doc["input"] == [320, 320]
    _check_case(doc["cases"][0], 6)
