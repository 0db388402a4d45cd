"""``edge.bench.report``: the Markdown tables and the chart say what the document says."""

from __future__ import annotations

import json

import cv2
import pytest

from edge.bench.report import case_label, load_doc, markdown_report, write_reports
from edge.errors import EdgeError


def test_reports_markdown_and_png(doc, tmp_path):
    paths = write_reports(doc, tmp_path / "rep")
    md = paths["markdown"].read_text()
    case = doc["cases"][0]
    assert case_label(case) == "fp32 96x128"
    assert "| fp32 96x128 |" in md
    assert f"{case['raw_fps']:.1f}" in md and f"{case['e2e_fps']:.1f}" in md and f"{case['naive_fps']:.1f}" in md
    assert "e2e / raw" in md and "glass-to-glass" in md and doc["machine"]["cpu"] in md
    # the table is well formed: every row has as many cells as its header
    for table in md.split("\n\n"):
        rows = [r for r in table.splitlines() if r.startswith("|")]
        if rows:
            assert len({r.count("|") for r in rows}) == 1, table
    img = cv2.imread(str(paths["chart"]))
    assert img is not None and img.shape[0] > 200 and img.shape[1] > 400
    assert img.std() > 10  # drawn, not blank


def test_reports_are_written_whole_or_not_at_all(doc, tmp_path):
    """A folder where the chart should go: one clear error naming it, the earlier report intact, no temporary
    file left behind."""
    from edge.errors import OutputError

    out = tmp_path / "rep"
    write_reports(doc, out)
    before = (out / "bench.md").read_text()
    (out / "bench.png").unlink()
    (out / "bench.png").mkdir()
    with pytest.raises(OutputError, match="bench.png"):
        write_reports(doc, out)
    assert (out / "bench.md").read_text() == before
    assert sorted(p.name for p in out.iterdir()) == ["bench.md", "bench.png"]


def test_report_of_several_models_labels_each(doc, tmp_path):
    other = json.loads(json.dumps(doc["cases"][0]))
    other.update(model_name="red.int8.onnx", precision="int8", input=[320, 320], e2e_fps=12.5)
    two = dict(doc, cases=[doc["cases"][0], other])
    md = markdown_report(two)
    assert "| fp32 96x128 red.onnx |" in md and "| int8 320x320 red.int8.onnx | " in md and "12.5" in md
    path = tmp_path / "b.json"
    path.write_text(json.dumps(two))
    assert load_doc(path)["cases"][1]["precision"] == "int8"
    path.write_text("{}")
    with pytest.raises(EdgeError, match="not an `edge bench` document"):
        load_doc(path)
