"""torchvision's single-shot detectors (SSD, SSDlite, RetinaNet) through ``edge export``, decode included.

Users who trained ``torchvision.models.detection.ssd300_vgg16``, ``ssdlite320_mobilenet_v3_large``,
``retinanet_resnet50_fpn`` or ``retinanet_resnet50_fpn_v2`` (any ``SSD`` / ``RetinaNet`` instance, in fact)
get the same pre-NMS graph as this project's own detectors::

    images  float32 [B, 3, H, W] RGB, normalized with the model's own ``transform.image_mean/image_std``
            on pixels / 255 (folded into the uint8 BGR input by ``edge export``, sidecar ``normalization``)
    boxes   float32 [B, N, 4] x1, y1, x2, y2 in input pixels, clipped to [0, W] x [0, H]
    scores  float32 [B, N, C] per foreground class (torchvision label ``c + 1`` -> our class ``c``)

``TorchvisionDetector`` (``wrap_torchvision``) runs the model's backbone and head and decodes exactly as
``postprocess_detections`` does before its thresholding: the same anchors (the model's own anchor
generator, run once for the graph's input size), ``BoxCoder.decode_single`` with the model's weights
(SSD (10, 10, 5, 5), RetinaNet (1, 1, 1, 1)) and ``bbox_xform_clip``, ``clip_boxes_to_image``; SSD
scores are ``softmax`` over all classes with the background column 0 dropped, RetinaNet scores are
``sigmoid`` (column 0 dropped when the model has one more class than names, torchvision's background
convention). It does NOT use ``GeneralizedRCNNTransform``'s resize: ``edge.letterbox`` replaces it and
the graph input is the network size. torchvision pads a batch with zeros (after normalization) to a
multiple of ``transform.size_divisible`` (RetinaNet: 32) and lays the anchors out on the padded tensor;
the wrapper does the same inside the graph, so any H x W works.

Loading the weights and building the ``ExportSource`` (``source_from_torchvision``, the CLI's
``TorchvisionExportRequest``) is ``edge.export.torchvision_loading``.

NMS, and where torchvision and the edge pipeline differ
-------------------------------------------------------
torchvision's ``postprocess_detections`` (``torchvision_postprocess`` below is its numpy twin)::

    SSD:        per class: score > score_thresh, best topk_candidates of that class
    RetinaNet:  per pyramid level: (anchor, class) pairs with score > score_thresh, best topk_candidates
    both:       batched (per-class) NMS at nms_thresh, best detections_per_img by score

torchvision defaults: SSD300 score 0.01, NMS 0.45, 200 detections, top-k 400 per class; SSDlite320
0.001 / 0.55 / 300 / 300; RetinaNet 0.05 / 0.5 / 300 / 1000 per level. ``TorchvisionPostprocess`` reads
them from the model, goes into the sidecar (``config.torchvision_postprocess``) and gives the matching
``edge surgery`` settings (``surgery_settings()``: ``--score-threshold`` = score_thresh,
``--iou-threshold`` = nms_thresh, ``--max-detections`` = detections_per_img). The edge NMS (``edge.nms``,
``--nms onnx``) keeps every (box, class) with score > threshold, runs per-class NMS and keeps the best K:
identical to torchvision whenever the top-k candidate cut does not bind, i.e. no class (SSD) or pyramid
level (RetinaNet) has more than ``topk_candidates`` candidates above the threshold (``topk_binds`` says).
Where it binds, torchvision drops low-scoring candidates before NMS that the edge NMS keeps. SSD (cut per
class): the edge result is torchvision's plus extra boxes, each scoring below its class's cut, before the
best-K cap. RetinaNet (cut per level): a candidate cut in one level may, in the edge NMS, also suppress a
lower-scoring overlapping box of the same class from another level, so a few torchvision detections near
the threshold can be missing too. Raise the score threshold until the cut stops binding, or post-process
the pre-NMS graph with ``torchvision_postprocess`` to reproduce torchvision exactly.
``EfficientNMS_TRT`` (``--nms efficient``) further keeps score >= threshold and only the best 4096
candidates of an image. RetinaNet with the background column dropped is exact when that column never
passes the threshold (a trained torchvision RetinaNet never scores it: it is no positive's class).

Everything needing torch or torchvision is imported lazily; ``torchvision_postprocess`` and
``TorchvisionPostprocess`` are numpy only.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from edge.errors import MissingDependencyError, ModelError, import_optional

log = logging.getLogger(__name__)

Size = Tuple[int, int]

FAMILY_SSD = "ssd"
FAMILY_RETINANET = "retinanet"


@dataclass(frozen=True)
class ArchInfo:
    """A torchvision builder we know how to rebuild from a state dict alone.

    cls_key: state-dict key of the classification head's first-level output conv; its out channels are
    ``anchors0 * num_classes``.
    """

    family: str
    cls_key: str
    anchors0: int


TORCHVISION_ARCHS: Dict[str, ArchInfo] = {
    "ssd300_vgg16": ArchInfo(FAMILY_SSD, "head.classification_head.module_list.0.weight", 4),
    "ssdlite320_mobilenet_v3_large": ArchInfo(FAMILY_SSD, "head.classification_head.module_list.0.1.weight", 6),
    "retinanet_resnet50_fpn": ArchInfo(FAMILY_RETINANET, "head.classification_head.cls_logits.weight", 9),
    "retinanet_resnet50_fpn_v2": ArchInfo(FAMILY_RETINANET, "head.classification_head.cls_logits.weight", 9),
}

_INSTALL = "pip install torchvision (the build matching your torch; on Jetson, NVIDIA's or a source build)"


def _torch() -> Any:
    return import_optional("torch", "torch", "exporting a torchvision detector", "pip install 'edge-detect[export]'")


def _torchvision() -> Any:
    _torch()
    try:
        import torchvision
        import torchvision.models.detection  # noqa: F401 - the submodule must be importable too
    except ImportError as exc:
        raise MissingDependencyError("torchvision", "exporting a torchvision detector", _INSTALL) from exc
    return torchvision


# ------------------------------------------------------------------------------------------------ postprocess


@dataclass
class TorchvisionPostprocess:
    """torchvision's ``postprocess_detections`` settings of one model (see the module docstring).

    family: "ssd" (top-k per class) or "retinanet" (top-k per pyramid level).
    score_thresh: candidates need score > score_thresh. nms_thresh: per-class NMS IoU threshold.
    detections_per_img: detections kept after NMS. topk_candidates: the pre-NMS cut (per class / level).
    """

    family: str
    score_thresh: float
    nms_thresh: float
    detections_per_img: int
    topk_candidates: int

    def validate(self) -> TorchvisionPostprocess:
        if self.family not in (FAMILY_SSD, FAMILY_RETINANET):
            raise ModelError(f"postprocess family {self.family!r} is not 'ssd' or 'retinanet'")
        for name in ("score_thresh", "nms_thresh"):
            value = float(getattr(self, name))
            if not 0.0 <= value <= 1.0:
                raise ModelError(f"{name} is {value}; expected a value in [0, 1]")
        for name in ("detections_per_img", "topk_candidates"):
            if int(getattr(self, name)) < 1:
                raise ModelError(f"{name} is {getattr(self, name)}; expected a positive integer")
        return self

    @classmethod
    def from_model(cls, model: Any) -> TorchvisionPostprocess:
        """Read the settings of a torchvision ``SSD`` / ``RetinaNet`` instance."""
        return cls(family=_family(model), score_thresh=float(model.score_thresh), nms_thresh=float(model.nms_thresh),
                   detections_per_img=int(model.detections_per_img),
                   topk_candidates=int(model.topk_candidates)).validate()

    def to_dict(self) -> Dict[str, Any]:
        return {"family": self.family, "score_thresh": float(self.score_thresh), "nms_thresh": float(self.nms_thresh),
                "detections_per_img": int(self.detections_per_img), "topk_candidates": int(self.topk_candidates),
                "topk_scope": "per class" if self.family == FAMILY_SSD else "per pyramid level"}

    def surgery_settings(self) -> Dict[str, Any]:
        """``edge surgery`` options reproducing these settings (exact where ``topk_binds`` is False)."""
        return {"score_threshold": float(self.score_thresh), "iou_threshold": float(self.nms_thresh),
                "max_detections": int(self.detections_per_img), "class_agnostic": False}


def _candidate_groups(scores: np.ndarray, settings: TorchvisionPostprocess,
                      level_sizes: Optional[Sequence[int]]) -> List[Tuple[np.ndarray, np.ndarray]]:
    """(box indices, class indices) of the candidates above the threshold, one group per top-k scope."""
    thr = scores.dtype.type(settings.score_thresh)
    if settings.family == FAMILY_SSD:
        groups = []
        for c in range(scores.shape[1]):
            boxes = np.flatnonzero(scores[:, c] > thr)
            groups.append((boxes, np.full(boxes.shape, c, np.int64)))
        return groups
    sizes = [int(n) for n in (level_sizes if level_sizes is not None else [scores.shape[0]])]
    if sum(sizes) != scores.shape[0]:
        raise ModelError(f"level sizes {sizes} add up to {sum(sizes)} anchors but the scores have "
                         f"{scores.shape[0]} rows; pass the sidecar's per-level anchor counts")
    groups = []
    start = 0
    for n in sizes:
        flat = scores[start:start + n].reshape(-1)  # anchor-major, class-minor, as torchvision flattens
        idx = np.flatnonzero(flat > thr)
        c = scores.shape[1]
        groups.append((start + idx // c, idx % c))
        start += n
    return groups


def topk_binds(scores: Any, settings: TorchvisionPostprocess, level_sizes: Optional[Sequence[int]] = None) -> bool:
    """True when torchvision's top-k cut drops a candidate for these scores ([N, C] one image, or [B, N, C]):
    only then can the edge NMS (no top-k) differ from ``postprocess_detections``."""
    s = np.asarray(scores)
    batch = s if s.ndim == 3 else s[None]
    for image in batch:
        for boxes, _ in _candidate_groups(image, settings, level_sizes):
            if boxes.size > int(settings.topk_candidates):
                return True
    return False


def torchvision_postprocess(boxes: Any, scores: Any, settings: TorchvisionPostprocess,
                            level_sizes: Optional[Sequence[int]] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """numpy twin of torchvision's ``postprocess_detections`` on one image's pre-NMS graph outputs.

    Args:
        boxes: [N, 4] xyxy input pixels (the exported ``boxes`` output of one image, already clipped).
        scores: [N, C] foreground scores (the ``scores`` output; class c is torchvision label c + 1 when
            the background column was dropped).
        settings: the model's ``TorchvisionPostprocess``.
        level_sizes: RetinaNet: anchors per pyramid level (``TorchvisionDetector.level_sizes``, sidecar
            ``anchors[i].num_anchors``), in graph order. Not used for SSD.

    Returns:
        (boxes [K, 4], scores [K], classes [K] int64 0-based foreground), by descending score, K <=
        detections_per_img. Equal to torchvision's output up to the order of exactly tied scores.
    """
    from edge.nms import batched_nms

    settings.validate()
    b = np.asarray(boxes)
    s = np.asarray(scores)
    if b.ndim != 2 or b.shape[-1] != 4:
        raise ModelError(f"boxes have shape {list(b.shape)}; expected [N, 4] xyxy (one image)")
    if s.ndim != 2 or s.shape[0] != b.shape[0]:
        raise ModelError(f"scores have shape {list(s.shape)}; expected [{b.shape[0]}, C] (one image)")
    cand_box: List[np.ndarray] = []
    cand_cls: List[np.ndarray] = []
    for box_idx, cls_idx in _candidate_groups(s, settings, level_sizes):
        values = s[box_idx, cls_idx]
        order = np.argsort(-values, kind="stable")[: int(settings.topk_candidates)]
        cand_box.append(box_idx[order])
        cand_cls.append(cls_idx[order])
    box_idx = np.concatenate(cand_box) if cand_box else np.zeros(0, np.int64)
    cls_idx = np.concatenate(cand_cls) if cand_cls else np.zeros(0, np.int64)
    keep = batched_nms(b[box_idx], s[box_idx, cls_idx], cls_idx, float(settings.nms_thresh))
    keep = keep[: int(settings.detections_per_img)]
    return b[box_idx[keep]], s[box_idx[keep], cls_idx[keep]], cls_idx[keep].astype(np.int64)


# ------------------------------------------------------------------------------------------------ wrapper


def _family(model: Any) -> str:
    from torchvision.models.detection.retinanet import RetinaNet
    from torchvision.models.detection.ssd import SSD

    if isinstance(model, SSD):
        return FAMILY_SSD
    if isinstance(model, RetinaNet):
        return FAMILY_RETINANET
    raise ModelError(f"{type(model).__name__} is not a torchvision SSD or RetinaNet; supported builders: "
                     f"{sorted(TORCHVISION_ARCHS)} (or any torchvision.models.detection.SSD / RetinaNet)")


def _padded(size: Size, divisible: int) -> Size:
    d = max(1, int(divisible))
    return ((int(size[0]) + d - 1) // d * d, (int(size[1]) + d - 1) // d * d)


class _AnchorLayout:
    """The set-up and bookkeeping half of ``TorchvisionDetector`` (mixed into the ``torch.nn.Module`` that
    ``_wrapper_class`` builds): the head's class count, the model's anchors laid out once for the graph's
    input size, the decode constants precomputed from them, and the sidecar's anchor card. Uses the host's
    ``head``, ``family``, ``input_size``, ``padded_size``, ``box_coder_weights``, ``bbox_xform_clip``,
    ``_features`` and ``register_buffer``."""

    def _num_tv_classes(self, model: Any) -> int:
        cls_head = self.head.classification_head
        n = getattr(cls_head, "num_classes", None) or getattr(cls_head, "num_columns", None)
        if n is None:
            raise ModelError("cannot read the number of classes from the model's classification head")
        return int(n)

    def _lay_out_anchors(self, model: Any) -> Any:
        """Run ``model``'s anchor generator once on a zero image of the padded size (``model`` in eval mode
        meanwhile); set ``feature_sizes``, ``anchors_per_location`` and ``level_sizes`` (per level, graph
        order) and return the anchors [N, 4] as float32."""
        torch = _torch()
        from torchvision.models.detection.image_list import ImageList

        hp, wp = self.padded_size
        was_training = model.training
        model.eval()
        with torch.no_grad():
            dummy = torch.zeros(1, 3, hp, wp)
            features = self._features(dummy)
            anchors = model.anchor_generator(ImageList(dummy, [self.input_size]), features)[0]
        model.train(was_training)
        per_location = model.anchor_generator.num_anchors_per_location()
        self.feature_sizes = [(int(f.shape[-2]), int(f.shape[-1])) for f in features]
        self.anchors_per_location = [int(a) for a in per_location]
        self.level_sizes = [h * w * a for (h, w), a in zip(self.feature_sizes, self.anchors_per_location)]
        if sum(self.level_sizes) != anchors.shape[0]:
            raise ModelError(f"{self.family}: {anchors.shape[0]} anchors for {sum(self.level_sizes)} head outputs "
                             f"(levels {self.feature_sizes}); the anchor generator does not fit the head")
        return anchors.to(torch.float32)

    def _register_decode_buffers(self, anchors: Any) -> None:
        """``anchors`` and the widths, heights and centres that ``decode_boxes`` reads, as non-persistent
        buffers."""
        # torchvision's decode_single computes these from the anchors, in float32: precomputed identically
        widths = anchors[:, 2] - anchors[:, 0]
        heights = anchors[:, 3] - anchors[:, 1]
        self.register_buffer("anchors", anchors, persistent=False)
        self.register_buffer("widths", widths, persistent=False)
        self.register_buffer("heights", heights, persistent=False)
        self.register_buffer("ctr_x", anchors[:, 0] + 0.5 * widths, persistent=False)
        self.register_buffer("ctr_y", anchors[:, 1] + 0.5 * heights, persistent=False)

    def anchors_for_card(self) -> List[Dict[str, Any]]:
        """Per level: feature size, anchors per location and count (graph order), plus the box coding."""
        return [{"level": i, "feature_size": list(fs), "anchors_per_location": a, "num_anchors": n,
                 "format": "xyxy_pixels", "coding": "torchvision_box_coder",
                 "weights": list(self.box_coder_weights), "bbox_xform_clip": self.bbox_xform_clip,
                 "padded_input": list(self.padded_size)}
                for i, (fs, a, n) in enumerate(zip(self.feature_sizes, self.anchors_per_location,
                                                   self.level_sizes))]


@functools.lru_cache(maxsize=None)
def _wrapper_class() -> Any:
    torch = _torch()
    functional = torch.nn.functional

    class TorchvisionDetector(torch.nn.Module, _AnchorLayout):
        """A torchvision ``SSD`` / ``RetinaNet`` at one input size, with torchvision's pre-NMS decode.

        forward(images float32 [B, 3, H, W] normalized RGB) -> (boxes [B, N, 4] xyxy input pixels clipped
        to the image, scores [B, N, C] foreground). ``forward_raw`` gives the head's raw outputs
        (bbox_regression [B, N, 4], cls_logits [B, N, K] with K torchvision's classes), concatenated over
        levels in torchvision's order. The backbone and head are the model's own modules (shared).
        """

        def __init__(self, model: Any, input_size: Size, drop_background: bool):
            super().__init__()
            self.family = _family(model)
            self.backbone = model.backbone
            self.head = model.head
            self.input_size = (int(input_size[0]), int(input_size[1]))
            self.padded_size = _padded(self.input_size, int(getattr(model.transform, "size_divisible", 1)))
            self.drop_background = bool(drop_background)
            self.box_coder_weights = tuple(float(w) for w in model.box_coder.weights)
            self.bbox_xform_clip = float(model.box_coder.bbox_xform_clip)
            self.num_classes = int(self._num_tv_classes(model)) - (1 if self.drop_background else 0)
            self._register_decode_buffers(self._lay_out_anchors(model))
            self.eval()

        def _features(self, images: Any) -> List[Any]:
            features = self.backbone(images)
            if isinstance(features, torch.Tensor):
                return [features]
            return list(features.values())

        def _pad(self, images: Any) -> Any:
            hp, wp = self.padded_size
            h, w = self.input_size
            if (hp, wp) == (h, w):
                return images
            return functional.pad(images, (0, wp - w, 0, hp - h))  # zeros after normalization, as torchvision

        def forward_raw(self, images: Any) -> Tuple[Any, Any]:
            """images [B, 3, H, W] -> (bbox_regression [B, N, 4], cls_logits [B, N, K]) of the head."""
            out = self.head(self._features(self._pad(images)))
            return out["bbox_regression"], out["cls_logits"]

        def decode_boxes(self, rel_codes: Any) -> Any:
            """[B, N, 4] regression -> [B, N, 4] xyxy input pixels: ``BoxCoder.decode_single`` + clip, batched."""
            wx, wy, ww, wh = self.box_coder_weights
            dx = rel_codes[..., 0] / wx
            dy = rel_codes[..., 1] / wy
            dw = torch.clamp(rel_codes[..., 2] / ww, max=self.bbox_xform_clip)
            dh = torch.clamp(rel_codes[..., 3] / wh, max=self.bbox_xform_clip)
            pred_ctr_x = dx * self.widths + self.ctr_x
            pred_ctr_y = dy * self.heights + self.ctr_y
            half_w = 0.5 * (torch.exp(dw) * self.widths)
            half_h = 0.5 * (torch.exp(dh) * self.heights)
            h, w = self.input_size
            x1 = torch.clamp(pred_ctr_x - half_w, min=0.0, max=float(w))
            y1 = torch.clamp(pred_ctr_y - half_h, min=0.0, max=float(h))
            x2 = torch.clamp(pred_ctr_x + half_w, min=0.0, max=float(w))
            y2 = torch.clamp(pred_ctr_y + half_h, min=0.0, max=float(h))
            return torch.stack((x1, y1, x2, y2), dim=-1)

        def scores_from_logits(self, logits: Any) -> Any:
            """[B, N, K] logits -> [B, N, C]: SSD softmax / RetinaNet sigmoid, background column 0 dropped."""
            probs = functional.softmax(logits, dim=-1) if self.family == FAMILY_SSD else torch.sigmoid(logits)
            return probs[..., 1:] if self.drop_background else probs

        def forward(self, images: Any) -> Tuple[Any, Any]:
            regression, logits = self.forward_raw(images)
            return self.decode_boxes(regression), self.scores_from_logits(logits)

    return TorchvisionDetector


def wrap_torchvision(model: Any, input_size: Union[int, Sequence[int]], *, drop_background: bool = True) -> Any:
    """An eval-mode ``TorchvisionDetector`` around a torchvision ``SSD`` / ``RetinaNet`` for one input size.

    Args:
        model: ``torchvision.models.detection.SSD`` or ``RetinaNet`` (weights loaded; put in eval mode).
        input_size: the graph's (H, W) (or one int): the letterboxed frame size, not torchvision's resize.
        drop_background: drop torchvision's class column 0 (always for SSD: softmax background).
    """
    _torchvision()
    from edge.export.export_types import parse_size

    size = parse_size(list(input_size) if not isinstance(input_size, (int, str)) else input_size)
    family = _family(model)
    if family == FAMILY_SSD and not drop_background:
        raise ModelError("SSD's class column 0 is the softmax background; it cannot be kept as a class "
                         "(drop_background must be True)")
    if family == FAMILY_SSD:
        fixed = getattr(model.transform, "fixed_size", None)
        if fixed is not None and (int(fixed[1]), int(fixed[0])) != size:
            log.warning("torchvision resizes every image to %dx%d for this SSD; exporting at %dx%d gives "
                        "default boxes it was not trained with", int(fixed[1]), int(fixed[0]), size[0], size[1])
    model.eval()
    return _wrapper_class()(model, size, drop_background)
