"""The procedurally generated blood-smear footage (edge.synth): determinism, ground truth that matches the
pixels and BCCD's conventions, colours close to the real BCCD images, coherent motion, and the video file."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pytest

from edge.errors import EdgeError
from edge.synth import (
    CLASS_NAMES,
    SmearConfig,
    SmearScene,
    iter_smear,
    iter_smear_frames,
    write_smear_video,
)
from tests.paths import BCCD
from tests.paths import REPO as ROOT

RBC, WBC, PLT = 0, 1, 2


@pytest.fixture(scope="module")
def scene() -> SmearScene:
    return SmearScene(0)


@pytest.fixture(scope="module")
def frames_gt(scene):
    """(boxes, labels) of every 10th frame over the first 400, for statistics."""
    return [scene.ground_truth(i) for i in range(0, 400, 10)]


def _purple(img: np.ndarray) -> np.ndarray:
    """Mask of stained-nucleus / platelet pixels: blue-violet, much darker in green than in blue."""
    b, g, r = (img[:, :, k].astype(np.int32) for k in range(3))
    return (g < 150) & (b - g > 40) & (r - g > 10)


def _box_mask(shape, boxes, labels, keep) -> np.ndarray:
    m = np.zeros(shape[:2], bool)
    for (x1, y1, x2, y2), lab in zip(boxes, labels):
        if lab in keep:
            m[int(np.floor(y1)):int(np.ceil(y2)), int(np.floor(x1)):int(np.ceil(x2))] = True
    return m


# -- determinism ---------------------------------------------------------------------------------


def test_same_seed_gives_identical_frames_in_any_order():
    a = SmearScene(7, 320, 240)
    b = SmearScene(7, 320, 240)
    late_first = b.image(25)
    for i in (0, 1, 25):
        ia, ba, la = a.frame(i)
        ib, bb, lb = b.frame(i)
        assert ia.dtype == np.uint8 and ia.shape == (240, 320, 3)
        assert np.array_equal(ia, ib)
        assert np.array_equal(ba, bb) and np.array_equal(la, lb)
    assert np.array_equal(late_first, a.image(25))
    other = SmearScene(8, 320, 240).image(0)
    assert np.abs(other.astype(np.int16) - a.image(0).astype(np.int16)).mean() > 5


def test_image_writes_into_a_caller_buffer():
    s = SmearScene(2, 160, 120)
    buf = np.zeros((120, 160, 3), np.uint8)
    out = s.image(3, out=buf)
    assert out is buf and np.array_equal(buf, s.image(3))


# -- ground truth --------------------------------------------------------------------------------


def test_ground_truth_types_and_inside_the_frame(scene, frames_gt):
    for boxes, labels in frames_gt:
        assert boxes.dtype == np.float32 and boxes.shape[1:] == (4,)
        assert labels.dtype == np.int64 and len(labels) == len(boxes)
        assert set(labels.tolist()) <= {RBC, WBC, PLT}
        assert np.all(boxes[:, 0] >= 0) and np.all(boxes[:, 1] >= 0)
        assert np.all(boxes[:, 2] <= scene.width) and np.all(boxes[:, 3] <= scene.height)
        assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
    assert list(CLASS_NAMES) == ["RBC", "WBC", "Platelets"]  # the order of data/bccd.yaml


def test_box_sizes_and_counts_are_bccd_like(scene, frames_gt):
    # BCCD (640x480), 5th-95th percentile of uncut boxes: RBC 84-129 px, WBC 122-256, platelets 31-57;
    # per image ~11 labelled RBC (more visible), ~1 WBC, ~1 platelet.
    sizes = {RBC: [], WBC: [], PLT: []}
    counts = {RBC: [], WBC: [], PLT: []}
    for boxes, labels in frames_gt:
        for k in counts:
            counts[k].append(int(np.sum(labels == k)))
        inner = (boxes[:, 0] > 1) & (boxes[:, 1] > 1) & (boxes[:, 2] < scene.width - 1) & (boxes[:, 3] < scene.height - 1)
        for b, lab in zip(boxes[inner], labels[inner]):
            sizes[int(lab)].append(max(b[2] - b[0], b[3] - b[1]))
    rbc, wbc, plt = (np.array(sizes[k]) for k in (RBC, WBC, PLT))
    assert 90 <= np.median(rbc) <= 120 and np.percentile(rbc, 5) >= 75 and np.percentile(rbc, 95) <= 145
    assert len(wbc) > 0 and wbc.min() >= 100 and wbc.max() <= 270
    assert len(plt) > 0 and plt.min() >= 25 and plt.max() <= 62
    assert 10 <= np.mean(counts[RBC]) <= 30
    assert np.mean(np.array(counts[WBC]) >= 1) >= 0.7, "most frames should show a white cell, as in BCCD"
    assert np.mean(np.array(counts[WBC]) <= 2) >= 0.9
    assert 0.3 <= np.mean(counts[PLT]) <= 3.0


def test_cut_cells_follow_the_min_visible_rule():
    # BCCD labels a cell cut by the border only when most of it shows: the default keeps a cut cell
    # when >= half its width and height are inside; with min_visible=0 every visible sliver is kept.
    strict, loose = SmearScene(5, 320, 240), SmearScene(5, 320, 240, SmearConfig(min_visible=0.0))
    n_cut = n_dropped = 0
    for i in range(0, 400, 25):
        bs, ls = strict.ground_truth(i)
        bl, ll = loose.ground_truth(i)
        keys = {tuple(np.round(b, 3)) + (int(lab),) for b, lab in zip(bl, ll)}
        assert all(tuple(np.round(b, 3)) + (int(lab),) in keys for b, lab in zip(bs, ls))
        strict_keys = {tuple(np.round(b, 3)) + (int(lab),) for b, lab in zip(bs, ls)}
        for b, lab in zip(bl, ll):
            on_border = b[0] <= 0 or b[1] <= 0 or b[2] >= 320 or b[3] >= 240
            if tuple(np.round(b, 3)) + (int(lab),) not in strict_keys:
                n_dropped += 1
                assert on_border, "only cells cut by the border may be dropped"
        for b, lab in zip(bs, ls):
            if lab == RBC and (b[0] <= 0 or b[2] >= 320 or b[1] <= 0 or b[3] >= 240):
                n_cut += 1
                # half of the smallest RBC (84 px x 0.84 aspect at 640x480) at this half scale: ~17.6 px
                assert min(b[2] - b[0], b[3] - b[1]) >= 17.0
    assert n_cut > 5 and n_dropped > 5, "cells should be cut by the border as the slide moves"


def test_boxes_match_the_drawn_cells():
    # Every cell visible at all gets a box (min_visible=0): stained pixels lie in WBC/platelet boxes,
    # and each uncut red-cell box is darker inside than the frame's plasma.
    s = SmearScene(3, config=SmearConfig(min_visible=0.0))
    for i in (0, 90, 180):
        img, boxes, labels = s.frame(i)
        purple = _purple(img)
        assert purple.sum() > 50
        covered = _box_mask(img.shape, boxes, labels, {WBC, PLT})
        assert (purple & covered).sum() >= 0.97 * purple.sum()
        grey = img.astype(np.float32).mean(axis=2)
        plasma = np.percentile(grey, 90)
        for (x1, y1, x2, y2), lab in zip(boxes.astype(int), labels):
            if lab == RBC and x1 > 0 and y1 > 0 and x2 < s.width and y2 < s.height:
                inside = grey[y1 + (y2 - y1) // 4:y2 - (y2 - y1) // 4, x1 + 4:x1 + (x2 - x1) // 4]  # body, off the pale centre
                assert inside.mean() < plasma - 8, f"frame {i}: RBC box {x1, y1, x2, y2} holds no cell"
        # a box shifted by half its size misses the cell: the test above can fail
        assert not _box_mask(img.shape, boxes + 400, labels, {WBC, PLT})[purple].all()


# -- realism against the real dataset -----------------------------------------------------------


def _bccd_test_images():
    if not (BCCD / "JPEGImages").is_dir():
        pytest.skip(f"BCCD dataset not found at {BCCD} (it lives in ../shared, absent on a fresh checkout)")
    ids = (BCCD / "ImageSets" / "Main" / "test.txt").read_text().split()
    for i in ids:
        yield cv2.imread(str(BCCD / "JPEGImages" / f"{i}.jpg")), BCCD / "Annotations" / f"{i}.xml"


def _bright_median(img: np.ndarray) -> np.ndarray:
    """Median BGR of the brightest quarter of the pixels (the plasma), on a 2x-subsampled grid."""
    flat = img[::2, ::2].reshape(-1, 3).astype(np.float32)
    s = flat.sum(1)
    return np.median(flat[s > np.percentile(s, 75)], axis=0)


def test_colour_statistics_are_close_to_bccd(scene):
    real_mean, real_std, real_bg, real_nuc = [], [], [], []
    for img, xml in _bccd_test_images():
        px = img[::2, ::2].reshape(-1, 3).astype(np.float32)
        real_mean.append(px.mean(0))
        real_std.append(px.std(0))
        real_bg.append(_bright_median(img))
        for obj in ET.parse(xml).getroot().iter("object"):
            if obj.findtext("name", "").strip() == "WBC":
                bb = obj.find("bndbox")
                x1, y1, x2, y2 = (int(float(bb.findtext(k))) for k in ("xmin", "ymin", "xmax", "ymax"))
                crop = img[y1:y2, x1:x2].reshape(-1, 3).astype(np.float32)
                if len(crop):
                    s = crop.sum(1)
                    real_nuc.append(np.median(crop[s < np.percentile(s, 15)], axis=0))
    syn_mean, syn_std, syn_bg, syn_nuc = [], [], [], []
    for seed in range(3):
        sc = SmearScene(seed)
        for i in (0, 150, 300):
            img, boxes, labels = sc.frame(i)
            px = img[::2, ::2].reshape(-1, 3).astype(np.float32)
            syn_mean.append(px.mean(0))
            syn_std.append(px.std(0))
            syn_bg.append(_bright_median(img))
            for (x1, y1, x2, y2), lab in zip(boxes.astype(int), labels):
                if lab == WBC:
                    crop = img[y1:y2, x1:x2].reshape(-1, 3).astype(np.float32)
                    s = crop.sum(1)
                    syn_nuc.append(np.median(crop[s < np.percentile(s, 15)], axis=0))
    rm, sm = np.mean(real_mean, 0), np.mean(syn_mean, 0)
    assert np.all(np.abs(rm - sm) < 8), f"mean BGR: BCCD {rm.round(1)}, synthetic {sm.round(1)}"
    rs, ss = np.mean(real_std, 0), np.mean(syn_std, 0)
    assert np.all((ss > 0.7 * rs) & (ss < 1.3 * rs)), f"std BGR: BCCD {rs.round(1)}, synthetic {ss.round(1)}"
    rb, sb = np.mean(real_bg, 0), np.mean(syn_bg, 0)
    assert np.all(np.abs(rb - sb) < 6), f"plasma BGR: BCCD {rb.round(1)}, synthetic {sb.round(1)}"
    rn, sn = np.mean(real_nuc, 0), np.mean(syn_nuc, 0)
    assert np.all(np.abs(rn - sn) < 20), f"WBC nucleus BGR: BCCD {rn.round(1)}, synthetic {sn.round(1)}"
    # blur: BCCD frames are soft (Laplacian variance ~7); ours must be neither sharp nor mush
    lap = [cv2.Laplacian(cv2.cvtColor(scene.image(i), cv2.COLOR_BGR2GRAY), cv2.CV_32F).var() for i in (0, 50)]
    assert 3 < np.mean(lap) < 20


# -- motion --------------------------------------------------------------------------------------


def test_consecutive_frames_are_coherent(scene):
    f0, f1, far = (scene.image(i).astype(np.float32) for i in (100, 101, 300))
    step = np.subtract(scene.offset(101), scene.offset(100))
    assert 0.2 < np.hypot(*step) < 4, f"slide moved {step} px between frames"
    d_next = np.abs(f1 - f0).mean()
    assert d_next < 6 and d_next * 2 < np.abs(far - f0).mean()
    # the boxes moved with the slide
    b0, _ = scene.ground_truth(100)
    b1, _ = scene.ground_truth(101)
    inner0 = b0[(b0[:, 0] > 5) & (b0[:, 2] < scene.width - 5) & (b0[:, 1] > 5) & (b0[:, 3] < scene.height - 5)]
    assert len(inner0) > 5
    for b in inner0:
        d = np.abs(b1 - (b - np.array([step[0], step[1], step[0], step[1]], np.float32))).max(axis=1)
        assert d.min() < 1e-3


def test_motion_is_the_slide_translation():
    # without sensor noise and JPEG, shifting frame i by the slide's step predicts frame i+1
    s = SmearScene(6, 320, 240, SmearConfig(noise_sigma=0.0, jpeg_quality=0, vignette=0.0, speed=3.0))
    f0, f1 = s.image(40).astype(np.float32), s.image(41).astype(np.float32)
    step = np.subtract(s.offset(41), s.offset(40))
    m = np.float32([[1, 0, -step[0]], [0, 1, -step[1]]])
    pred = cv2.warpAffine(f0, m, (s.width, s.height))
    wrong = cv2.warpAffine(f0, np.float32([[1, 0, step[0]], [0, 1, step[1]]]), (s.width, s.height))
    core = (slice(10, -10), slice(10, -10))
    err = np.abs(pred[core] - f1[core]).mean()
    assert err < 0.3 * np.abs(f0[core] - f1[core]).mean()
    assert err < 0.3 * np.abs(wrong[core] - f1[core]).mean()


# -- iterators and the video file ----------------------------------------------------------------


def test_iterators_yield_the_scene_frames():
    frames = list(iter_smear_frames(4, 160, 120, frames=3))
    assert len(frames) == 3 and all(f.shape == (120, 160, 3) and f.dtype == np.uint8 for f in frames)
    ref = SmearScene(4, 160, 120)
    assert all(np.array_equal(f, ref.image(i)) for i, f in enumerate(frames))
    endless = iter_smear_frames(4, 160, 120)
    assert np.array_equal(next(endless), frames[0]) and np.array_equal(next(endless), frames[1])
    items = list(iter_smear(4, 160, 120, frames=2, start=5))
    assert [it.index for it in items] == [5, 6]
    b, lab = ref.ground_truth(6)
    assert np.array_equal(items[1].boxes, b) and np.array_equal(items[1].labels, lab)


def test_write_smear_video_reads_back(tmp_path):
    out = tmp_path / "smear.mp4"
    gt = tmp_path / "smear.jsonl"
    ret = write_smear_video(out, frames=12, fps=10, seed=1, width=320, height=240, ground_truth=gt)
    assert ret == out and out.is_file()
    cap = cv2.VideoCapture(str(out))
    assert cap.isOpened()
    n = 0
    first = None
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if first is None:
            first = frame
        n += 1
    cap.release()
    assert n == 12 and first.shape == (240, 320, 3)
    # lossy codec, but it is our frame 0
    assert np.abs(first.astype(np.float32) - SmearScene(1, 320, 240).image(0).astype(np.float32)).mean() < 6
    lines = [json.loads(x) for x in gt.read_text().splitlines()]
    assert [x["frame"] for x in lines] == list(range(12))
    b, lab = SmearScene(1, 320, 240).ground_truth(11)
    assert lines[11]["labels"] == lab.tolist() and np.allclose(lines[11]["boxes"], b, atol=0.01)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["smear.jsonl", "smear.mp4"]


def test_no_partial_file_on_failure(tmp_path):
    out = tmp_path / "demo.mp4"
    out.write_bytes(b"previous video")
    # fails after the writer has opened its temporary file: the scene's config is invalid
    with pytest.raises(ValueError, match="speed"):
        write_smear_video(out, frames=5, fps=10, width=160, height=120, config=SmearConfig(speed=-1))
    assert out.read_bytes() == b"previous video"
    # fails on the ground-truth file (its folder is missing)
    with pytest.raises(OSError):
        write_smear_video(out, frames=5, fps=10, width=160, height=120, ground_truth=tmp_path / "nope" / "gt.jsonl")
    assert out.read_bytes() == b"previous video"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.mp4"]
    with pytest.raises(EdgeError, match="extension"):
        write_smear_video(tmp_path / "demo.gif", frames=5)
    with pytest.raises(EdgeError, match="does not exist"):
        write_smear_video(tmp_path / "missing" / "demo.mp4", frames=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.mp4"]


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="min_visible"):
        SmearConfig(min_visible=1.5).validate()
    with pytest.raises(ValueError, match="jpeg_quality"):
        SmearConfig(jpeg_quality=101).validate()
    with pytest.raises(ValueError, match="too small"):
        SmearScene(0, 16, 16)
    assert SmearConfig().validate() == SmearConfig()


def test_runtime_path_needs_no_torch():
    code = (
        "import sys; sys.modules['torch'] = None\n"  # any import of torch now raises ImportError
        "from edge.synth import SmearScene, iter_smear_frames\n"
        "img, b, l = SmearScene(0, 160, 120).frame(0)\n"
        "assert img.shape == (120, 160, 3)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
