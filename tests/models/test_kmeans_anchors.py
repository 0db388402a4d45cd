"""k-means anchors (1 - IoU distance) and the ``edge anchors`` verb: synthetic clusters, a VOC dataset
written to tmp_path, and the real BCCD dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.cli.main import main
from edge.data import load_dataset
from edge.errors import DataError
from edge.models.kmeans_anchors import anchors_for_dataset, dataset_box_sizes, kmeans_anchors, wh_iou
from tests.paths import BCCD, BCCD_YAML


def synthetic_clusters(centres, per_cluster=200, jitter=0.05, seed=0):
    rng = np.random.default_rng(seed)
    wh = [np.asarray(c, float) * np.exp(rng.normal(0.0, jitter, size=(per_cluster, 2))) for c in centres]
    return np.concatenate(wh)


def test_wh_iou_known_values():
    iou = wh_iou(np.array([[10.0, 10.0], [20.0, 5.0]]), np.array([[10.0, 10.0], [5.0, 20.0], [20.0, 20.0]]))
    assert np.allclose(iou, [[1.0, 50 / 150, 100 / 400],
                             [50 / 150, 25 / 175, 100 / 400]])


def test_kmeans_recovers_known_clusters_sorted_by_area():
    centres = [[12, 14], [30, 18], [18, 40], [60, 60], [150, 110]]
    wh = synthetic_clusters(centres)
    np.random.default_rng(1).shuffle(wh)
    result = kmeans_anchors(wh, 5, seed=0)
    expected = sorted(centres, key=lambda c: c[0] * c[1])
    assert result.anchors.shape == (5, 2)
    assert np.allclose(result.anchors, expected, rtol=0.03), result.anchors
    areas = result.anchors[:, 0] * result.anchors[:, 1]
    assert np.all(np.diff(areas) > 0)
    assert result.counts.tolist() == [200] * 5
    assert result.mean_iou > 0.9 and result.num_boxes == 1000


def test_kmeans_is_deterministic_per_seed_and_median_works():
    wh = synthetic_clusters([[10, 10], [20, 40], [40, 20], [80, 80]], per_cluster=50, jitter=0.3, seed=3)
    a = kmeans_anchors(wh, 6, seed=7)
    b = kmeans_anchors(wh, 6, seed=7)
    assert np.array_equal(a.anchors, b.anchors) and a.mean_iou == b.mean_iou
    med = kmeans_anchors(wh, 4, seed=0, center="median")
    assert med.anchors.shape == (4, 2) and med.mean_iou > 0.6


def test_kmeans_more_anchors_fit_better_and_bad_input():
    wh = synthetic_clusters([[10, 10], [20, 40], [40, 20], [80, 80]], per_cluster=60, jitter=0.3, seed=5)
    fits = [kmeans_anchors(wh, k, seed=0).mean_iou for k in (1, 3, 6)]
    assert fits[0] < fits[1] < fits[2]
    with pytest.raises(DataError, match="at least k=5"):
        kmeans_anchors([[10, 10], [20, 20], [0, 5], [30, 30]], 5)
    with pytest.raises(ValueError, match="center"):
        kmeans_anchors(wh, 3, center="mode")


def write_voc_dataset(root: Path) -> Path:
    """Two 640x480 JPEGs with pixel boxes, VOC layout, and its dataset YAML."""
    cv2 = pytest.importorskip("cv2")
    (root / "JPEGImages").mkdir(parents=True)
    (root / "Annotations").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    boxes = {
        "a": [("cell", 100, 100, 164, 148), ("cell", 300, 200, 364, 248), ("dot", 10, 10, 26, 26)],
        "b": [("cell", 400, 50, 464, 98), ("dot", 500, 400, 516, 416), ("big", 100, 200, 420, 440)],
    }
    for stem, objects in boxes.items():
        cv2.imwrite(str(root / "JPEGImages" / f"{stem}.jpg"), np.full((480, 640, 3), 128, np.uint8))
        xml_objects = "".join(
            f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
            f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>" for n, x1, y1, x2, y2 in objects)
        (root / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename><size><width>640</width><height>480</height>"
            f"<depth>3</depth></size>{xml_objects}</annotation>")
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("a\nb\n")
    yaml_path = root / "data.yaml"
    yaml_path.write_text("name: tiny\nroot: .\nformat: voc\nsplits:\n  trainval: ImageSets/Main/trainval.txt\n"
                         "names: [cell, dot, big]\n")
    return yaml_path


def test_dataset_anchors_are_in_letterboxed_input_pixels(tmp_path):
    yaml_path = write_voc_dataset(tmp_path / "ds")
    dataset = load_dataset(yaml_path, "trainval", log=False)
    # 640x480 letterboxed into 320x320: factor 0.5 on both axes
    sizes = dataset_box_sizes(dataset, (320, 320))
    assert sorted(map(tuple, sizes.tolist())) == sorted([(32, 24)] * 3 + [(8, 8)] * 2 + [(160, 120)])
    result = anchors_for_dataset(dataset, 3, (320, 320), seed=0)
    assert np.allclose(result.anchors, [[8, 8], [32, 24], [160, 120]])
    assert result.mean_iou == pytest.approx(1.0)
    assert result.counts.tolist() == [2, 3, 1]
    info = result.to_dict()
    assert info["input_size"] == [320, 320] and info["split"] == "trainval" and info["k"] == 3
    json.dumps(info)


def test_anchors_cli_on_a_written_dataset(tmp_path, capsys):
    yaml_path = write_voc_dataset(tmp_path / "ds")
    out = tmp_path / "anchors.json"
    rc = main(["-q", "anchors", "--data", str(yaml_path), "-k", "3", "--imgsz", "240x320", "--out", str(out)])
    assert rc == 0
    saved = json.loads(out.read_text())
    # 640x480 into 240 (H) x 320 (W): factor 0.5
    assert saved["anchors"] == [[8.0, 8.0], [32.0, 24.0], [160.0, 120.0]]
    assert saved["input_size"] == [240, 320]
    assert "[[8.0, 8.0], [32.0, 24.0], [160.0, 120.0]]" in capsys.readouterr().out
    # more anchors than boxes: a one-line error, exit status 2
    assert main(["-q", "anchors", "--data", str(yaml_path), "-k", "9", "--imgsz", "320"]) == 2
    assert main(["-q", "anchors", "--data", str(yaml_path), "--split", "nope", "-k", "2", "--imgsz", "320"]) == 2


@pytest.mark.skipif(not (BCCD / "Annotations").is_dir(), reason=f"BCCD dataset not found at {BCCD}")
def test_anchors_cli_on_bccd(tmp_path, capsys):
    out = tmp_path / "bccd_anchors.json"
    rc = main(["-q", "anchors", "--data", str(BCCD_YAML), "--split", "trainval", "-k", "9", "--imgsz", "320",
               "--out", str(out)])
    assert rc == 0
    saved = json.loads(out.read_text())
    anchors = np.array(saved["anchors"])
    assert anchors.shape == (9, 2) and saved["k"] == 9 and saved["input_size"] == [320, 320]
    areas = anchors[:, 0] * anchors[:, 1]
    assert np.all(np.diff(areas) >= 0)
    assert saved["num_boxes"] > 3000 and sum(saved["counts"]) == saved["num_boxes"]
    assert saved["mean_iou"] > 0.75
    # BCCD at 320: platelets ~ 20 px, red cells ~ 50 px, white cells ~ 100 px (640x480 scaled by 0.5)
    assert 10 < anchors[0].mean() < 30 and 80 < anchors[-1].mean() < 160
    printed = capsys.readouterr().out
    assert "mean IoU" in printed and f"saved {out}" in printed
    # same seed, same anchors
    rc = main(["-q", "anchors", "--data", str(BCCD_YAML), "-k", "9", "--imgsz", "320", "--out", str(out)])
    assert rc == 0 and json.loads(out.read_text())["anchors"] == saved["anchors"]


@pytest.mark.skipif(not (BCCD / "Annotations").is_dir(), reason=f"BCCD dataset not found at {BCCD}")
def test_bccd_anchors_file_builds_a_yolov3_tiny(tmp_path):
    pytest.importorskip("torch")
    from edge.models import build_model

    out = tmp_path / "a.json"
    assert main(["-q", "anchors", "--data", str(BCCD_YAML), "-k", "6", "--imgsz", "256", "--out", str(out)]) == 0
    anchors = json.loads(out.read_text())["anchors"]
    model = build_model("yolov3-tiny", num_classes=3, input_size=[256, 256], width=0.25, anchors=str(out))
    # smallest three anchors on the stride-16 level, largest three on stride 32
    assert model.config["anchors"] == [anchors[:3], anchors[3:]]
    assert [c["stride"] for c in model.anchors_for_card()] == [16, 32]
