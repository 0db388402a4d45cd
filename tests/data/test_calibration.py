"""``edge.data.calibration``: manifests and dataset splits as calibration sources, batches in the model's exact
input layout (the runtime's preprocessing), provenance hashes, the repository's BCCD manifest, and the
legacy TensorRT calibrator (``edge.trt.calibrator``) reading from the batcher.

Real files throughout: images written to tmp_path with OpenCV, the BCCD dataset at ../shared (skipped
when absent), real ONNX graphs for the input format.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edge.artifacts import write_sidecar
from edge.data.calibration import (
    ImageBatcher,
    calibration_sha256,
    calibration_source,
    provenance_record,
    read_manifest,
    source_from_dataset,
    source_from_manifest,
    write_manifest,
)
from edge.data.images import read_image
from edge.errors import DataError, ModelError
from edge.export.preprocess import NormalizationSpec, preprocess_numpy
from edge.letterbox import letterbox
from edge.model_input import InputFormat, model_input_format
from tests.paths import BCCD, BCCD_YAML, REPO

MANIFEST = REPO / "calibration" / "bccd-trainval-64.txt"
needs_bccd = pytest.mark.skipif(not (BCCD / "JPEGImages").is_dir(), reason=f"BCCD dataset not found at {BCCD}")


@pytest.fixture()
def images(tmp_path):
    """Five images of different sizes and content (PNG), in tmp_path/img."""
    import cv2

    rng = np.random.default_rng(1)
    folder = tmp_path / "img"
    folder.mkdir()
    paths = []
    for i, (h, w) in enumerate([(48, 64), (64, 48), (30, 90), (64, 64), (20, 33)]):
        img = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
        path = folder / f"im{i}.png"
        assert cv2.imwrite(str(path), img)
        paths.append(path)
    return paths


def uint8_format(size=(32, 40), batch=-1, pad=114) -> InputFormat:
    return InputFormat(layout="uint8_nhwc_bgr", height=size[0], width=size[1], batch=batch, dtype="uint8",
                       pad_value=pad)


def float_format(size=(32, 40), dtype="float32") -> InputFormat:
    return InputFormat(layout="float_nchw_rgb", height=size[0], width=size[1], batch=-1, dtype=dtype,
                       scale=255.0, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), pad_value=114)


# ----------------------------------------------------------------------------------------------- sources


def test_manifest_paths_comments_and_errors(tmp_path, images, caplog):
    manifest = tmp_path / "lists" / "calib.txt"
    manifest.parent.mkdir()
    manifest.write_text(
        "# calibration images\n\n"
        f"../img/{images[0].name}\n"
        f"  ../img/{images[1].name}   # trailing comment\n"
        f"{images[2]}\n"                      # absolute
        f"../img/{images[0].name}\n"          # duplicate: used once, with a warning
        "   # indented comment\n"
    )
    assert read_manifest(manifest) == [f"../img/{images[0].name}", f"../img/{images[1].name}", str(images[2]),
                                       f"../img/{images[0].name}"]
    with caplog.at_level(logging.WARNING):
        src = source_from_manifest(manifest)
    assert "more than once" in caplog.text
    assert [p.name for p in src.paths] == ["im0.png", "im1.png", "im2.png"]
    assert all(p.is_absolute() and p.is_file() for p in src.paths)
    assert src.names[0] == "../img/im0.png" and src.origin == {"kind": "manifest", "path": str(manifest)}
    first2 = source_from_manifest(manifest, count=2)
    assert first2.names == src.names[:2] and first2.origin["selection"] == "first 2 of 3"

    bad = tmp_path / "bad.txt"
    bad.write_text("img/im0.png\nimg/missing_a.png\nimg/missing_b.jpg\n")
    with pytest.raises(DataError, match=r"2 of 3 images not found[\s\S]*missing_a.png[\s\S]*missing_b.jpg"):
        source_from_manifest(bad)
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    with pytest.raises(DataError, match="lists no images"):
        source_from_manifest(empty)
    with pytest.raises(DataError, match="does not exist"):
        source_from_manifest(tmp_path / "absent.txt")


def test_write_manifest_round_trip(tmp_path, images):
    out = write_manifest(tmp_path / "cal" / "m.txt", images, header=["made by a test"])
    text = out.read_text()
    assert text.startswith("# made by a test\n") and "../img/im0.png" in text
    assert source_from_manifest(out).paths == [p.resolve() for p in images]


def test_open_source_dispatch(tmp_path, images):
    manifest = write_manifest(tmp_path / "m.txt", images)
    assert len(calibration_source(manifest)) == 5
    assert len(calibration_source(manifest, count=3)) == 3
    with pytest.raises(DataError, match="applies to a dataset YAML"):
        calibration_source(manifest, "train")
    with pytest.raises(DataError, match="--calib-split"):
        calibration_source(BCCD_YAML)


@needs_bccd
def test_dataset_source_spreads_over_the_split():
    src = source_from_dataset(BCCD_YAML, "trainval", 16)
    assert len(src) == 16
    assert src.origin["kind"] == "dataset" and src.origin["split"] == "trainval"
    assert src.origin["selection"] == "spread 16 of 292"
    assert all(n.startswith("JPEGImages/") for n in src.names)
    ids = [int(p.stem.split("_")[-1]) for p in src.paths]
    assert ids == sorted(ids) and ids[0] == 0 and ids[-1] >= 400  # first and last of the split, spread between
    assert len(calibration_source(BCCD_YAML, "trainval")) == 64  # the dataset default


@needs_bccd
def test_repository_manifest_is_64_trainval_images_never_test():
    src = source_from_manifest(MANIFEST)
    assert len(src) == 64
    assert all(n.startswith("../../shared/datasets/bccd/JPEGImages/") for n in src.names)
    split = BCCD / "ImageSets" / "Main"
    trainval = set(split.joinpath("trainval.txt").read_text().split())
    test = set(split.joinpath("test.txt").read_text().split())
    stems = {p.stem for p in src.paths}
    assert stems <= trainval and not stems & test
    # the images stay in ../shared: the manifest only points at them
    assert all(os.path.commonpath([str(p.resolve()), str(BCCD.resolve())]) == str(BCCD.resolve()) for p in src.paths)


# ----------------------------------------------------------------------------------------------- batches


def test_uint8_batches_are_the_runtime_letterbox(tmp_path, images):
    src = source_from_manifest(write_manifest(tmp_path / "m.txt", images))
    batcher = ImageBatcher(src, uint8_format(pad=100), batch_size=2)
    assert len(batcher) == 2 and batcher.num_images == 4  # the fifth image does not fill a batch
    batches = list(batcher)
    assert [b.shape for b in batches] == [(2, 32, 40, 3)] * 2 and batches[0].dtype == np.uint8
    for k, path in enumerate(images[:4]):
        expected, _ = letterbox(read_image(path), (32, 40), pad_value=100)
        np.testing.assert_array_equal(batches[k // 2][k % 2], expected)
    again = list(batcher)  # iterable more than once, same result
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
    assert batches[0].flags.c_contiguous and batches[0] is not again[0]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_float_batches_match_the_graphs_folded_preprocessing(tmp_path, images, dtype):
    fmt = float_format(dtype=dtype)
    src = source_from_manifest(write_manifest(tmp_path / "m.txt", images))
    batches = list(ImageBatcher(src, fmt, batch_size=1))
    norm = NormalizationSpec(scale=255.0, mean=fmt.mean, std=fmt.std)
    assert len(batches) == 5
    for path, batch in zip(images, batches):
        frame, _ = letterbox(read_image(path), (32, 40), pad_value=114)
        reference = preprocess_numpy(frame, norm)  # what edge export folds into a uint8 graph
        assert batch.shape == (1, 3, 32, 40) and batch.dtype == np.dtype(dtype)
        tol = 1e-5 if dtype == "float32" else 2e-3 * np.abs(reference).max()
        np.testing.assert_allclose(batch.astype(np.float32), reference, atol=tol, rtol=0)


def test_batch_size_checks(tmp_path, images):
    src = source_from_manifest(write_manifest(tmp_path / "m.txt", images[:3]))
    with pytest.raises(ModelError, match="fixed batch of 4"):
        ImageBatcher(src, uint8_format(batch=4), batch_size=2)
    with pytest.raises(DataError, match="fewer than one batch"):
        ImageBatcher(src, uint8_format(batch=4), batch_size=4)
    fixed = ImageBatcher(src, uint8_format(batch=1), batch_size=1)
    assert fixed.num_images == 3


def test_model_input_format_from_graph_and_sidecar(tmp_path):
    def graph(dtype, shape):
        g = helper.make_graph([helper.make_node("Identity", ["images"], ["out"])], "g",
                              [helper.make_tensor_value_info("images", dtype, shape)],
                              [helper.make_tensor_value_info("out", dtype, shape)])
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])

    path = tmp_path / "u8.onnx"
    onnx.save(graph(TensorProto.UINT8, ["batch", 96, 128, 3]), str(path))
    write_sidecar(path, {"input_layout": "uint8_nhwc_bgr", "pad_value": 0})
    fmt = model_input_format(path)
    assert (fmt.layout, fmt.height, fmt.width, fmt.batch, fmt.dtype, fmt.pad_value) == \
        ("uint8_nhwc_bgr", 96, 128, -1, "uint8", 0)
    fl = model_input_format(graph(TensorProto.FLOAT, [1, 3, 64, 80]),
                            {"normalization": {"scale": 1.0, "mean": [1, 2, 3], "std": [4, 5, 6]}})
    assert (fl.layout, fl.height, fl.width, fl.batch, fl.scale, fl.std) == \
        ("float_nchw_rgb", 64, 80, 1, 1.0, (4.0, 5.0, 6.0))


# ----------------------------------------------------------------------------------------------- provenance


def test_provenance_hashes(tmp_path, images):
    import cv2

    m1 = write_manifest(tmp_path / "a.txt", images)
    m2 = write_manifest(tmp_path / "b.txt", list(reversed(images)))  # same set, other order
    fmt = uint8_format()
    r1 = provenance_record(ImageBatcher(source_from_manifest(m1), fmt), method="entropy", source_onnx_sha256="ab")
    r2 = provenance_record(ImageBatcher(source_from_manifest(m2), fmt), method="entropy", source_onnx_sha256="ab")
    assert r1["images"] == 5 and r1["batch_size"] == 1 and r1["percentile"] is None
    assert r1["list_sha256"] == r2["list_sha256"] and r1["pixels_sha256"] == r2["pixels_sha256"]
    assert r1["calibration_sha256"] == r2["calibration_sha256"] == calibration_sha256(r1)
    assert r1["preprocessing"]["layout"] == "uint8_nhwc_bgr" and r1["preprocessing"]["pad_value"] == 114
    assert {"edge", "numpy", "opencv", "onnx", "onnxruntime", "python"} <= set(r1["tools"])
    assert r1["source_onnx_sha256"] == "ab" and r1["source"]["kind"] == "manifest"

    pct = provenance_record(ImageBatcher(source_from_manifest(m1), fmt), method="percentile")
    assert pct["percentile"] == 99.999 and pct["calibration_sha256"] != r1["calibration_sha256"]
    other_pad = provenance_record(ImageBatcher(source_from_manifest(m1), uint8_format(pad=0)), method="entropy")
    assert other_pad["pixels_sha256"] == r1["pixels_sha256"]
    assert other_pad["calibration_sha256"] != r1["calibration_sha256"]

    # one pixel of one image changes: the pixel hash and the calibration hash change, the list hash does not
    img = cv2.imread(str(images[3]))
    img[0, 0, 0] ^= 1
    cv2.imwrite(str(images[3]), img)
    r3 = provenance_record(ImageBatcher(source_from_manifest(m1), fmt), method="entropy", source_onnx_sha256="ab")
    assert r3["list_sha256"] == r1["list_sha256"]
    assert r3["pixels_sha256"] != r1["pixels_sha256"] and r3["calibration_sha256"] != r1["calibration_sha256"]
    with pytest.raises(ValueError, match="method"):
        provenance_record(ImageBatcher(source_from_manifest(m1), fmt), method="kl")


# ----------------------------------------------------------------------------------------------- legacy TensorRT path


class HostBuffer:
    """A host-memory stand-in for ``edge.cuda.DeviceBuffer`` (ptr + synchronous upload + free); the
    calibrator's batching contract is what is tested here, not CUDA."""

    def __init__(self, nbytes: int) -> None:
        self.data = np.zeros(nbytes, np.uint8)
        self.ptr = int(self.data.ctypes.data)
        self.uploads = []
        self.freed = False

    def upload(self, array: np.ndarray) -> None:
        assert array.nbytes == self.data.nbytes
        self.data[:] = np.frombuffer(array.tobytes(), np.uint8)
        self.uploads.append(array.copy())

    def free(self) -> None:
        self.freed = True


