"""A checkpoint that fails to load is named and explained in edge's words (issue 13, item 12): PyTorch's hint
to retry with ``weights_only=False`` (which runs whatever code the file holds) is never relayed. Real files
written by ``torch.save``: a pickle that would run a command, a pickled module, a truncated and a garbage
file."""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")

from edge.cli.main import main  # noqa: E402
from edge.errors import ModelError  # noqa: E402
from edge.train.checkpoint import read_checkpoint  # noqa: E402


class _RunsACommand:
    def __reduce__(self):
        return (os.system, ("echo never-run",))


def _files(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"format": "edge-checkpoint", "x": _RunsACommand()}, evil)
    module = tmp_path / "module.pt"
    torch.save({"format": "edge-checkpoint", "obj": torch.nn.Linear(2, 2)}, module)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(module.read_bytes()[:300])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint " * 8)
    return {"evil": evil, "module": module, "truncated": truncated, "garbage": garbage}


@pytest.mark.parametrize("name, why", [("evil", "never unpickles"), ("module", "(torch.nn.modules.linear.Linear)"),
                                       ("truncated", "may be corrupt"), ("garbage", "may be corrupt")])
def test_load_failures_name_the_file_and_never_suggest_weights_only_false(tmp_path, name, why):
    path = _files(tmp_path)[name]
    with pytest.raises(ModelError) as err:
        read_checkpoint(path)
    msg = str(err.value)
    assert str(path) in msg and why in msg and "not an edge checkpoint" in msg, msg
    assert "weights_only" not in msg and "False" not in msg and "trust" not in msg, msg


def test_the_cli_says_it_in_one_line(tmp_path, capsys, caplog):
    path = _files(tmp_path)["evil"]
    assert main(["export", str(path), "--out", str(tmp_path / "out")]) == 2
    text = caplog.text + capsys.readouterr().err
    assert "never unpickles" in text and "weights_only" not in text and "Traceback" not in text, text
