"""Procedurally rendered blood-smear frames that look like BCCD microscope images (numpy + cv2 only).

The scene is a stained peripheral blood smear seen through a bright-field microscope whose slide is
moved slowly under the objective: a large "slide" (the world, a few frames wide) is rendered once, and
frame ``i`` is the camera's window onto it at a smooth, sub-pixel Lissajous position. Cells are fixed on
the slide, so they drift across the frame together, enter and leave at the borders, and consecutive
frames differ by about one pixel of motion plus sensor noise.

Image formation follows transmitted light (Beer-Lambert): every cell adds its optical density (OD, per
BGR channel) to an OD map, and the slide is ``background * exp(-OD)``. Overlapping red cells therefore
darken where they overlap, as in real smears (their summed OD is softly saturated, as the camera's
response is). The cell sprites (red cells, four kinds of white cells, platelets, debris) and the
per-scene stain are drawn in ``edge.synth.cells``; this module places them on the slide and films it.

Then a camera: brightness falloff (vignette), a few dust specks fixed to the sensor, optical blur, sensor
noise and a JPEG round trip, as in BCCD's 640x480 JPEGs.

Ground truth follows BCCD's annotation conventions (measured on its 4,888 boxes): boxes are xyxy pixel
corners in the frame, float32; RBC and WBC boxes are tight around the visible cell, platelet boxes are
loose (BCCD's platelet boxes are ~30-57 px around a ~14-28 px blob); boxes are clipped to the frame and a
cut cell is kept only when at least ``min_visible`` of its width and of its height is inside (BCCD
labels cut RBCs only from ~60% visible). Labels follow ``data/bccd.yaml``: 0 RBC, 1 WBC, 2 Platelets.

Cell sizes are given for 640x480 and scale with ``min(width / 640, height / 480)``. The colour
statistics were matched to BCCD's test split (mean BGR ~ (183, 179, 189), plasma ~ (200, 205, 203), WBC
nucleus ~ (202, 97, 126)); tests/synth/test_smear.py checks them against the real images when present.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import cv2
import numpy as np

from edge.synth.cells import (
    debris_sprite,
    platelet_sprite,
    rbc_sprite,
    sample_style,
    smooth_noise,
    wbc_sprite,
)

log = logging.getLogger(__name__)

CLASS_NAMES: Tuple[str, str, str] = ("RBC", "WBC", "Platelets")
RBC, WBC, PLATELET = 0, 1, 2

_REF_WIDTH, _REF_HEIGHT = 640, 480


@dataclass
class SmearConfig:
    """Knobs of the renderer; sizes and speeds are in pixels at 640x480 (scaled with the frame).

    Attributes:
        rbc_per_frame: mean number of red cells per frame area (BCCD: ~11 labelled, more visible).
        wbc_per_frame: mean number of white cells per frame area (BCCD: ~1, usually centred).
        platelets_per_frame: mean number of platelets per frame area (BCCD: ~1, 0-4).
        speed: mean slide motion in pixels per frame.
        blur_sigma: optical blur of the specimen (Gaussian sigma, pixels).
        noise_sigma: sensor noise (standard deviation in 0..255 units).
        jpeg_quality: quality of the JPEG round trip applied to every frame; 0 disables it.
        vignette: relative brightness loss at the farthest corner.
        min_visible: a cell cut by the border keeps its box when at least this fraction of its width and
            of its height is inside the frame.
    """

    rbc_per_frame: float = 17.0
    wbc_per_frame: float = 1.15
    platelets_per_frame: float = 1.0
    speed: float = 1.3
    blur_sigma: float = 1.4
    noise_sigma: float = 1.8
    jpeg_quality: int = 82
    vignette: float = 0.12
    min_visible: float = 0.5

    def validate(self) -> "SmearConfig":
        checks = [
            ("rbc_per_frame", 0.0, 60.0),
            ("wbc_per_frame", 0.0, 6.0),
            ("platelets_per_frame", 0.0, 20.0),
            ("speed", 0.0, 50.0),
            ("blur_sigma", 0.0, 10.0),
            ("noise_sigma", 0.0, 40.0),
            ("vignette", 0.0, 0.9),
            ("min_visible", 0.0, 1.0),
        ]
        for name, lo, hi in checks:
            value = float(getattr(self, name))
            if not (lo <= value <= hi) or math.isnan(value):
                raise ValueError(f"SmearConfig.{name}={value} is out of range; expected {lo} <= {name} <= {hi}")
        if not (0 <= int(self.jpeg_quality) <= 100):
            raise ValueError(f"SmearConfig.jpeg_quality={self.jpeg_quality}; expected 0 (off) or 1..100")
        return self


@dataclass
class _Cell:
    label: int
    x: int  # world position of the sprite's top-left corner
    y: int
    cx: float  # world centre
    cy: float
    radius: float
    box: np.ndarray  # float32 [4] xyxy world pixels (BCCD convention)
    od: np.ndarray = field(repr=False)  # float32 [h, w, 3]


# -- the scene -----------------------------------------------------------------------------------


class SmearScene:
    """A deterministic blood-smear "video": ``frame(i)`` renders frame ``i`` and its ground truth.

    Args:
        seed: everything (cells, stain, illumination, camera path, noise) follows from it.
        width, height: frame size in pixels (cells scale with ``min(width / 640, height / 480)``).
        config: renderer knobs (``SmearConfig``); validated here.

    ``frame(i)`` -> (image uint8 [H, W, 3] BGR, boxes float32 [N, 4] xyxy frame pixels, labels int64 [N])
    with labels 0 RBC, 1 WBC, 2 Platelets (``CLASS_NAMES``). Any ``i >= 0`` is valid and frames can be
    rendered in any order; the same (seed, size, config, i) always gives the same pixels.
    Rendering the slide (uint8, about 7 MB at 640x480) takes under a second at construction; a frame
    then takes ~5-10 ms on one CPU core (a crop, a sub-pixel shift, vignette, noise, a JPEG round trip).
    """

    def __init__(self, seed: int, width: int = 640, height: int = 480, config: Optional[SmearConfig] = None):
        if int(width) < 32 or int(height) < 32:
            raise ValueError(f"SmearScene size {width}x{height} is too small; expected at least 32x32")
        self.seed = int(seed)
        self.width = int(width)
        self.height = int(height)
        self.config = (config or SmearConfig()).validate()
        self.class_names = list(CLASS_NAMES)
        self.scale = min(self.width / _REF_WIDTH, self.height / _REF_HEIGHT)
        root = np.random.SeedSequence([self.seed, 0x5E7EA2])
        s_style, s_cells, s_path, s_noise, s_cam = [np.random.default_rng(s) for s in root.spawn(5)]
        self._style = sample_style(s_style)
        self._init_path(s_path)
        self._cells = self._place_cells(s_cells)
        self._world = self._render_world(s_cells)
        self._camera = self._camera_map(s_cam)
        self._init_noise(s_noise)
        self._boxes = (np.stack([c.box for c in self._cells]) if self._cells else np.zeros((0, 4))).astype(np.float32)
        self._full_wh = self._boxes[:, 2:] - self._boxes[:, :2]
        self._labels = np.array([c.label for c in self._cells], np.int64)
        log.debug("smear scene seed=%d %dx%d: world %s, %d cells", self.seed, self.width, self.height,
                  self._world.shape[:2], len(self._cells))

    # -- geometry --------------------------------------------------------------------------------

    def _init_path(self, rng: np.random.Generator) -> None:
        """Camera path: offset(i) = pad + A * (1 + sin(2 pi i / P + phase)) per axis (a Lissajous curve)."""
        w, h = self.width, self.height
        self._pad = 4
        self._amp = (0.9 * w, 0.9 * h)
        speed = max(self.config.speed * self.scale, 1e-6)
        # mean |d/di| of A sin(2 pi i / P) is 4A / P; split the speed between the axes (x moves more)
        self._period = (4 * self._amp[0] / (0.8 * speed), 4 * self._amp[1] / (0.5 * speed))
        self._phase = (float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0, 2 * math.pi)))
        self._world_w = int(math.ceil(w + 2 * self._amp[0])) + 2 * self._pad + 2
        self._world_h = int(math.ceil(h + 2 * self._amp[1])) + 2 * self._pad + 2

    def offset(self, i: int) -> Tuple[float, float]:
        """World position (x, y) of frame ``i``'s top-left corner (sub-pixel)."""
        if self.config.speed == 0:
            return float(self._pad + self._amp[0]), float(self._pad + self._amp[1])
        ox = self._pad + self._amp[0] * (1 + math.sin(2 * math.pi * i / self._period[0] + self._phase[0]))
        oy = self._pad + self._amp[1] * (1 + math.sin(2 * math.pi * i / self._period[1] + self._phase[1]))
        return ox, oy

    def _place_cells(self, rng: np.random.Generator) -> List[_Cell]:
        cfg, style, s = self.config, self._style, self.scale
        ww, wh = self._world_w, self._world_h
        frames_of_area = ww * wh / float(self.width * self.height)
        cells: List[_Cell] = []

        def add(label: int, od: np.ndarray, box: np.ndarray, cx: float, cy: float, radius: float) -> None:
            hs = (od.shape[1] - 1) / 2.0, (od.shape[0] - 1) / 2.0
            x, y = int(round(cx - hs[0])), int(round(cy - hs[1]))
            cells.append(_Cell(label, x, y, x + hs[0], y + hs[1], radius,
                               box + np.array([x, y, x, y], np.float32), od))

        # White cells on a jittered grid: about wbc_per_frame of them in any frame, rarely none.
        wbc_centres: List[Tuple[float, float, float]] = []
        if cfg.wbc_per_frame > 0:
            gx = self.width / math.sqrt(cfg.wbc_per_frame)
            gy = self.height / math.sqrt(cfg.wbc_per_frame)
            for j in range(int(math.ceil(wh / gy)) + 1):
                for i in range(int(math.ceil(ww / gx)) + 1):
                    if rng.random() < 0.04:
                        continue
                    cx = (i + 0.5 + rng.uniform(-0.2, 0.2)) * gx
                    cy = (j + 0.5 + rng.uniform(-0.2, 0.2)) * gy
                    kind = str(rng.choice(["neutrophil", "lymphocyte", "eosinophil", "monocyte"],
                                          p=[0.6, 0.18, 0.12, 0.10]))
                    od, box = wbc_sprite(rng, style, kind, s)
                    radius = float(max(box[2] - box[0], box[3] - box[1]) / 2.0)
                    add(WBC, od, box, cx, cy, radius)
                    wbc_centres.append((cx, cy, radius))

        # Red cells: rejection sampling under a smooth density field (clumps and clear plasma), with a
        # minimum centre distance that still lets neighbours overlap and keeps them off the white cells.
        density = smooth_noise(rng, max(2, wh // 8), max(2, ww // 8), 260 * s / 8)
        target = int(round(cfg.rbc_per_frame * frames_of_area))
        centres = np.zeros((0, 3), np.float32)
        wbc_arr = np.array(wbc_centres, np.float32).reshape(-1, 3)
        tries = 0
        while len(centres) < target and tries < target * 40:
            tries += 1
            cx, cy = rng.uniform(0, ww), rng.uniform(0, wh)
            dv = density[min(int(cy // 8), density.shape[0] - 1), min(int(cx // 8), density.shape[1] - 1)]
            if rng.random() > 1.0 / (1.0 + math.exp(-1.2 * dv - 1.0)):
                continue
            diameter = float(np.clip(rng.normal(110, 11), 84, 136)) * s
            r = diameter / 2.0
            if len(wbc_arr):
                d = np.hypot(wbc_arr[:, 0] - cx, wbc_arr[:, 1] - cy)
                if np.any(d < 0.9 * (wbc_arr[:, 2] + r)):
                    continue
            if len(centres):
                d = np.hypot(centres[:, 0] - cx, centres[:, 1] - cy)
                k = 0.6 if rng.random() < 0.3 else 0.8
                if np.any(d < k * (centres[:, 2] + r)):
                    continue
            od, box = rbc_sprite(rng, style, diameter)
            add(RBC, od, box, cx, cy, r)
            centres = np.concatenate([centres, np.array([[cx, cy, r]], np.float32)])

        # Platelets: mostly in the plasma between cells.
        n_plt = int(rng.poisson(cfg.platelets_per_frame * frames_of_area))
        placed = 0
        tries = 0
        while placed < n_plt and tries < n_plt * 50:
            tries += 1
            cx, cy = rng.uniform(0, ww), rng.uniform(0, wh)
            if len(wbc_arr) and np.any(np.hypot(wbc_arr[:, 0] - cx, wbc_arr[:, 1] - cy) < wbc_arr[:, 2] + 12 * s):
                continue
            if len(centres) and np.any(np.hypot(centres[:, 0] - cx, centres[:, 1] - cy) < centres[:, 2] * 0.9):
                if rng.random() > 0.15:
                    continue
            od, box = platelet_sprite(rng, style, s)
            add(PLATELET, od, box, cx, cy, 10 * s)
            placed += 1
        return cells

    # -- rendering -------------------------------------------------------------------------------

    def _render_world(self, rng: np.random.Generator) -> np.ndarray:
        """The whole slide as uint8 [Hw, Ww, 3] BGR, optical blur included."""
        ww, wh, s = self._world_w, self._world_h, self.scale
        od = np.zeros((wh, ww, 3), np.float32)

        def paste(x: int, y: int, sprite: np.ndarray) -> None:
            h, w = sprite.shape[:2]
            x0, y0, x1, y1 = max(0, x), max(0, y), min(ww, x + w), min(wh, y + h)
            if x1 > x0 and y1 > y0:
                od[y0:y1, x0:x1] += sprite[y0 - y:y1 - y, x0 - x:x1 - x]

        for cell in self._cells:
            if cell.label == RBC:
                paste(cell.x, cell.y, cell.od)
        # soft saturation of the red cells' summed density: overlaps darken, but less than twice (the
        # camera's response is compressive; in BCCD overlaps read as darker, not as deep red)
        np.maximum(od, -0.2, out=od)  # the bright halo and spots are small negative ODs; keep 1 + od / 0.55 > 0
        od /= 1.0 + od * (1.0 / 0.55)
        for cell in self._cells:
            if cell.label != RBC:
                paste(cell.x, cell.y, cell.od)
        for _ in range(int(rng.poisson(4 * ww * wh / float(self.width * self.height)))):
            sp = debris_sprite(rng, s)
            paste(int(rng.uniform(0, ww)), int(rng.uniform(0, wh)), sp)
        for cell in self._cells:  # sprites are no longer needed once painted
            cell.od = np.zeros((0, 0, 3), np.float32)
        # plasma: faint large-scale unevenness of stain and thickness
        od += (0.012 * smooth_noise(rng, wh, ww, 90 * max(s, 0.25)) + 0.006 * smooth_noise(rng, wh, ww, 6 * max(s, 0.25)))[:, :, None]
        world = np.exp(-od, out=od)
        world *= self._style.background[None, None, :]
        if self.config.blur_sigma > 0:
            cv2.GaussianBlur(world, (0, 0), self.config.blur_sigma * max(s, 0.25), dst=world)
        return np.clip(world, 0, 255, out=world).round().astype(np.uint8)

    def _camera_map(self, rng: np.random.Generator) -> np.ndarray:
        """Per-pixel gain float32 [H, W, 3]: vignette and a few sensor dust specks (fixed to the camera)."""
        w, h = self.width, self.height
        cx, cy = self._style.vignette_centre
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        d2 = ((xx / w - cx) / 0.75) ** 2 + ((yy / h - cy) / 0.75) ** 2
        gain = 1.0 - self.config.vignette * np.clip(d2, 0.0, 1.2) / 1.0
        gain = np.repeat(gain[:, :, None], 3, axis=2)
        for _ in range(int(rng.integers(2, 6))):
            sp = debris_sprite(rng, self.scale)
            sh = sp.shape[0]
            x, y = int(rng.uniform(0, w - sh)), int(rng.uniform(0, h - sh))
            gain[y:y + sh, x:x + sh] *= np.exp(-sp)
        return gain.astype(np.float32)

    def _init_noise(self, rng: np.random.Generator) -> None:
        h, w = self.height, self.width
        self._noise_margin = 16
        bank = []
        for _ in range(3):
            n = rng.standard_normal((h + self._noise_margin, w + self._noise_margin, 3)).astype(np.float32)
            n = cv2.GaussianBlur(n, (0, 0), 0.6)
            n *= self.config.noise_sigma / max(float(n.std()), 1e-6)
            bank.append(n)
        self._noise = bank

    def image(self, i: int, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Frame ``i`` alone: uint8 [H, W, 3] BGR (written into ``out`` when it has that shape)."""
        if i < 0:
            raise ValueError(f"frame index {i} is negative; expected i >= 0")
        ox, oy = self.offset(i)
        w, h = self.width, self.height
        # integer part by slicing, fractional part by a bilinear shift of a 1-px larger window
        ix, iy = int(math.floor(ox)), int(math.floor(oy))
        fx, fy = ox - ix, oy - iy
        win = self._world[iy:iy + h + 2, ix:ix + w + 2]
        m = np.array([[1.0, 0.0, fx], [0.0, 1.0, fy]], np.float32)
        img = cv2.warpAffine(win, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_REPLICATE)
        img = cv2.multiply(img.astype(np.float32), self._camera)
        if self.config.noise_sigma > 0:
            rng = np.random.default_rng([self.seed, 0xF4A3E, int(i)])
            k = int(rng.integers(len(self._noise)))
            nx, ny = (int(v) for v in rng.integers(0, self._noise_margin, 2))
            img = cv2.add(img, self._noise[k][ny:ny + h, nx:nx + w])
        frame = np.clip(img, 0, 255, out=img).astype(np.uint8)
        q = int(self.config.jpeg_quality)
        if q > 0:
            ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, q])
            if ok:
                frame = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        if out is not None and out.shape == frame.shape and out.dtype == np.uint8:
            out[...] = frame
            return out
        return frame

    def ground_truth(self, i: int) -> Tuple[np.ndarray, np.ndarray]:
        """Boxes float32 [N, 4] xyxy frame pixels (clipped) and labels int64 [N] visible in frame ``i``."""
        ox, oy = self.offset(i)
        boxes = self._boxes - np.array([ox, oy, ox, oy], np.float32)
        clipped = boxes.copy()
        clipped[:, 0::2] = np.clip(clipped[:, 0::2], 0, self.width)
        clipped[:, 1::2] = np.clip(clipped[:, 1::2], 0, self.height)
        vis = clipped[:, 2:] - clipped[:, :2]
        need = np.maximum(self.config.min_visible * self._full_wh, 1.0)
        keep = np.all(vis >= need, axis=1)
        return clipped[keep].astype(np.float32), self._labels[keep].copy()

    def frame(self, i: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Frame ``i``: (image uint8 [H, W, 3] BGR, boxes float32 [N, 4] xyxy pixels, labels int64 [N])."""
        boxes, labels = self.ground_truth(i)
        return self.image(i), boxes, labels

    def __repr__(self) -> str:
        return f"SmearScene(seed={self.seed}, width={self.width}, height={self.height})"
