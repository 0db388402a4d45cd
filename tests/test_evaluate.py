"""``edge eval`` end to end, the detections-file contract (every bad case with a real file), and
``evaluate_model`` with a real predictor on real images."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Dict, List, Tuple

import cv2
import numpy as np
import pytest

from edge.cli.main import main
from edge.data import load_dataset
from edge.errors import DataError, EdgeError, ModelError
from edge.evaluate import (
    evaluate_detections,
    evaluate_model,
    format_table,
    load_detections,
    plot_pr_curves,
    save_detections,
)
from edge.metrics import ImageDetections
from edge.runtime.predictors import PREDICTOR_LOADERS, load_predictor
from tests.paths import BCCD, BCCD_YAML

# BGR colours of the two classes drawn in the tiny dataset
COLOURS = {"red": (0, 0, 255), "green": (0, 255, 0)}
# image stem -> [(class name, x1, y1, x2, y2)]
TINY = {
    "img_a": [("red", 10, 12, 50, 40), ("green", 60, 20, 110, 80)],
    "img_b": [("green", 5, 5, 45, 30)],
    "img_c": [("red", 30, 30, 100, 70), ("red", 2, 60, 20, 85)],
}


def _write_tiny_voc(root: Path) -> Path:
    """A real VOC dataset: 120x90 JPEG-free PNG images with filled rectangles, XML, split file, YAML."""
    (root / "JPEGImages").mkdir(parents=True)
    (root / "Annotations").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for stem, objects in TINY.items():
        image = np.full((90, 120, 3), 40, np.uint8)
        xml_objects = []
        for name, x1, y1, x2, y2 in objects:
            # pixels x1..x2-1 filled: the box [x1, x2) x [y1, y2) in continuous coordinates
            image[y1:y2, x1:x2] = COLOURS[name]
            xml_objects.append(
                f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x1}</xmin>"
                f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
            )
        assert cv2.imwrite(str(root / "JPEGImages" / f"{stem}.png"), image)
        (root / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.png</filename><size><width>120</width><height>90</height>"
            f"<depth>3</depth></size>{''.join(xml_objects)}</annotation>"
        )
    (root / "ImageSets" / "Main" / "test.txt").write_text("\n".join(TINY) + "\n")
    yaml_path = root / "tiny.yaml"
    yaml_path.write_text(
        "name: tiny\nroot: .\nformat: voc\nsplits:\n  test: ImageSets/Main/test.txt\nnames: [red, green]\n"
    )
    return yaml_path


@pytest.fixture()
def tiny(tmp_path):
    yaml_path = _write_tiny_voc(tmp_path / "tiny")
    return yaml_path, load_dataset(yaml_path, "test")


def _perfect_entries() -> List[Dict]:
    names = list(COLOURS)
    out = []
    for stem, objects in TINY.items():
        for i, (name, x1, y1, x2, y2) in enumerate(objects):
            out.append(
                {"image_id": stem, "category_id": names.index(name), "bbox": [x1, y1, x2 - x1, y2 - y1],
                 "score": 0.9 - 0.1 * i}
            )  # fmt: skip
    return out


def _write(path: Path, obj) -> Path:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


# ------------------------------------------------------------------------------------------------
# The CLI end to end
# ------------------------------------------------------------------------------------------------


def test_eval_help_works(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["eval", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--detections" in out and "--json" in out and "--plot-pr" in out


def test_cli_scores_a_detections_file_and_writes_json_and_plot(tiny, tmp_path, capsys):
    yaml_path, ds = tiny
    entries = _perfect_entries()
    # the 18 px wide red box shifted 3 px: IoU 15/21, a hit at .5, a miss at .75; and a spurious red box
    entries[-1]["bbox"][0] += 3.0
    entries.append({"image_id": "img_b", "category_id": 0, "bbox": [70, 50, 20, 20], "score": 0.95})
    det_file = _write(tmp_path / "dets.json", entries)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out_json, out_png = out_dir / "metrics.json", out_dir / "pr.png"

    rc = main(["eval", "--data", str(yaml_path), "--split", "test", "--detections", str(det_file),
               "--json", str(out_json), "--plot-pr", str(out_png)])  # fmt: skip
    assert rc == 0
    stdout = capsys.readouterr().out
    assert "red" in stdout and "green" in stdout and "COCO bbox" in stdout and "AP50-95" in stdout

    js = json.loads(out_json.read_text())
    expected = evaluate_detections(ds, det_file).to_json()
    for key in ("map50", "map50_95", "coco", "voc", "per_class", "counts"):
        assert js[key] == expected[key], key
    assert js["split"] == "test" and js["detections"] == str(det_file)
    assert js["per_class"]["green"]["ap50"] == pytest.approx(1.0)
    assert js["per_class"]["red"]["ap50"] < 1.0  # the spurious top-scoring red box costs precision
    assert 0.0 < js["map50_95"] < js["map50"] < 1.0
    assert js["counts"]["images"] == 3 and js["counts"]["gt_boxes"] == 5 and js["counts"]["detections"] == 6
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out_dir.iterdir()) == ["metrics.json", "pr.png"]  # no temp files left


def test_cli_on_bccd_matches_the_library(tmp_path):
    if not BCCD.is_dir():
        pytest.skip(f"BCCD dataset not found at {BCCD}")
    ds = load_dataset(BCCD_YAML, "test")
    rng = np.random.default_rng(3)
    dets = {}
    for r in ds.records:
        boxes = r.boxes.astype(np.float64) + rng.normal(0, 4, r.boxes.shape)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        dets[r.image_id] = ImageDetections(boxes, rng.random(len(boxes)), r.labels)
    det_file = tmp_path / "bccd_dets.json"
    save_detections(det_file, dets, ds)
    assert load_detections(det_file, ds).keys() == dets.keys()
    out_json = tmp_path / "bccd.json"
    rc = main(["-q", "eval", "--data", str(BCCD_YAML), "--split", "test", "--detections", str(det_file),
               "--json", str(out_json)])  # fmt: skip
    assert rc == 0
    js = json.loads(out_json.read_text())
    direct = evaluate_detections(ds, dets)
    assert js["map50"] == pytest.approx(direct.map50, abs=1e-12)
    assert js["map50_95"] == pytest.approx(direct.map50_95, abs=1e-12)
    assert set(js["per_class"]) == {"RBC", "WBC", "Platelets"}
    assert 0.3 < js["map50_95"] < 1.0 and js["map50"] > js["map50_95"]


def test_cli_input_errors(tiny, tmp_path, caplog):
    yaml_path, _ = tiny
    det_file = _write(tmp_path / "dets.json", _perfect_entries())
    base = ["eval", "--data", str(yaml_path), "--split", "test"]

    assert main(base) == 2  # neither MODEL nor --detections
    assert "exactly one input" in caplog.text
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not really onnx")
    caplog.clear()
    assert main(base + [str(model), "--detections", str(det_file)]) == 2  # both
    assert "got both" in caplog.text
    caplog.clear()
    assert main(base + [str(model)]) == 2  # a corrupt model file is named, not a traceback
    assert "model.onnx" in caplog.text and "is not a readable ONNX model" in caplog.text
    caplog.clear()
    unknown = tmp_path / "model.tflite"
    unknown.write_bytes(b"x")
    assert main(base + [str(unknown)]) == 2  # no loader for this kind of file
    assert "--detections" in caplog.text
    caplog.clear()
    assert main(base + [str(tmp_path / "missing.onnx")]) == 2
    assert "does not exist" in caplog.text
    caplog.clear()
    assert main(base + ["--detections", str(det_file), "--max-dets", "0"]) == 2
    assert "--max-dets" in caplog.text
    caplog.clear()
    assert main(["eval", "--data", str(yaml_path), "--split", "nope", "--detections", str(det_file)]) == 2
    assert "nope" in caplog.text
    with pytest.raises(SystemExit):
        main(base + ["--detections", str(det_file), "--iou-type", "segm"])


def test_cli_reports_a_bad_detections_file(tiny, tmp_path, caplog):
    yaml_path, _ = tiny
    bad = _write(
        tmp_path / "bad.json", [{"image_id": "nope", "category_id": 0, "bbox": [0, 0, 1, 1], "score": 1}]
    )
    out_json = tmp_path / "never.json"
    with caplog.at_level(logging.ERROR):
        rc = main(["eval", "--data", str(yaml_path), "--detections", str(bad), "--json", str(out_json)])
    assert rc == 2
    assert "unknown image_id 'nope'" in caplog.text and "entry 0" in caplog.text
    assert not out_json.exists()


# ------------------------------------------------------------------------------------------------
# Every bad detections file
# ------------------------------------------------------------------------------------------------

GOOD = {"image_id": "img_a", "category_id": 0, "bbox": [10, 12, 40, 28], "score": 0.5}


def _with(**changes):
    entry = dict(GOOD)
    for k, v in changes.items():
        if v is _DROP:
            del entry[k]
        else:
            entry[k] = v
    return [dict(GOOD), entry]  # the bad one is entry 1


_DROP = object()

BAD_FILES: List[Tuple[str, object, List[str]]] = [
    ("object", {"detections": []}, ["found a JSON object", "JSON list"]),
    ("coco_annotations", {"images": [], "annotations": [], "categories": []}, ["annotation", "bare list"]),
    ("string", '"hello"', ["found a JSON str"]),
    ("invalid_json", '[{"image_id": "img_a",', ["not valid JSON", "line 1"]),
    ("empty_file", "", ["is empty"]),
    ("entry_not_object", [GOOD, [1, 2, 3]], ["entry 1", "expected an object"]),
    ("missing_keys", _with(score=_DROP, bbox=_DROP), ["entry 1", "missing key(s) bbox, score"]),
    ("unknown_image", _with(image_id="img_zzz"), ["entry 1", "unknown image_id 'img_zzz'", "'img_a'"]),
    ("int_image_id", _with(image_id=3), ["entry 1", "image_id 3 is a int", "file stem as a string"]),
    ("category_too_big", _with(category_id=2), ["entry 1", "bad category_id 2", "0..1", "0=red, 1=green"]),
    ("category_negative", _with(category_id=-1), ["entry 1", "bad category_id -1"]),
    ("category_string", _with(category_id="red"), ["entry 1", 'bad category_id "red"']),
    ("category_bool", _with(category_id=True), ["entry 1", "bad category_id true"]),
    ("category_float", _with(category_id=1.5), ["entry 1", "bad category_id 1.5"]),
    ("bbox_three", _with(bbox=[1, 2, 3]), ["entry 1", "not a list of 4 numbers"]),
    ("bbox_string", _with(bbox=[1, 2, "3", 4]), ["entry 1", "not a list of 4 numbers"]),
    ("bbox_dict", _with(bbox={"x": 1}), ["entry 1", "not a list of 4 numbers"]),
    ("bbox_negative_w", _with(bbox=[10, 10, -5, 8]), ["entry 1", "negative width or height", "x2 - x1"]),
    ("bbox_negative_h", _with(bbox=[10, 10, 5, -8]), ["entry 1", "negative width or height"]),
    (
        "bbox_nan",
        '[{"image_id": "img_a", "category_id": 0, "bbox": [1, 2, NaN, 4], "score": 0.5}]',
        ["entry 0", "NaN or infinite"],
    ),
    ("score_string", _with(score="high"), ["entry 1", 'score "high" is not a number']),
    ("score_null", _with(score=None), ["entry 1", "score null is not a number"]),
    (
        "score_inf",
        '[{"image_id": "img_a", "category_id": 0, "bbox": [1, 2, 3, 4], "score": Infinity}]',
        ["entry 0", "score", "NaN or infinite"],
    ),
]


@pytest.mark.parametrize("name,content,fragments", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_detections_files(tiny, tmp_path, name, content, fragments):
    _, ds = tiny
    path = _write(tmp_path / f"{name}.json", content)
    with pytest.raises(DataError) as exc:
        load_detections(path, ds)
    message = str(exc.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_missing_and_folder_detections_paths(tiny, tmp_path):
    _, ds = tiny
    with pytest.raises(DataError, match="does not exist"):
        load_detections(tmp_path / "nowhere.json", ds)
    with pytest.raises(DataError, match="is a folder"):
        load_detections(tmp_path, ds)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match="not UTF-8"):
        load_detections(binary, ds)


def test_many_bad_entries_are_listed_then_counted(tiny, tmp_path):
    _, ds = tiny
    entries = [dict(GOOD, category_id=7) for _ in range(25)]
    with pytest.raises(DataError) as exc:
        load_detections(_write(tmp_path / "many.json", entries), ds)
    message = str(exc.value)
    assert "25 bad detection entries of 25" in message
    assert "entry 0:" in message and "entry 9:" in message and "entry 10:" not in message
    assert "and 15 more" in message


def test_empty_list_means_no_detections(tiny, tmp_path):
    _, ds = tiny
    result = evaluate_detections(ds, _write(tmp_path / "none.json", []))
    assert result.map50 == 0.0 and result.map50_95 == 0.0 and result.num_detections == 0


def test_coco_format_dataset_uses_the_files_own_ids(tmp_path):
    root = tmp_path / "cocods"
    root.mkdir()
    for name in ("a.png", "b.png"):
        assert cv2.imwrite(str(root / name), np.zeros((50, 80, 3), np.uint8))
    instances = {
        "images": [{"id": 7, "file_name": "a.png", "width": 80, "height": 50},
                   {"id": 9, "file_name": "b.png", "width": 80, "height": 50}],
        "categories": [{"id": 3, "name": "cat"}, {"id": 5, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "bbox": [5, 5, 20, 20], "area": 400, "iscrowd": 0},
            {"id": 2, "image_id": 9, "category_id": 5, "bbox": [30, 10, 40, 30], "area": 1200, "iscrowd": 0},
        ],
    }  # fmt: skip
    _write(root / "instances.json", instances)
    yaml_path = root / "coco.yaml"
    yaml_path.write_text("name: tinycoco\nroot: .\nformat: coco\nsplits:\n  val: instances.json\n")
    ds = load_dataset(yaml_path, "val")
    assert ds.format == "coco" and ds.class_names == ["cat", "dog"]

    good = [
        {"image_id": 7, "category_id": 3, "bbox": [5, 5, 20, 20], "score": 0.9},
        {"image_id": 9, "category_id": 5, "bbox": [30, 10, 40, 30], "score": 0.8},
    ]
    result = evaluate_detections(ds, _write(tmp_path / "good.json", good))
    assert result.map50 == pytest.approx(1.0) and result.map50_95 == pytest.approx(1.0)

    with pytest.raises(DataError, match=r"bad category_id 0.*3=cat, 5=dog"):
        load_detections(_write(tmp_path / "cat0.json", [dict(good[0], category_id=0)]), ds)
    with pytest.raises(DataError, match=r"image_id \"7\" is not an integer"):
        load_detections(_write(tmp_path / "strid.json", [dict(good[0], image_id="7")]), ds)
    with pytest.raises(DataError, match="unknown image_id 8"):
        load_detections(_write(tmp_path / "id8.json", [dict(good[0], image_id=8)]), ds)

    # round trip through save_detections keeps the file's own ids
    dets = load_detections(tmp_path / "good.json", ds)
    save_detections(tmp_path / "again.json", dets, ds)
    again = json.loads((tmp_path / "again.json").read_text())
    assert sorted((e["image_id"], e["category_id"]) for e in again) == [(7, 3), (9, 5)]


# ------------------------------------------------------------------------------------------------
# Models: a real predictor on real images, and the loader hook
# ------------------------------------------------------------------------------------------------


def colour_predictor(image_bgr: np.ndarray):
    """Finds the filled rectangles of each class colour (connected components): xyxy source pixels."""
    boxes, scores, classes = [], [], []
    for k, colour in enumerate(COLOURS.values()):
        mask = np.all(image_bgr == np.array(colour, np.uint8), axis=2).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
        for x, y, w, h, area in stats[1:n]:
            boxes.append([x, y, x + w, y + h])
            scores.append(float(area) / (w * h))
            classes.append(k)
    return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores), np.asarray(classes, np.int32)


def test_evaluate_model_with_a_real_predictor(tiny):
    _, ds = tiny
    result = evaluate_model(colour_predictor, ds)
    assert result.num_detections == 5
    assert result.map50 == pytest.approx(1.0) and result.map50_95 == pytest.approx(1.0)
    text = format_table(result)
    assert "red" in text and "1.000" in text


def test_evaluate_model_rejects_bad_predictor_output(tiny):
    _, ds = tiny
    with pytest.raises(ModelError, match=r"expected \[K, 4\], \[K\], \[K\]"):
        evaluate_model(lambda img: (np.zeros((2, 4)), np.zeros(3), np.zeros(2)), ds)
    with pytest.raises(ModelError, match="expected a tuple"):
        evaluate_model(lambda img: None, ds)
    with pytest.raises(ModelError, match="expected integers 0..1"):
        evaluate_model(lambda img: (np.zeros((1, 4)), np.ones(1), np.array([4])), ds)
    with pytest.raises(ModelError, match="NaN"):
        evaluate_model(lambda img: (np.full((1, 4), np.nan), np.ones(1), np.array([0])), ds)


def test_load_predictor_hook_and_cli_model_path(tiny, tmp_path, monkeypatch):
    yaml_path, _ = tiny
    model = tmp_path / "detector.colour"
    model.write_text("colour detector")
    with pytest.raises(EdgeError, match="not supported yet"):
        load_predictor(model)
    monkeypatch.setitem(PREDICTOR_LOADERS, ".colour", lambda path: colour_predictor)
    assert load_predictor(model) is colour_predictor
    out_json = tmp_path / "m.json"
    assert main(["eval", str(model), "--data", str(yaml_path), "--json", str(out_json)]) == 0
    js = json.loads(out_json.read_text())
    assert js["model"] == str(model) and js["map50"] == pytest.approx(1.0)


def test_plot_pr_curves_writes_png(tiny, tmp_path):
    pytest.importorskip("matplotlib")
    _, ds = tiny
    result = evaluate_detections(ds, _perfect_entries())
    out = plot_pr_curves(result, tmp_path / "sub" / "pr.png")
    assert out.read_bytes()[:4] == b"\x89PNG" and out.stat().st_size > 1000
