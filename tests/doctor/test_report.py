"""``edge.doctor.report``: the text and JSON forms of a report agree, and a check's status is one of four."""

from __future__ import annotations

import json

import pytest

from edge.doctor.probes import collect_report
from edge.doctor.report import FAIL, WARN, Check
from tests.doctor.fake_systems import fake_jetson
from tests.trt_standin import make_tensorrt


def test_report_text_and_json_agree(tmp_path):
    report = collect_report(fake_jetson(tmp_path), trt_module=make_tensorrt("8.5.2"))
    text = report.format_text()
    data = report.to_dict()
    counts = data["summary"]
    assert f"{counts['ok']} ok, {counts['warn']} warn, {counts['fail']} fail, {counts['skip']} skip" in text
    for check in data["checks"]:
        assert f"{check['status']:<4}  {check['name']}" in text
        if check["status"] in (WARN, FAIL):
            assert check["fix"], f"{check['name']} is {check['status']} but says nothing about how to fix it"
    assert data["exit_code"] == (1 if counts["fail"] else 0)
    json.dumps(data)  # serializable as is


def test_check_rejects_unknown_status():
    with pytest.raises(ValueError):
        Check("x", "good", "")