def test_legacy_trt_calibrator_reads_the_batcher_and_caches_with_provenance(tmp_path, images):
    """API-contract test of edge.trt.calibrator with the real batcher (no TensorRT here)."""
    from edge.trt.calibrator import CalibrationCache, CalibrationFeeder

    src = source_from_manifest(write_manifest(tmp_path / "m.txt", images))
    batcher = ImageBatcher(src, uint8_format(), batch_size=2)
    buffers = []

    def device_buffer(nbytes):
        buffers.append(HostBuffer(nbytes))
        return buffers[-1]

    feeder = CalibrationFeeder(batcher, batcher.batch_size, device_buffer)
    pointers = []
    while True:
        ptrs = feeder.next_pointers(["images"])
        if ptrs is None:
            break
        pointers.append(ptrs)
    assert feeder.batches_fed == len(batcher) == 2 and len(buffers) == 1
    assert all(p == [buffers[0].ptr] for p in pointers)
    for got, expected in zip(buffers[0].uploads, ImageBatcher(src, uint8_format(), batch_size=2)):
        np.testing.assert_array_equal(got, expected)
    feeder.close()
    assert buffers[0].freed

    record = provenance_record(batcher, method="entropy", tools={"tensorrt": "10.3.0"})
    assert record["tools"]["tensorrt"] == "10.3.0"
    cache = CalibrationCache(str(tmp_path / "cache" / "bccd.cache"), record)
    cache.write(b"TRT-10.3-EntropyCalibration2\nimages: 3c010a14\n")
    assert cache.read() == b"TRT-10.3-EntropyCalibration2\nimages: 3c010a14\n"
    other = provenance_record(ImageBatcher(source_from_manifest(write_manifest(tmp_path / "n.txt", images[:2])),
                                           uint8_format(), batch_size=2), method="entropy", tools={"tensorrt": "10.3.0"})
    assert CalibrationCache(str(tmp_path / "cache" / "bccd.cache"), other).read() is None


def test_calibration_module_is_torch_free():
    code = ("import sys; import edge.data.calibration, edge.runtime.predictors, edge.export.prenms, edge.export.quantize, "
            "edge.export.quantize.gate; assert 'torch' not in sys.modules, 'torch imported'")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=str(REPO))
