"""INT8 calibration inputs: which images, preprocessed exactly as the runtime does, and their provenance.

Three small parts, used by ``edge quantize`` (ONNX Runtime's Q/DQ calibration) and by the legacy
TensorRT calibrator (``edge.trt.calibrator.CalibrationFeeder`` iterates an ``ImageBatcher``):

``CalibrationSource``
    An ordered list of image files and where it came from: a manifest (``calibration/*.txt``: one image
    path per line, absolute or relative to the manifest's folder, ``#`` starts a comment) or a dataset
    YAML + split (``edge.data.load_dataset``).

``ImageBatcher``
    Batches in the exact input layout of a model (its ``InputFormat``, from the graph input and the
    sidecar): each image is read with ``edge.data.images.read_image`` (BGR, EXIF applied) and written by
    the runtime's own ``edge.model_input.Preprocessor`` (``edge.letterbox`` + for float graphs
    BGR->RGB, HWC->CHW, ``(pixel / scale - mean) / std``), so calibration sees the pixels inference sees::

        uint8_nhwc_bgr   uint8   [B, H, W, 3]  BGR, letterboxed (pad value from the sidecar, 114 by default)
        float_nchw_rgb   float32 [B, 3, H, W]  RGB, letterboxed, normalized (float16 graphs: float16)

``provenance_record``
    What the calibration was made from: image count, sha256 of the sorted image list and of the decoded
    pixels, the preprocessing, the method and percentile, tool versions and the source ONNX's sha256.
    ``calibration_sha256`` hashes the part of it that decides the calibration result (images, pixels,
    preprocessing, method, percentile, batch size); engine cache keys and calibration caches use it.

numpy + OpenCV only (no torch, no onnxruntime): this module is on the runtime path (Jetson).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np

from edge.data.sanitize import read_list_file
from edge.errors import DataError, ModelError
from edge.model_input import Preprocessor

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

#: file suffixes read as a dataset YAML by ``calibration_source`` (anything else is a manifest)
DATASET_SUFFIXES = (".yaml", ".yml")
#: images taken from a dataset split when no count is given (a manifest gives all of its lines)
DEFAULT_DATASET_COUNT = 64
#: how many missing files a DataError lists before summarizing
MAX_LISTED = 10

METHODS = ("entropy", "percentile", "minmax")
DEFAULT_PERCENTILE = 99.999


# ----------------------------------------------------------------------------------------------- sources


@dataclass
class CalibrationSource:
    """An ordered list of calibration images.

    Attributes:
        paths: absolute image paths, in the order they are fed.
        names: one stable identifier per image, same order (the path as written in the manifest, or the
            path relative to the dataset root), so list hashes do not depend on where the files live.
        origin: where the list came from: ``{"kind": "manifest", "path": ...}`` or
            ``{"kind": "dataset", "data": ..., "split": ..., "selection": ...}``.
    """

    paths: List[Path]
    names: List[str]
    origin: Dict[str, Any] = field(default_factory=dict)

    def validate(self) -> CalibrationSource:
        if not self.paths:
            raise DataError(f"calibration source {self.describe()} lists no images; expected at least one")
        if len(self.paths) != len(self.names):
            raise DataError(f"calibration source has {len(self.paths)} paths but {len(self.names)} names")
        seen = set()
        for name in self.names:
            if name in seen:
                raise DataError(f"calibration source {self.describe()} lists {name!r} twice; each image once")
            seen.add(name)
        return self

    def __len__(self) -> int:
        return len(self.paths)

    def describe(self) -> str:
        kind = self.origin.get("kind")
        if kind == "manifest":
            return f"manifest {self.origin.get('path')}"
        if kind == "dataset":
            return f"dataset {self.origin.get('data')} split {self.origin.get('split')!r}"
        return "(in-memory list)"

    def list_sha256(self) -> str:
        """sha256 of the sorted image names joined by newlines (order-independent)."""
        return hashlib.sha256("\n".join(sorted(self.names)).encode("utf-8")).hexdigest()

    def select(self, count: Optional[int], how: str = "first") -> CalibrationSource:
        """At most ``count`` images: the first ones (``how="first"``) or evenly spread over the list
        (``how="spread"``: indices ``round(i * (n - 1) / (count - 1))``), order kept."""
        if count is None or count >= len(self.paths):
            return self
        if count < 1:
            raise DataError(f"--calib-count must be >= 1, got {count}")
        n = len(self.paths)
        if how == "first":
            idx = list(range(count))
        elif how == "spread":
            idx = sorted({int(math.floor(i * (n - 1) / max(1, count - 1) + 0.5)) for i in range(count)})
        else:
            raise ValueError(f"how must be 'first' or 'spread', got {how!r}")
        origin = dict(self.origin)
        origin["selection"] = f"{how} {len(idx)} of {n}"
        return CalibrationSource([self.paths[i] for i in idx], [self.names[i] for i in idx], origin)


def read_manifest(path: PathLike) -> List[str]:
    """The image entries of a manifest, as written (comments and blank lines dropped).

    A line's ``#`` starts a comment when it begins the line or follows whitespace.
    """
    lines = read_list_file(Path(path), "calibration manifest",
                           "a text file with one image path per line (see calibration/README.md)",
                           ", or a dataset YAML with --calib-split")
    entries: List[str] = []
    for stripped in lines:
        for marker in (" #", "\t#"):
            cut = stripped.find(marker)
            if cut >= 0:
                stripped = stripped[:cut].rstrip()
        if stripped:
            entries.append(stripped)
    return entries


def source_from_manifest(path: PathLike, count: Optional[int] = None) -> CalibrationSource:
    """Images listed in a manifest (paths relative to the manifest's folder, or absolute).

    ``count``: use only the first ``count`` entries. Raises DataError naming missing files (with their
    line entries) or an empty manifest.
    """
    p = Path(path)
    entries = read_manifest(p)
    if not entries:
        raise DataError(f"calibration manifest {p} lists no images (only comments or blank lines)")
    folder = p.resolve().parent
    paths: List[Path] = []
    names: List[str] = []
    missing: List[str] = []
    seen = set()
    for entry in entries:
        resolved = Path(entry) if os.path.isabs(entry) else (folder / entry)
        resolved = Path(os.path.normpath(str(resolved)))
        if str(resolved) in seen:
            log.warning("calibration manifest %s lists %s more than once; using it once", p, entry)
            continue
        seen.add(str(resolved))
        if not resolved.is_file():
            missing.append(entry)
            continue
        paths.append(resolved)
        names.append(entry.replace("\\", "/"))
    if missing:
        listed = "\n  ".join(missing[:MAX_LISTED])
        more = f"\n  ... and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""
        raise DataError(
            f"calibration manifest {p}: {len(missing)} of {len(entries)} images not found (paths are relative "
            f"to {folder}):\n  {listed}{more}\nFix the paths or remove the lines."
        )
    source = CalibrationSource(paths, names, {"kind": "manifest", "path": str(path)})
    return source.select(count, "first").validate()


def source_from_dataset(data: PathLike, split: str, count: Optional[int] = DEFAULT_DATASET_COUNT) -> CalibrationSource:
    """Images of one split of a dataset YAML (``edge.data.load_dataset``), ``count`` of them evenly spread
    over the split (None: all). Names are paths relative to the dataset root."""
    from edge.data import load_dataset

    dataset = load_dataset(data, split, log=False)
    if not dataset.records:
        raise DataError(f"dataset {data} split {split!r} has no images to calibrate on")
    root = _dataset_root(data)
    paths = [Path(r.path) for r in dataset.records]
    names = [_relative_name(pth, root) for pth in paths]
    source = CalibrationSource(paths, names, {"kind": "dataset", "data": str(data), "split": split})
    return source.select(count, "spread").validate()


def calibration_source(spec: PathLike, split: Optional[str] = None, count: Optional[int] = None) -> CalibrationSource:
    """``--calib SPEC [--calib-split SPLIT] [--calib-count N]``: a dataset YAML (.yaml/.yml; ``split`` is
    required) or a manifest (anything else). ``count`` None: a manifest's every image, a split's
    ``DEFAULT_DATASET_COUNT``."""
    p = Path(spec)
    if p.suffix.lower() in DATASET_SUFFIXES:
        if not split:
            raise DataError(
                f"--calib {p} is a dataset YAML: name the split to calibrate on with --calib-split "
                "(e.g. trainval; never the split you report accuracy on)"
            )
        return source_from_dataset(p, split, DEFAULT_DATASET_COUNT if count is None else count)
    if split:
        raise DataError(f"--calib-split {split!r} applies to a dataset YAML, but --calib {p} is a manifest")
    return source_from_manifest(p, count)


def write_manifest(path: PathLike, images: Sequence[PathLike], header: Sequence[str] = ()) -> Path:
    """Write a manifest listing ``images`` relative to the manifest's folder (atomically)."""
    from edge.artifacts import atomic_write_text

    out = Path(path)
    folder = out.resolve().parent
    lines = [f"# {h}" if h else "#" for h in header]
    for img in images:
        lines.append(os.path.relpath(os.path.abspath(str(img)), str(folder)).replace("\\", "/"))
    atomic_write_text(out, "\n".join(lines) + "\n")
    return out


def _dataset_root(data: PathLike) -> Optional[Path]:
    try:
        from edge.data import load_config

        return Path(load_config(data).root).resolve()
    except Exception:  # noqa: BLE001 - only used to shorten names
        return None


def _relative_name(path: Path, root: Optional[Path]) -> str:
    if root is not None:
        try:
            return path.resolve().relative_to(root).as_posix()
        except ValueError:
            pass
    return path.name


# ----------------------------------------------------------------------------------------------- inputs


def preprocessing_record(fmt: Any) -> Dict[str, Any]:
    """How pixels become the model input, as recorded in provenance (``fmt``: an ``InputFormat``)."""
    rec: Dict[str, Any] = {
        "reader": "edge.data.images.read_image (BGR, EXIF orientation applied)",
        "resize": "edge.letterbox (keep aspect ratio, centred, cv2.INTER_LINEAR)",
        "input_size": [int(fmt.height), int(fmt.width)],
        "pad_value": int(fmt.pad_value),
        "layout": fmt.layout,
        "dtype": fmt.dtype,
    }
    if fmt.layout != "uint8_nhwc_bgr":
        rec["channel_order"] = "RGB"
        rec["normalization"] = {"scale": float(fmt.scale), "mean": [float(v) for v in fmt.mean],
                                "std": [float(v) for v in fmt.std]}
    else:
        rec["channel_order"] = "BGR"
        rec["normalization"] = "in the graph"
    return rec


class ImageBatcher:
    """Calibration batches in a model's exact input layout (see the module docstring).

    Iterating yields new contiguous arrays ``[batch_size, ...]`` of the input's dtype, one per batch, in
    source order; images beyond the last full batch are left out (``num_images`` says how many are used)
    with a warning. Iterable any number of times; nothing is cached.

    Args:
        source: the images.
        fmt: the model's ``InputFormat`` (``model_input_format``).
        batch_size: images per batch; must equal a static batch dimension of the graph.
    """

    def __init__(self, source: CalibrationSource, fmt: Any, batch_size: int = 1) -> None:
        self.source = source.validate()
        self.fmt = fmt.validate()
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise DataError(f"calibration batch size must be >= 1, got {batch_size}")
        if fmt.batch > 0 and fmt.batch != self.batch_size:
            raise ModelError(
                f"the model's input has a fixed batch of {fmt.batch} but calibration batches of {self.batch_size} "
                f"were asked for; use batch size {fmt.batch} or export with a dynamic batch"
            )
        if len(source) < self.batch_size:
            raise DataError(
                f"calibration source {source.describe()} has {len(source)} images, fewer than one batch of "
                f"{self.batch_size}"
            )
        self.num_batches = len(source) // self.batch_size
        self.num_images = self.num_batches * self.batch_size
        if self.num_images < len(source):
            log.warning("calibration uses %d of %d images (whole batches of %d only)", self.num_images,
                        len(source), self.batch_size)
        self._preprocessor = Preprocessor(fmt)
        self.shape = fmt.tensor_shape(self.batch_size)
        self.dtype = np.dtype(fmt.dtype)

    def __len__(self) -> int:
        return self.num_batches

    @property
    def names(self) -> List[str]:
        """Names of the images actually fed (the first ``num_images`` of the source)."""
        return self.source.names[: self.num_images]

    @property
    def paths(self) -> List[Path]:
        return self.source.paths[: self.num_images]

    def preprocess(self, image_bgr: np.ndarray) -> np.ndarray:
        """One BGR uint8 [H, W, 3] frame -> the model input for it, batch 1 (a new array)."""
        out = self._preprocessor.new_buffer()
        self._preprocessor(image_bgr, out)
        return out

    def __iter__(self) -> Iterator[np.ndarray]:
        from edge.data.images import read_image

        for b in range(self.num_batches):
            batch = np.empty(self.shape, self.dtype)
            for i in range(self.batch_size):
                path = self.source.paths[b * self.batch_size + i]
                self._preprocessor(read_image(path), batch[i:i + 1])
            yield batch

    def pixels_sha256(self) -> str:
        """sha256 over the decoded source pixels of the images used, in sorted-name order (each image
        contributes its name, shape and BGR bytes), so it changes when any image's content changes."""
        from edge.data.images import read_image

        digest = hashlib.sha256()
        for name, path in sorted(zip(self.names, self.paths)):
            image = np.ascontiguousarray(read_image(path))
            digest.update(name.encode("utf-8") + b"\0")
            digest.update("x".join(str(d) for d in image.shape).encode("ascii") + b"\0")
            digest.update(hashlib.sha256(image.tobytes()).digest())
        return digest.hexdigest()

    def list_sha256(self) -> str:
        return hashlib.sha256("\n".join(sorted(self.names)).encode("utf-8")).hexdigest()

    def preprocessing(self) -> Dict[str, Any]:
        return preprocessing_record(self.fmt)


# ----------------------------------------------------------------------------------------------- provenance


def tool_versions(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Versions of the tools that shape calibration (those importable here) plus ``extra``."""
    import edge

    versions = {"edge": edge.__version__, "python": platform.python_version(), "numpy": np.__version__}
    for module, key in (("cv2", "opencv"), ("onnx", "onnx"), ("onnxruntime", "onnxruntime")):
        try:
            versions[key] = str(__import__(module).__version__)
        except Exception:  # noqa: BLE001 - absent tools are simply not listed
            continue
    versions.update(extra or {})
    return versions


def provenance_record(
    batcher: ImageBatcher,
    *,
    method: str,
    percentile: Optional[float] = None,
    source_onnx_sha256: Optional[str] = None,
    tools: Optional[Dict[str, str]] = None,
    options: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """The provenance of one calibration (a JSON-ready dict); decodes every image once for the pixel hash.

    ``method``: entropy | percentile | minmax (TensorRT's legacy calibrator: entropy). ``percentile`` only
    with the percentile method. ``tools`` extends ``tool_versions()`` (e.g. {"tensorrt": "10.3.0"}).
    ``options``: settings of the calibrator that change its result (e.g. {"num_bins": 2048}).
    """
    if method not in METHODS:
        raise ValueError(f"calibration method {method!r} is not one of {METHODS}")
    if method == "percentile":
        percentile = DEFAULT_PERCENTILE if percentile is None else float(percentile)
    else:
        percentile = None
    record: Dict[str, Any] = {
        "images": batcher.num_images,
        "batch_size": batcher.batch_size,
        "list_sha256": batcher.list_sha256(),
        "pixels_sha256": batcher.pixels_sha256(),
        "source": dict(batcher.source.origin),
        "preprocessing": batcher.preprocessing(),
        "method": method,
        "percentile": percentile,
        "method_options": dict(options or {}),
        "tools": tool_versions(tools),
        "source_onnx_sha256": source_onnx_sha256,
    }
    record["calibration_sha256"] = calibration_sha256(record)
    return record


#: the provenance fields that decide a calibration's result (tool versions and file names do not)
HASHED_FIELDS = ("images", "batch_size", "list_sha256", "pixels_sha256", "preprocessing", "method", "percentile",
                 "method_options")


def calibration_sha256(record: Dict[str, Any]) -> str:
    """sha256 of the canonical JSON of ``record``'s ``HASHED_FIELDS``."""
    missing = [k for k in HASHED_FIELDS if k not in record and k != "method_options"]
    if missing:
        raise ValueError(f"provenance record lacks {missing}")
    payload = {k: record.get(k) for k in HASHED_FIELDS}
    payload["method_options"] = payload["method_options"] or {}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
