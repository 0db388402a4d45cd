"""Multi-process training with torch.distributed: two CPU processes (gloo) launched by torchrun through the
real ``edge train`` CLI end with identical weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .test_loop import tiny_dataset_yaml

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed")
def test_torchrun_two_processes_identical_weights(tmp_path):
    yaml = tiny_dataset_yaml(tmp_path, n_train=4, n_val=2)
    out = tmp_path / "run"
    hashes = tmp_path / "hashes"
    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(repo))
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "edge.cli.main", "train", "--model", "yolov3-tiny", "--data", str(yaml), "--imgsz", "64",
        "--epochs", "1", "--batch", "1", "--out", str(out), "--model-arg", "width=0.25", "--threads", "1",
        "--val-split", "none", "--rank-hash-dir", str(hashes), "--ema",
    ]
    proc = subprocess.run(cmd, cwd=str(repo), env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    r0 = json.loads((hashes / "rank0.json").read_text())
    r1 = json.loads((hashes / "rank1.json").read_text())
    assert r0["world_size"] == r1["world_size"] == 2
    # 4 images over 2 processes at batch 1: 2 optimizer steps on each rank
    assert r0["iteration"] == r1["iteration"] == 2
    assert r0["params"] == r1["params"]
    assert r0["buffers"] == r1["buffers"]  # BatchNorm statistics synchronized from rank 0 at the end

    # only rank 0 wrote the run's files, and its card records the world size
    last = torch.load(out / "last.pt", weights_only=True)
    assert last["card"]["training"]["world_size"] == 2
    assert last["card"]["training"]["batch"] == 1
    assert "trained yolov3-tiny" in proc.stdout and proc.stdout.count("trained yolov3-tiny") == 1

    # the weights moved away from the initialization (DDP really trained)
    from edge.models import build_model
    from edge.train.distributed import state_hashes

    torch.manual_seed(0)
    init = build_model("yolov3-tiny", num_classes=3, input_size=(64, 64), width=0.25)
    assert state_hashes(init)["params"] != r0["params"]
