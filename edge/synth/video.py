"""Blood-smear footage as iterators and as a video file, for the runtime's ``test://smear`` source and
the README's demo (numpy + cv2 only).

- ``iter_smear(seed, ...)`` yields ``SmearFrame(index, image, boxes, labels)``: the frame (uint8
  [H, W, 3] BGR) and its ground truth (float32 [N, 4] xyxy frame pixels, int64 [N]; 0 RBC, 1 WBC,
  2 Platelets, as in ``data/bccd.yaml``).
- ``iter_smear_frames(seed, width, height)`` yields the images alone (what a frame source needs).
- ``write_smear_video(path, frames, fps, seed)`` renders ``frames`` frames into a video file (``.mp4``
  with the ``mp4v`` codec, ``.avi`` with MJPG), atomically: the file is written under a temporary name
  in the same folder and renamed when complete, so ``path`` is either absent or a whole video; with
  ``ground_truth=...`` the per-frame boxes are written beside it as JSON lines, also atomically.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterator, NamedTuple, Optional, Union

import cv2
import numpy as np

from edge.errors import EdgeError
from edge.synth.smear import CLASS_NAMES, SmearConfig, SmearScene

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}


class SmearFrame(NamedTuple):
    """One rendered frame: image uint8 [H, W, 3] BGR, boxes float32 [N, 4] xyxy pixels, labels int64 [N]."""

    index: int
    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray


def iter_smear(seed: int = 0, width: int = 640, height: int = 480, frames: Optional[int] = None,
               config: Optional[SmearConfig] = None, start: int = 0) -> Iterator[SmearFrame]:
    """Frames ``start, start + 1, ...`` of ``SmearScene(seed, width, height)`` with ground truth;
    endless when ``frames`` is None, else ``frames`` of them."""
    if frames is not None and frames < 0:
        raise ValueError(f"frames={frames}; expected a count >= 0 or None for an endless stream")
    scene = SmearScene(seed, width, height, config)
    i = start
    while frames is None or i < start + frames:
        image, boxes, labels = scene.frame(i)
        yield SmearFrame(i, image, boxes, labels)
        i += 1


def iter_smear_frames(seed: int = 0, width: int = 640, height: int = 480, frames: Optional[int] = None,
                      config: Optional[SmearConfig] = None) -> Iterator[np.ndarray]:
    """The images alone (uint8 [H, W, 3] BGR), endless when ``frames`` is None: the ``test://smear``
    source. The slide is rendered on the first ``next()`` (a few hundred ms), then ~5-15 ms a frame."""
    if frames is not None and frames < 0:
        raise ValueError(f"frames={frames}; expected a count >= 0 or None for an endless stream")
    scene = SmearScene(seed, width, height, config)
    i = 0
    while frames is None or i < frames:
        yield scene.image(i)
        i += 1


def _temp_path(path: Path) -> Path:
    # keep the extension: cv2.VideoWriter picks the container from it
    return path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")


def write_smear_video(path: PathLike, frames: int, fps: float = 30.0, seed: int = 0, *, width: int = 640,
                      height: int = 480, config: Optional[SmearConfig] = None,
                      ground_truth: Optional[PathLike] = None) -> Path:
    """Render ``frames`` frames of ``SmearScene(seed, width, height, config)`` into the video ``path``.

    Atomic: written as a hidden temporary file beside ``path``, renamed on success, removed on any
    failure (including Ctrl-C). ``ground_truth``: also write one JSON object per line,
    ``{"frame": i, "boxes": [[x1, y1, x2, y2], ...], "labels": [...], "names": [...]}`` (xyxy frame
    pixels). Returns ``path``. Raises EdgeError when OpenCV cannot encode the container.
    """
    out = Path(path)
    if int(frames) < 1:
        raise ValueError(f"frames={frames}; expected at least 1 frame")
    if not (fps > 0):
        raise ValueError(f"fps={fps}; expected a frame rate > 0")
    fourcc_name = _FOURCC.get(out.suffix.lower())
    if fourcc_name is None:
        raise EdgeError(
            f"cannot write a video to {out}: unknown extension {out.suffix!r}; expected one of "
            f"{sorted(_FOURCC)} (for example demo.mp4)"
        )
    if not out.parent.is_dir():
        raise EdgeError(f"cannot write {out}: the folder {out.parent} does not exist; create it first")
    tmp = _temp_path(out)
    tmp_gt = _temp_path(Path(ground_truth)) if ground_truth is not None else None
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*fourcc_name), float(fps), (int(width), int(height)))
    gt_file = None
    try:
        if not writer.isOpened():
            raise EdgeError(
                f"OpenCV could not open a {fourcc_name} video writer for {out} ({width}x{height} at {fps} fps); "
                "this OpenCV build lacks the encoder: try an .avi path (MJPG) or install opencv-python"
            )
        if tmp_gt is not None:
            gt_file = open(tmp_gt, "w", encoding="utf-8")
        for item in iter_smear(seed, width, height, int(frames), config):
            writer.write(item.image)
            if gt_file is not None:
                gt_file.write(json.dumps({
                    "frame": item.index,
                    "boxes": [[round(float(v), 2) for v in b] for b in item.boxes],
                    "labels": [int(v) for v in item.labels],
                    "names": [CLASS_NAMES[int(v)] for v in item.labels],
                }) + "\n")
        writer.release()
        if not tmp.is_file() or tmp.stat().st_size == 0:
            raise EdgeError(f"OpenCV wrote no data for {out}; its {fourcc_name} encoder may be missing")
        if gt_file is not None:
            gt_file.close()
            gt_file = None
            os.replace(tmp_gt, Path(ground_truth))  # type: ignore[arg-type]
        os.replace(tmp, out)
    except BaseException:
        writer.release()
        if gt_file is not None:
            gt_file.close()
        for p in (tmp, tmp_gt):
            if p is not None and p.exists():
                p.unlink()
        raise
    log.info("wrote %d smear frames (%dx%d, %.1f fps, seed %d) to %s", frames, width, height, fps, seed, out)
    return out
