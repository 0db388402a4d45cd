"""Write failures of the model stages are one clear line, not a traceback (issue 13, item 5).

Real small tmpfs disks (``tests.disks``), real graphs and the real ``edge`` command in-process: a full
disk, a folder under the output's name and a missing permission each give exit status 2 and one error
line naming the path and the cause (ENOSPC, EISDIR, EACCES), and leave nothing half-written.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path
from typing import List

import onnx
import pytest

from edge.artifacts import atomic_open, atomic_write_bytes, atomic_write_json, check_output_path
from edge.cli.main import main
from edge.errors import OutputError
from tests.disks import fill, small_disk
from tests.export.test_surgery import head_model
from tests.paths import SHARED

ULTRALIGHT = SHARED / "models" / "ultralight-rfb-320.onnx"


def _errors(caplog) -> List[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


# -- the atomic writers every stage uses --------------------------------------------------------------


def test_atomic_write_on_a_full_disk_names_the_path_and_keeps_the_old_file(tmp_path):
    with small_disk(tmp_path / "disk", "256k") as disk:
        target = disk / "report.json"
        target.write_text('{"old": true}\n')
        filler = fill(disk)
        with pytest.raises(OutputError) as caught:
            atomic_write_json(target, {"data": "x" * 100_000}, what="--json")
        assert caught.value.path == str(target) and caught.value.cause == "ENOSPC"
        assert str(caught.value).startswith(f"--json {target}: no space left on the device (ENOSPC)")
        assert json.loads(target.read_text()) == {"old": True}  # the old file, whole
        assert sorted(os.listdir(disk)) == sorted([target.name, filler.name])  # no temporary file left


def test_atomic_write_to_a_folder_is_refused_before_writing(tmp_path):
    folder = tmp_path / "model.onnx"
    folder.mkdir()
    with pytest.raises(OutputError, match=r"it is a folder \(EISDIR\)"):
        atomic_write_bytes(folder, b"x" * 1000)
    assert os.listdir(folder) == [] and os.listdir(tmp_path) == [folder.name]


def test_atomic_open_passes_the_callers_own_errors_unchanged(tmp_path):
    with pytest.raises(FileNotFoundError):
        with atomic_open(tmp_path / "out.bin") as fh:
            fh.write(b"partial")
            open(tmp_path / "missing-input.bin", "rb")  # the caller's read, not the write
    assert os.listdir(tmp_path) == []


def test_check_output_path_names_each_cause(tmp_path):
    (tmp_path / "dir.json").mkdir()
    (tmp_path / "file").write_text("")
    cases = [(tmp_path / "dir.json", "EISDIR"), (tmp_path / "no" / "s.json", "ENOENT"),
             (tmp_path / "file" / "s.json", "ENOTDIR")]
    for path, cause in cases:
        with pytest.raises(OutputError) as caught:
            check_output_path(path, "--stats-json")
        assert caught.value.cause == cause and str(caught.value).startswith(f"--stats-json {path}: ")
    assert check_output_path(tmp_path / "no" / "s.json", make_folder=True) == tmp_path / "no" / "s.json"
    with small_disk(tmp_path / "disk", "256k") as disk:
        fill(disk)
        with pytest.raises(OutputError, match="ENOSPC"):
            check_output_path(disk / "s.json")
    with small_disk(tmp_path / "ro", "64k", read_only=True) as ro:
        with pytest.raises(OutputError, match="EROFS"):
            check_output_path(ro / "s.json")
    assert os.listdir(tmp_path / "dir.json") == []


def test_a_stray_write_error_in_a_command_is_one_line(tmp_path, caplog):
    """The command line's safety net: an OSError only a write can raise, outside the atomic writers."""
    import argparse

    from edge.cli.common import run_verb

    with small_disk(tmp_path / "disk", "256k") as disk:
        fill(disk)

        def verb(args: argparse.Namespace) -> int:
            with open(disk / "plain.txt", "wb", buffering=0) as fh:
                fh.write(b"x" * 100_000)
            return 0

        rc = run_verb(verb, argparse.Namespace(verbose=False, quiet=False))
    assert rc == 2
    (message,) = _errors(caplog)
    assert "no space left on the device (ENOSPC)" in message


