"""Cell sprites of the blood-smear renderer (numpy + cv2 only): optical-density maps, one per cell.

Image formation follows transmitted light (Beer-Lambert): every cell adds its optical density (OD, per
BGR channel) to an OD map, and the slide is ``background * exp(-OD)`` (``edge.synth.smear`` pastes the
sprites and renders the slide). Nuclei get a slightly negative blue OD: BCCD's camera boosts colour, so
nuclei read bluer than the plasma. Cell sprites:

- RBC (label 0): discocytes, ~84-136 px across at 640x480: a flat disc with rounded edges and a pale
  centre of per-scene depth, a darker rim and a faint bright halo, slightly elliptic and irregular
  outlines, some refractile spots; they cluster and overlap, and many are cut by the frame border.
  Per scene, the stain ranges from lilac-pink to salmon-brown, as between BCCD images.
- WBC (label 1): neutrophils (granular lilac cytoplasm, 2-5 dark purple lobes joined by strands),
  lymphocytes (small, round dark nucleus), eosinophils (bilobed nucleus, orange granules), monocytes
  (large, kidney-shaped nucleus); ~120-250 px across.
- Platelets (label 2): small irregular purple granular blobs, ~14-28 px, in a faint lilac halo.

Also here: out-of-focus debris specks, the per-scene stain and illumination (``Style``, drawn once from
the seed) and the smooth noise the textures are made of. Sizes are in pixels at 640x480; callers pass the
frame's scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import cv2
import numpy as np


@dataclass
class Style:
    """Per-scene look (stain and illumination), drawn once from the seed. OD vectors are BGR."""

    background: np.ndarray  # float32 [3] BGR, 0..255, at the brightest point
    rbc_od: np.ndarray  # float32 [3] OD of a red cell's body before the soft saturation
    pallor: float  # 0: flat cells, 1: centre as clear as the plasma
    spot_rate: float  # fraction of red cells with a refractile spot
    nucleus_od: np.ndarray
    cytoplasm_od: np.ndarray
    platelet_od: np.ndarray
    vignette_centre: Tuple[float, float]  # fraction of (width, height)


# -- small helpers -------------------------------------------------------------------------------


def smooth_noise(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
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


def sample_style(rng: np.random.Generator) -> Style:
    # Background: BCCD's bright plasma is a pale grey-green, BGR ~ (190-200, 200-205, 195-205).
    background = np.array([203.0, 210.0, 206.0], np.float32) + rng.normal(0, 2.5, 3).astype(np.float32)
    # Red cells range from lilac-pink to brownish-orange between images; mix the two ends.
    lilac = np.array([0.28, 0.45, 0.1], np.float32)
    brown = np.array([0.47, 0.58, 0.11], np.float32)
    t = float(rng.uniform(0.0, 1.0))
    rbc_od = (1 - t) * lilac + t * brown
    rbc_od *= float(rng.uniform(0.9, 1.1))
    return Style(
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


def rbc_sprite(rng: np.random.Generator, style: Style, diameter: float) -> Tuple[np.ndarray, np.ndarray]:
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
    texture = 1.0 + 0.05 * smooth_noise(rng, size, size, 6.0)
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


def wbc_sprite(rng: np.random.Generator, style: Style, kind: str, scale: float
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
    granules = 0.6 * smooth_noise(rng, size, size, 5.0 * max(scale, 0.5))
    granules += 0.2 * smooth_noise(rng, size, size, 1.8 * max(scale, 0.5))
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
    chromatin = 0.9 + 0.14 * smooth_noise(rng, size, size, 7.0 * max(scale, 0.5))
    chromatin += 0.04 * smooth_noise(rng, size, size, 1.6)
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
        soft += 0.1 * smooth_noise(rng, size, size, max(3.0, radius * 0.08))
        return np.clip((soft - 0.5) * 3.0 + 0.5, 0.0, 1.0)
    m = canvas.astype(np.float32) / 255.0
    # ragged outline: perturb the soft mask with mid-scale noise, then re-threshold softly
    m = cv2.GaussianBlur(m, (0, 0), max(1.0, radius * 0.03))
    m = m + 0.12 * smooth_noise(rng, size, size, max(3.0, radius * 0.08))
    return np.clip((m - 0.5) * 3.5 + 0.5, 0.0, 1.0)


def platelet_sprite(rng: np.random.Generator, style: Style, scale: float) -> Tuple[np.ndarray, np.ndarray]:
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
    grain = 0.7 + 0.4 * smooth_noise(rng, size, size, 2.2 * max(scale, 0.5))
    dens = 0.85 * m * grain + 0.3 * halo
    od = dens[:, :, None] * style.platelet_od[None, None, :]
    box = np.array([c + 0.5 - box_w / 2, c + 0.5 - box_h / 2, c + 0.5 + box_w / 2, c + 0.5 + box_h / 2], np.float32)
    return od.astype(np.float32), box


def debris_sprite(rng: np.random.Generator, scale: float) -> np.ndarray:
    """An out-of-focus speck: a small dark ring with a bright centre (OD [s, s, 3])."""
    r = rng.uniform(2.5, 5.0) * max(scale, 0.5)
    size = int(math.ceil(r * 2 + 6))
    c = (size - 1) / 2.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    d = np.sqrt((xx - c) ** 2 + (yy - c) ** 2) / r
    ring = 0.22 * np.exp(-(((d - 1.0) / 0.3) ** 2)) - 0.06 * np.exp(-((d / 0.5) ** 2))
    return np.repeat(ring[:, :, None], 3, axis=2).astype(np.float32)
