"""``edge eval`` checks the model's class names against the dataset's (issue 13, item 4).

A model whose sidecar names other classes is refused, naming both lists (``--map-classes-by-index`` scores
it by index and prints the mapping); a model without names (no sidecar) is scored with a warning saying
the names come from nowhere; a checkpoint's names come from its model card. Real files throughout: the
synthetic red-box deploy graph (ONNX Runtime), a tiny VOC dataset on disk, a real checkpoint.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from edge.cli.main import main
from edge.runtime.synthetic import red_box_model
from tests.test_evaluate import _write_tiny_voc


@pytest.fixture()
def tiny(tmp_path):
    return _write_tiny_voc(tmp_path / "tiny")  # classes [red, green]


def _model(tmp_path: Path, names=None, sidecar: bool = True) -> Path:
    path = red_box_model(tmp_path / "red.nms.onnx", size=(96, 128))  # sidecar names [tall, wide]
    side = path.with_suffix(".json")
    if not sidecar:
        side.unlink()
    elif names is not None:
        doc = json.loads(side.read_text())
        doc["class_names"] = names
        side.write_text(json.dumps(doc))
    return path


def _eval(*args: str) -> int:
    return main(["eval", *args])


def test_a_model_of_other_classes_is_refused_naming_both_lists(tiny, tmp_path, capsys, caplog):
    model = _model(tmp_path)
    with caplog.at_level(logging.ERROR):
        rc = _eval(str(model), "--data", str(tiny), "--json", str(tmp_path / "m.json"))
    assert rc == 2
    msg = " ".join(r.getMessage() for r in caplog.records) + capsys.readouterr().err
    assert "class names differ" in msg and "['tall', 'wide']" in msg and "['red', 'green']" in msg, msg
    assert "--map-classes-by-index" in msg and "Traceback" not in msg
    assert not (tmp_path / "m.json").exists()  # nothing scored, nothing written


def test_map_classes_by_index_scores_anyway_and_prints_the_mapping(tiny, tmp_path, capsys):
    model = _model(tmp_path)
    assert _eval(str(model), "--data", str(tiny), "--map-classes-by-index", "--json", str(tmp_path / "m.json")) == 0
    out = capsys.readouterr().out
    assert "model 0 tall -> dataset 0 red" in out and "model 1 wide -> dataset 1 green" in out, out
    assert (tmp_path / "m.json").is_file()


def test_more_model_classes_than_the_dataset_cannot_be_mapped(tiny, tmp_path, caplog):
    model = _model(tmp_path, names=["cat", "dog", "car"])
    with caplog.at_level(logging.ERROR):
        assert _eval(str(model), "--data", str(tiny), "--map-classes-by-index") == 2
    assert "more classes than the dataset" in caplog.text


def test_matching_names_pass_case_aside(tiny, tmp_path, capsys):
    model = _model(tmp_path, names=["Red", "green "])
    assert _eval(str(model), "--data", str(tiny)) == 0
    assert "match the dataset's" in capsys.readouterr().out


def test_a_model_without_a_sidecar_says_the_names_come_from_nowhere(tiny, tmp_path, capsys):
    model = _model(tmp_path, sidecar=False)
    # no sidecar: the red-box graph's input (uint8 NHWC) is read from the graph; scored by index
    assert _eval(str(model), "--data", str(tiny)) == 0
    out = capsys.readouterr().out
    assert "has no class names" in out and "nowhere" in out and "was not found" in out, out
    assert "by index: 0 red, 1 green" in out


def test_a_checkpoint_names_its_classes_in_its_model_card(tiny, tmp_path, caplog):
    pytest.importorskip("torch")
    from edge.train.checkpoint import build_card, save_checkpoint
    from tests.export.test_torch_export import make_model

    model = make_model("yolov3-tiny", seed=3, num_classes=3)
    ckpt = save_checkpoint(tmp_path / "best.pt", {"card": build_card(model, class_names=["cat", "dog", "car"]),
                                                  "model": model.state_dict()})
    with caplog.at_level(logging.ERROR):
        assert _eval(str(ckpt), "--data", str(tiny)) == 2
    assert "['cat', 'dog', 'car'] (from its model card)" in caplog.text, caplog.text


def test_eval_help_names_the_check(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    out = capsys.readouterr().out
    assert "--map-classes-by-index" in out and "Class names" in out