# -- edge surgery / quantize / export ------------------------------------------------------------------


def _save(model, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def _heavy_head(n: int = 20000):
    """The surgery tests' stand-in head with a real weight: boxes * ones[n, 4] (320 KB for 20000 boxes)."""
    import numpy as np
    from onnx import numpy_helper

    model = head_model(13, n, 3)
    model.graph.node[0].input[1] = "box_scale"
    model.graph.initializer.append(numpy_helper.from_array(np.ones((n, 4), np.float32), "box_scale"))
    onnx.checker.check_model(model)
    return model


def test_surgery_on_a_full_disk_is_one_line_and_writes_nothing(tmp_path, caplog):
    src = _save(_heavy_head(), tmp_path / "det.onnx")
    with small_disk(tmp_path / "disk", "256k") as disk:
        fill(disk, leave=80 * 1024)  # room enough to start: the graph itself does not fit
        out = disk / "det.nms.onnx"
        rc = main(["surgery", str(src), "--out", str(out)])
        left = sorted(os.listdir(disk))
    assert rc == 2 and left == ["filler.bin"]
    (message,) = _errors(caplog)
    assert message.startswith(f"--out {out}: no space left on the device (ENOSPC)"), message


def test_surgery_out_naming_a_folder_is_refused(tmp_path, caplog):
    src = _save(head_model(13, 10, 2), tmp_path / "det.onnx")
    folder = tmp_path / "deploy.onnx"
    folder.mkdir()
    assert main(["surgery", str(src), "--out", str(folder)]) == 2
    (message,) = _errors(caplog)
    assert message.startswith(f"--out {folder}: it is a folder (EISDIR)"), message
    assert os.listdir(folder) == []


@pytest.mark.skipif(not ULTRALIGHT.is_file(), reason=f"shared model not found at {ULTRALIGHT}")
def test_quantize_on_a_full_disk_is_one_line_and_writes_nothing(tmp_path, caplog):
    with small_disk(tmp_path / "disk", "256k") as disk:
        fill(disk, leave=80 * 1024)
        out = disk / "faces.fp16.onnx"
        rc = main(["quantize", str(ULTRALIGHT), "--precision", "fp16", "--no-gate", "--out", str(out)])
        left = sorted(os.listdir(disk))
    assert rc == 2 and left == ["filler.bin"]
    (message,) = _errors(caplog)
    assert message.startswith(f"--out {out}: no space left on the device (ENOSPC)"), message


def test_export_on_a_full_disk_blames_the_disk_not_the_opset(tmp_path, caplog):
    pytest.importorskip("torch")
    from tests.export.test_cli import write_checkpoint

    ckpt, _ = write_checkpoint(tmp_path / "best.pt", "yolov3-tiny", num_classes=3, input_size=[128, 128],
                               width=0.25)
    with small_disk(tmp_path / "disk", "256k") as disk:
        fill(disk, leave=16 * 1024)
        rc = main(["export", str(ckpt), "--out", str(disk / "onnx"), "--no-simplify"])
        left = sorted(os.listdir(disk))
        written = sorted(os.listdir(disk / "onnx")) if (disk / "onnx").is_dir() else []
    assert rc == 2 and left in (["filler.bin"], ["filler.bin", "onnx"]) and written == []
    (message,) = _errors(caplog)
    assert "yolov3-tiny_128x128.onnx" in message and "(ENOSPC)" in message, message
    assert "opset" not in message


def test_output_error_names_the_errno_and_what_to_do():
    full = OutputError.from_os_error("/media/sd/o.mp4", OSError(errno.ENOSPC, "No space left on device"),
                                     what="--output", note="after 12 frames")
    assert str(full) == ("--output /media/sd/o.mp4: no space left on the device (ENOSPC); after 12 frames; "
                         "free space on the disk of /media/sd or write to another disk")
    denied = OutputError.from_os_error("/srv/s.json", PermissionError(errno.EACCES, "Permission denied"))
    assert denied.cause == "EACCES" and str(denied).startswith("cannot write /srv/s.json: permission denied")
