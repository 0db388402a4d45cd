"""Legacy implicit INT8 for TensorRT <= 10: an IInt8EntropyCalibrator2 fed by the calibration batcher.

The primary INT8 path is explicit Q/DQ from ``edge quantize`` (the only one TensorRT 11 accepts). This
calibrator exists for users on TensorRT 8.5/10 who want TensorRT's own calibration; it reads batches
from the same batcher ``edge quantize`` uses (same letterbox, same input layout), so both paths see
identical pixels.

The calibration cache is written with a provenance record beside it (``NAME.cache`` + ``NAME.json``).
A cache whose provenance no longer matches the calibration data (other images, other preprocessing,
another TensorRT) is ignored and rewritten: a stale calibration cache silently miscalibrates.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from edge.artifacts import atomic_write_bytes, atomic_write_json, sha256_bytes

log = logging.getLogger(__name__)


class CalibrationCache:
    """A calibration cache file and its provenance record; valid only for matching provenance."""

    def __init__(self, path: str, provenance: Dict[str, Any]):
        self.path = Path(path)
        self.record_path = self.path.with_suffix(".json")
        self.provenance = dict(provenance)

    def read(self) -> Optional[bytes]:
        if not self.path.exists():
            return None
        try:
            record = json.loads(self.record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            log.warning("calibration cache %s has no readable provenance record; recalibrating", self.path)
            return None
        if record.get("provenance") != self.provenance:
            log.warning("calibration cache %s was made from other data or settings; recalibrating", self.path)
            return None
        data = self.path.read_bytes()
        if record.get("sha256") != sha256_bytes(data):
            log.warning("calibration cache %s does not match its recorded hash; recalibrating", self.path)
            return None
        return data

    def write(self, data: bytes) -> None:
        atomic_write_bytes(self.path, data)
        atomic_write_json(self.record_path, {"provenance": self.provenance, "sha256": sha256_bytes(data)})
        log.info("wrote calibration cache %s", self.path)


class CalibrationFeeder:
    """Turns a batch iterable into device pointers for TensorRT's ``get_batch`` (one reused buffer).

    ``batches``: iterable of contiguous numpy arrays, each the full input shape [B, ...] with the
    graph's input dtype. ``device_buffer(nbytes)`` returns an object with ``ptr`` (int) and
    ``upload(array)`` (synchronous host-to-device copy); ``edge.cuda.DeviceBuffer`` on a real device.

    ``shape`` / ``dtype``: what TensorRT reads from the buffer: the calibration profile's opt shape (for a
    network with dynamic dimensions, TensorRT calibrates at that shape) and the input's dtype. The buffer
    is sized from them and every batch must match them exactly. Without them the first batch sizes the
    buffer; every batch must match its byte size.
    """

    def __init__(self, batches: Iterable[np.ndarray], batch_size: int,
                 device_buffer: Callable[[int], Any], *, shape: Optional[Sequence[int]] = None,
                 dtype: Any = None):
        self.batch_size = int(batch_size)
        self.shape: Optional[Tuple[int, ...]] = tuple(int(d) for d in shape) if shape is not None else None
        self.dtype = np.dtype(dtype) if dtype is not None else None
        self.nbytes: Optional[int] = None
        if self.shape is not None:
            if self.dtype is None:
                raise ValueError("CalibrationFeeder: give the input's dtype with its shape")
            if self.shape[0] != self.batch_size:
                raise ValueError(
                    f"calibration batch size {self.batch_size} does not match the opt shape {list(self.shape)} "
                    "TensorRT calibrates at; make the batcher's batch size the profile's opt batch"
                )
            self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        self._iter: Iterator[np.ndarray] = iter(batches)
        self._device_buffer = device_buffer
        self._buffer: Any = None
        self.batches_fed = 0

    def _check(self, batch: np.ndarray) -> None:
        if batch.shape[0] != self.batch_size:
            raise ValueError(f"calibration batch has {batch.shape[0]} images, expected {self.batch_size}")
        if self.shape is not None and tuple(batch.shape) != self.shape:
            raise ValueError(
                f"calibration batch of shape {list(batch.shape)} does not match {list(self.shape)}, the "
                "calibration profile's opt shape TensorRT reads from the device buffer: letterbox the "
                "calibration images to the size the engine is built for (edge.data.calibration.ImageBatcher "
                "with that size)"
            )
        if self.dtype is not None and batch.dtype != self.dtype:
            raise ValueError(f"calibration batch is {batch.dtype}, the network input is {self.dtype}")
        if self.nbytes is not None and batch.nbytes != self.nbytes:
            raise ValueError(
                f"calibration batch of {batch.nbytes} bytes ({list(batch.shape)} {batch.dtype}) does not fit "
                f"the {self.nbytes}-byte device buffer TensorRT reads; every batch must have the same shape"
            )

    def next_pointers(self, names: List[str]) -> Optional[List[int]]:
        try:
            batch = next(self._iter)
        except StopIteration:
            return None
        batch = np.ascontiguousarray(batch)
        self._check(batch)
        if self._buffer is None:
            self.nbytes = batch.nbytes
            self._buffer = self._device_buffer(self.nbytes)
        self._buffer.upload(batch)
        self.batches_fed += 1
        return [int(self._buffer.ptr)] * len(names)

    def close(self) -> None:
        if self._buffer is not None and hasattr(self._buffer, "free"):
            self._buffer.free()
        self._buffer = None


def make_entropy_calibrator(trt: Any, feeder: CalibrationFeeder, cache: CalibrationCache) -> Any:
    """An ``IInt8EntropyCalibrator2`` instance (TensorRT <= 10) that reads from ``feeder``."""

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)

        def get_batch_size(self) -> int:
            return feeder.batch_size

        def get_batch(self, names: List[str]) -> Optional[List[int]]:
            return feeder.next_pointers(names)

        def read_calibration_cache(self) -> Optional[bytes]:
            return cache.read()

        def write_calibration_cache(self, data: Any) -> None:
            cache.write(bytes(data))

    return EntropyCalibrator()
