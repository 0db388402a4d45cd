"""Procedurally generated footage: blood-smear frames that look like BCCD images, with ground truth.

Nothing here is copied from BCCD or fetched: every pixel is rendered from a seed (numpy + cv2 only, no
torch), so the README's demo and the runtime's ``test://smear`` source work on a fresh machine.

- ``SmearScene(seed, width=640, height=480).frame(i)`` -> (image uint8 [H, W, 3] BGR, boxes float32
  [N, 4] xyxy pixels, labels int64 [N]); labels 0 RBC, 1 WBC, 2 Platelets (``CLASS_NAMES``).
- ``iter_smear`` / ``iter_smear_frames``: frames with / without ground truth.
- ``write_smear_video(path, frames, fps, seed)``: an mp4 (or avi), written atomically.
"""

from __future__ import annotations

from edge.synth.smear import CLASS_NAMES, SmearConfig, SmearScene
from edge.synth.video import SmearFrame, iter_smear, iter_smear_frames, write_smear_video

__all__ = [
    "CLASS_NAMES",
    "SmearConfig",
    "SmearFrame",
    "SmearScene",
    "iter_smear",
    "iter_smear_frames",
    "write_smear_video",
]
