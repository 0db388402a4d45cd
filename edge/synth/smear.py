"""Procedurally rendered blood-smear frames that look like BCCD microscope images (numpy + cv2 only).

The scene is a stained peripheral blood smear seen through a bright-field microscope whose slide is
moved slowly under the objective: a large "slide" (the world, a few frames wide) is rendered once, and
frame ``i`` is the camera's window onto it at a smooth, sub-pixel Lissajous position. Cells are fixed on
the slide, so they drift across the frame together, enter and leave at the borders, and consecutive
frames differ by about one pixel of motion plus sensor noise.

Image formation follows transmitted light (Beer-Lambert): every cell adds its optical density (OD, per
BGR channel) to an OD map, and the slide is ``background * exp(-OD)``. Overlapping red cells therefore
darken where they overlap, as in real smears (their summed OD is softly saturated, as the camera's
response is). Nuclei get a slightly negative blue OD: BCCD's camera boosts colour, so nuclei read bluer
than the plasma. Cell sprites:

- RBC (label 0): discocytes, ~84-136 px across at 640x480: a flat disc with rounded edges and a pale
  centre of per-scene depth, a darker rim and a faint bright halo, slightly elliptic and irregular
  outlines, some refractile spots; they cluster and overlap, and many are cut by the frame border.
  Per scene, the stain ranges from lilac-pink to salmon-brown, as between BCCD images.
- WBC (label 1): neutrophils (granular lilac cytoplasm, 2-5 dark purple lobes joined by strands),
  lymphocytes (small, round dark nucleus), eosinophils (bilobed nucleus, orange granules), monocytes
  (large, kidney-shaped nucleus); ~120-250 px across.
- Platelets (label 2): small irregular purple granular blobs, ~14-28 px, in a faint lilac halo.

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
class _Style:
    """Per-scene look (stain and illumination), drawn once from the seed. OD vectors are BGR."""

    background: np.ndarray  # float32 [3] BGR, 0..255, at the brightest point
    rbc_od: np.ndarray  # float32 [3] OD of a red cell's body before the soft saturation
    pallor: float  # 0: flat cells, 1: centre as clear as the plasma
    spot_rate: float  # fraction of red cells with a refractile spot
    nucleus_od: np.ndarray
    cytoplasm_od: np.ndarray
    platelet_od: np.ndarray
    vignette_centre: Tuple[float, float]  # fraction of (width, height)


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


# -- small helpers -------------------------------------------------------------------------------


def _smooth_noise(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """Zero-mean, unit-std smooth noise [h, w] float32 with features about ``scale`` pixels wide."""
    gh, gw = max(2, int(math.ceil(h / scale)) + 2), max(2, int(math.ceil(w / scale)) + 2)
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    out = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    out -= out.mean()
    std = float(out.std())
    return out / std if std > 1e-6 else out


def _polar(size: int, rng: np.random.Generator, radius: float, aspect: float, wobble: float
           ) -> Tuple[np.ndarray, np.ndarray]:
    """Normalized radius rho [size, size] (1.0 on the cell outline) and the polar angle of each pixel.

    The outline is an ellipse (semi-axes ``radius`` and ``radius * aspect``, random rotation) whose radius
    is modulated by low-order harmonics of relative amplitude ``wobble``.
    """
    c = (size - 1) / 2.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    xx -= c
    yy -= c
    t = rng.uniform(0, math.pi)
    u = xx * math.cos(t) + yy * math.sin(t)
    v = -xx * math.sin(t) + yy * math.cos(t)
    u /= radius
    v /= radius * aspect
    phi = np.arctan2(v, u)
    f = np.ones_like(phi)
    for k in range(2, 6):
        f += (wobble * rng.standard_normal() / math.sqrt(k - 1)) * np.cos(k * phi + rng.uniform(0, 2 * math.pi))
    rho = np.sqrt(u * u + v * v) / f
    return rho, phi


def _tight_box(mask: np.ndarray) -> Tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return 0.0, 0.0, 0.0, 0.0
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def _sample_style(rng: np.random.Generator) -> _Style:
    # Background: BCCD's bright plasma is a pale grey-green, BGR ~ (190-200, 200-205, 195-205).
    background = np.array([203.0, 210.0, 206.0], np.float32) + rng.normal(0, 2.5, 3).astype(np.float32)
    # Red cells range from lilac-pink to brownish-orange between images; mix the two ends.
    lilac = np.array([0.28, 0.45, 0.1], np.float32)
    brown = np.array([0.47, 0.58, 0.11], np.float32)
    t = float(rng.uniform(0.0, 1.0))
    rbc_od = (1 - t) * lilac + t * brown
    rbc_od *= float(rng.uniform(0.9, 1.1))
    return _Style(
        background=background,
        rbc_od=rbc_od,
        pallor=float(rng.uniform(0.3, 0.95)),
        spot_rate=float(rng.choice([0.03, 0.1, 0.25])),
        # Nuclei look blue-purple: the camera's colour boost raises blue above the plasma (negative OD).
        nucleus_od=np.array([-0.06, 0.72, 0.48], np.float32) * float(rng.uniform(0.9, 1.1)),
        cytoplasm_od=np.array([0.04, 0.21, 0.08], np.float32),
        platelet_od=np.array([-0.07, 0.52, 0.38], np.float32) * float(rng.uniform(0.9, 1.15)),
        vignette_centre=(float(rng.uniform(0.4, 0.6)), float(rng.uniform(0.5, 0.75))),
    )


# -- cell sprites --------------------------------------------------------------------------------


def _rbc_sprite(rng: np.random.Generator, style: _Style, diameter: float) -> Tuple[np.ndarray, np.ndarray]:
    """A red cell: OD [s, s, 3] float32 and its tight box xyxy in sprite pixels."""
    radius = diameter / 2.0
    size = int(math.ceil(diameter * 1.12)) + 6
    aspect = float(rng.uniform(0.84, 1.0))
    rho, _ = _polar(size, rng, radius, aspect, wobble=float(rng.choice([0.015, 0.03, 0.06])))
    # thickness: a flat disc with rounded edges whose centre is thinner (central pallor): the centre
    # keeps ``floor`` of the body's density, rising smoothly to the full value at 0.7 of the radius
    dome = np.clip(1.0 - rho * rho, 0.0, 1.0) ** 0.25
    floor = float(np.clip(1.0 - style.pallor + rng.normal(0, 0.12), 0.08, 1.0))
    t = np.clip((rho - 0.15) / 0.55, 0.0, 1.0)
    thick = dome * (floor + (1.0 - floor) * t * t * (3.0 - 2.0 * t))
    rim = 0.45 * np.exp(-(((rho - 0.955) / 0.035) ** 2))
    edge = np.clip((1.0 - rho) * radius / 1.5 + 0.5, 0.0, 1.0)  # ~1.5 px anti-aliased outline
    texture = 1.0 + 0.05 * _smooth_noise(rng, size, size, 6.0)
    dens = (thick * texture + rim) * edge
    od = dens[:, :, None] * (style.rbc_od * float(rng.uniform(0.85, 1.12)))[None, None, :]
    # a faint bright halo just outside the outline (refraction at the cell edge), grey
    od -= (0.045 * np.exp(-(((rho - 1.06) / 0.04) ** 2)))[:, :, None]
    if rng.random() < style.spot_rate:
        _add_refractile_spot(rng, od, radius)
    box = np.array(_tight_box(rho <= 1.0), np.float32)
    return od.astype(np.float32), box


def _add_refractile_spot(rng: np.random.Generator, od: np.ndarray, radius: float) -> None:
    """A small bright crescent with a dark outline inside a red cell (drying artefact)."""
    size = od.shape[0]
    ang = rng.uniform(0, 2 * math.pi)
    dist = rng.uniform(0.0, 0.45) * radius
    cx = (size - 1) / 2.0 + dist * math.cos(ang)
    cy = (size - 1) / 2.0 + dist * math.sin(ang)
    ax = float(rng.uniform(0.08, 0.16) * radius)
    ay = ax * float(rng.uniform(0.4, 1.0))
    mask = np.zeros((size, size), np.uint8)
    cv2.ellipse(mask, (int(round(cx * 4)), int(round(cy * 4))), (int(ax * 4), int(ay * 4)),
                float(rng.uniform(0, 180)), 0, 360, 255, -1, cv2.LINE_AA, 2)
    m = mask.astype(np.float32) / 255.0
    outline = cv2.GaussianBlur(m, (0, 0), 1.2) - m * 0.6
    spot = np.array([-0.2, -0.16, -0.08], np.float32)
    od += m[:, :, None] * spot[None, None, :] + np.clip(outline, 0, None)[:, :, None] * 0.5


def _wbc_sprite(rng: np.random.Generator, style: _Style, kind: str, scale: float
                ) -> Tuple[np.ndarray, np.ndarray]:
    """A white cell of ``kind`` (neutrophil, lymphocyte, eosinophil, monocyte): OD and tight box."""
    if kind == "lymphocyte":
        diameter = rng.uniform(110, 150) * scale
    elif kind == "monocyte":
        diameter = rng.uniform(190, 250) * scale
    else:
        diameter = rng.uniform(160, 240) * scale
    radius = diameter / 2.0
    size = int(math.ceil(diameter * 1.12)) + 8
    rho, _ = _polar(size, rng, radius, float(rng.uniform(0.86, 1.0)), wobble=float(rng.uniform(0.01, 0.03)))
    cell = np.clip((1.0 - rho) * radius / 2.0 + 0.5, 0.0, 1.0)
    granules = 0.6 * _smooth_noise(rng, size, size, 5.0 * max(scale, 0.5))
    granules += 0.2 * _smooth_noise(rng, size, size, 1.8 * max(scale, 0.5))
    cyto_od = style.cytoplasm_od.copy()
    if kind == "eosinophil":
        cyto_od = np.array([0.14, 0.30, 0.06], np.float32)
        grain = 0.45
    elif kind == "lymphocyte":
        cyto_od = np.array([0.02, 0.12, 0.10], np.float32)
        grain = 0.2
    else:
        grain = 0.35
    cyto = cell * (1.0 + grain * granules)
    cyto = np.clip(cyto, 0.0, None)
    od = cyto[:, :, None] * cyto_od[None, None, :]

    nucleus = _nucleus_mask(rng, kind, size, radius) * np.clip((0.97 - rho) * radius / 2.0, 0.0, 1.0)  # inside the cell only
    chromatin = 0.9 + 0.14 * _smooth_noise(rng, size, size, 7.0 * max(scale, 0.5))
    chromatin += 0.04 * _smooth_noise(rng, size, size, 1.6)
    nuc_od = style.nucleus_od * (1.15 if kind == "lymphocyte" else 1.0)
    od = od * (1.0 - 0.7 * nucleus)[:, :, None] + (nucleus * chromatin)[:, :, None] * nuc_od[None, None, :]
    box = np.array(_tight_box(rho <= 1.0), np.float32)
    return od.astype(np.float32), box


def _nucleus_mask(rng: np.random.Generator, kind: str, size: int, radius: float) -> np.ndarray:
    """Soft nucleus mask [size, size] in 0..1 (1 inside), drawn at 4x sub-pixel precision."""
    c = (size - 1) / 2.0
    canvas = np.zeros((size, size), np.uint8)

    def ellipse(x: float, y: float, a: float, b: float, angle: float) -> None:
        cv2.ellipse(canvas, (int(round(x * 4)), int(round(y * 4))), (max(1, int(a * 4)), max(1, int(b * 4))),
                    angle, 0, 360, 255, -1, cv2.LINE_AA, 2)

    if kind == "lymphocyte":
        r = radius * rng.uniform(0.72, 0.84)
        off = radius - r
        ang = rng.uniform(0, 2 * math.pi)
        ellipse(c + 0.4 * off * math.cos(ang), c + 0.4 * off * math.sin(ang), r, r * rng.uniform(0.88, 1.0),
                rng.uniform(0, 180))
    elif kind == "monocyte":
        # kidney: a big ellipse with a bite taken out of one side
        a, b = radius * 0.58, radius * 0.42
        ang = rng.uniform(0, 360)
        ellipse(c, c, a, b, ang)
        bite = np.zeros_like(canvas)
        t = math.radians(ang + 90)
        bx, by = c + b * 0.95 * math.cos(t), c + b * 0.95 * math.sin(t)
        cv2.circle(bite, (int(round(bx * 4)), int(round(by * 4))), int(b * 0.55 * 4), 255, -1, cv2.LINE_AA, 2)
        canvas = cv2.subtract(canvas, bite)
    else:
        # lobes: plump ellipses strung along an arc, neighbours just touching (each lobe is blurred on
        # its own, so a paler seam stays where two meet), joined by thin chromatin strands
        lobes = 2 if kind == "eosinophil" else int(rng.choice([2, 3, 3, 4, 4, 5]))
        a_mean = radius * rng.uniform(0.3, 0.38)
        arc_r = radius * rng.uniform(0.36, 0.5)
        step = 1.85 * a_mean / arc_r
        span = min(step * (lobes - 1), 1.1 * math.pi)
        start = rng.uniform(0, 2 * math.pi)
        pts = []
        for k in range(lobes):
            t = start + span * (k / max(1, lobes - 1))
            pts.append((arc_r * math.cos(t) + rng.normal(0, radius * 0.03),
                        arc_r * math.sin(t) + rng.normal(0, radius * 0.03), t))
        mx = float(np.mean([p[0] for p in pts]))
        my = float(np.mean([p[1] for p in pts]))
        soft = np.zeros((size, size), np.float32)
        sigma = max(1.0, radius * 0.035)
        for x, y, t in pts:
            canvas[:] = 0
            a = a_mean * rng.uniform(0.85, 1.15) * (1.15 if lobes == 2 else 1.0)
            ellipse(c + x - mx, c + y - my, a, a * rng.uniform(0.7, 0.92), math.degrees(t) + 90 + rng.normal(0, 25))
            np.maximum(soft, cv2.GaussianBlur(canvas.astype(np.float32) / 255.0, (0, 0), sigma), out=soft)
        canvas[:] = 0
        width = max(1, int(radius * 0.06 * 4))
        for (x0, y0, _), (x1, y1, _) in zip(pts[:-1], pts[1:]):
            cv2.line(canvas, (int((c + x0 - mx) * 4), int((c + y0 - my) * 4)),
                     (int((c + x1 - mx) * 4), int((c + y1 - my) * 4)), 255, width, cv2.LINE_AA, 2)
        np.maximum(soft, 0.8 * cv2.GaussianBlur(canvas.astype(np.float32) / 255.0, (0, 0), sigma), out=soft)
        soft += 0.1 * _smooth_noise(rng, size, size, max(3.0, radius * 0.08))
        return np.clip((soft - 0.5) * 3.0 + 0.5, 0.0, 1.0)
    m = canvas.astype(np.float32) / 255.0
    # ragged outline: perturb the soft mask with mid-scale noise, then re-threshold softly
    m = cv2.GaussianBlur(m, (0, 0), max(1.0, radius * 0.03))
    m = m + 0.12 * _smooth_noise(rng, size, size, max(3.0, radius * 0.08))
    return np.clip((m - 0.5) * 3.5 + 0.5, 0.0, 1.0)


def _platelet_sprite(rng: np.random.Generator, style: _Style, scale: float) -> Tuple[np.ndarray, np.ndarray]:
    """A platelet: OD and its BCCD-style loose box (~30-60 px around a ~14-28 px blob) in sprite pixels.

    A granular purple body (one to three overlapping ellipses) inside a faint lilac halo, as in BCCD.
    """
    blob = rng.uniform(16, 28) * scale
    box_w = float(np.clip(blob + rng.uniform(12, 28) * scale, 28 * scale, 60 * scale))
    box_h = float(np.clip(box_w * rng.uniform(0.8, 1.2), 28 * scale, 60 * scale))
    size = int(math.ceil(max(box_w, box_h))) + 4
    c = (size - 1) / 2.0
    canvas = np.zeros((size, size), np.uint8)
    for k in range(int(rng.choice([1, 1, 2, 3]))):
        dx, dy = rng.normal(0, blob * 0.15, 2) if k else (0.0, 0.0)
        a = blob * (rng.uniform(0.4, 0.5) if k == 0 else rng.uniform(0.25, 0.4))
        b = a * rng.uniform(0.55, 0.95)
        cv2.ellipse(canvas, (int(round((c + dx) * 4)), int(round((c + dy) * 4))), (max(1, int(a * 4)), max(1, int(b * 4))),
                    float(rng.uniform(0, 180)), 0, 360, 255, -1, cv2.LINE_AA, 2)
    body = canvas.astype(np.float32) / 255.0
    m = cv2.GaussianBlur(body, (0, 0), max(0.8, 1.2 * scale))
    halo = cv2.GaussianBlur(body, (0, 0), max(1.5, 3.5 * scale))
    grain = 0.7 + 0.4 * _smooth_noise(rng, size, size, 2.2 * max(scale, 0.5))
    dens = 0.85 * m * grain + 0.3 * halo
    od = dens[:, :, None] * style.platelet_od[None, None, :]
    box = np.array([c + 0.5 - box_w / 2, c + 0.5 - box_h / 2, c + 0.5 + box_w / 2, c + 0.5 + box_h / 2], np.float32)
    return od.astype(np.float32), box


def _debris_sprite(rng: np.random.Generator, scale: float) -> np.ndarray:
    """An out-of-focus speck: a small dark ring with a bright centre (OD [s, s, 3])."""
    r = rng.uniform(2.5, 5.0) * max(scale, 0.5)
    size = int(math.ceil(r * 2 + 6))
    c = (size - 1) / 2.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    d = np.sqrt((xx - c) ** 2 + (yy - c) ** 2) / r
    ring = 0.22 * np.exp(-(((d - 1.0) / 0.3) ** 2)) - 0.06 * np.exp(-((d / 0.5) ** 2))
    return np.repeat(ring[:, :, None], 3, axis=2).astype(np.float32)


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
        self._style = _sample_style(s_style)
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
                    od, box = _wbc_sprite(rng, style, kind, s)
                    radius = float(max(box[2] - box[0], box[3] - box[1]) / 2.0)
                    add(WBC, od, box, cx, cy, radius)
                    wbc_centres.append((cx, cy, radius))

        # Red cells: rejection sampling under a smooth density field (clumps and clear plasma), with a
        # minimum centre distance that still lets neighbours overlap and keeps them off the white cells.
        density = _smooth_noise(rng, max(2, wh // 8), max(2, ww // 8), 260 * s / 8)
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
            od, box = _rbc_sprite(rng, style, diameter)
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
            od, box = _platelet_sprite(rng, style, s)
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
            sp = _debris_sprite(rng, s)
            paste(int(rng.uniform(0, ww)), int(rng.uniform(0, wh)), sp)
        for cell in self._cells:  # sprites are no longer needed once painted
            cell.od = np.zeros((0, 0, 3), np.float32)
        # plasma: faint large-scale unevenness of stain and thickness
        od += (0.012 * _smooth_noise(rng, wh, ww, 90 * max(s, 0.25)) + 0.006 * _smooth_noise(rng, wh, ww, 6 * max(s, 0.25)))[:, :, None]
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
            sp = _debris_sprite(rng, self.scale)
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
