"""``edge doctor`` from the command line (``edge.cli.doctor`` -> ``edge.doctor.verb.run_doctor``): the JSON
report and the exit status, with and without ``--selftest``, and self-test options refused without it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.paths import REPO as ROOT


def test_cli_json_subprocess_exit_status_matches_failures(tmp_path):
    env = dict(os.environ, DISPLAY="", WAYLAND_DISPLAY="")
    proc = subprocess.run([sys.executable, "-m", "edge.cli.main", "-q", "doctor", "--json"], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=120)
    data = json.loads(proc.stdout)
    assert proc.returncode == data["exit_code"] == (1 if data["summary"]["fail"] else 0), proc.stderr
    display = next(c for c in data["checks"] if c["name"] == "display")
    assert display["status"] == "warn"
    assert "Traceback" not in proc.stderr


def test_cli_selftest_json(models, capsys):
    from edge.cli.main import main

    rc = main(["-q", "doctor", "--json", "--selftest", "--model", str(models["onnx"]), "--iterations", "2"])
    data = json.loads(capsys.readouterr().out)
    assert rc == data["exit_code"]
    names = {c["name"]: c for c in data["selftest"]}
    assert names["onnxruntime: NMS split"]["status"] == "ok"
    assert names["tensorrt fp16"]["status"] == "skip"
    assert data["summary"]["skip"] >= 3


def test_cli_selftest_exit_status_is_1_when_a_check_fails(models, capsys):
    from edge.cli.main import main

    rc = main(["-q", "doctor", "--selftest", "--model", str(models["pre"]), "--iterations", "1"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "fail  onnxruntime: load" in out and "-- self-test" in out


def test_cli_selftest_options_need_selftest(models, caplog):
    from edge.cli.main import main

    assert main(["doctor", "--model", str(models["onnx"])]) == 2
    assert "--model: self-test option(s) given without --selftest" in caplog.text
