"""BCCD images and targets for the anchor-detector tests (SSD, RetinaNet); skips where the dataset is absent."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import List, Tuple

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edge.data.targets import Target  # noqa: E402
from tests.paths import BCCD  # noqa: E402

BCCD_CLASSES = ["WBC", "RBC", "Platelets"]


def load_bccd(n: int, size: Tuple[int, int]) -> Tuple[np.ndarray, List[Target]]:
    """The first n annotated BCCD images resized to (H, W): RGB float32 [n, H, W, 3] and scaled targets."""
    if not (BCCD / "Annotations").is_dir():
        pytest.skip(f"BCCD dataset not found at {BCCD}")
    import cv2

    height, width = size
    images, targets = [], []
    for xml_path in sorted((BCCD / "Annotations").glob("*.xml"))[:n]:
        root = ET.parse(xml_path).getroot()
        img = cv2.imread(str(BCCD / "JPEGImages" / root.findtext("filename")))
        assert img is not None, xml_path
        h0, w0 = img.shape[:2]
        images.append(cv2.resize(img, (width, height))[:, :, ::-1].astype(np.float32))
        boxes, labels = [], []
        for obj in root.iter("object"):
            bb = obj.find("bndbox")
            x1, y1, x2, y2 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            if x2 <= x1 or y2 <= y1:
                continue
            boxes.append([x1 * width / w0, y1 * height / h0, x2 * width / w0, y2 * height / h0])
            labels.append(BCCD_CLASSES.index(obj.findtext("name").strip()))
        targets.append(Target(torch.tensor(boxes, dtype=torch.float32), torch.tensor(labels, dtype=torch.int64)))
    return np.stack(images), targets
