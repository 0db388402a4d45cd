"""A trained torch ``Detector`` as an ``edge.evaluate`` predictor: BGR frame in, NMS-ed detections out.

Preprocessing is the runtime's: ``edge.letterbox`` to the model's input size (pad 114), BGR -> RGB,
``(pixel / scale - mean) / std`` per the model's ``Normalization``, NCHW float32. Postprocessing:
``Detector.decode`` (boxes [B, N, 4] xyxy input pixels, scores [B, N, C]) -> per-image
``edge.models.ops.multiclass_nms`` -> boxes mapped back to source pixels with the letterbox inverse.
"""

from __future__ import annotations

import logging
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from edge.letterbox import letterbox
from edge.models.ops import multiclass_nms

log = logging.getLogger(__name__)

Prediction = Tuple[np.ndarray, np.ndarray, np.ndarray]


def normalize_batch(images: torch.Tensor, normalization) -> torch.Tensor:
    """uint8 (or float 0..255) RGB [B, 3, H, W] -> float32 [B, 3, H, W], ``(x / scale - mean) / std``."""
    x = images.float()
    mean = torch.tensor(normalization.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(normalization.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    scale = float(normalization.scale)
    if scale != 1.0:
        x = x / scale
    return (x - mean) / std


def to_chw_rgb(image_bgr: np.ndarray) -> np.ndarray:
    """BGR uint8 [H, W, 3] -> RGB uint8 [3, H, W], contiguous."""
    return np.ascontiguousarray(image_bgr[:, :, ::-1].transpose(2, 0, 1))


class TorchPredictor:
    """Run a torch Detector on BGR frames the way the deployed model will.

    Call: ``image_bgr`` uint8 [H, W, 3] -> (boxes float32 [K, 4] xyxy source pixels, scores float32 [K],
    classes int64 [K]), by descending score. ``predict_batch`` does the same for a list of frames in one
    forward pass (faster on CPU).

    Args:
        model: a ``edge.models.base.Detector`` (put in eval mode here).
        input_hw: network input (H, W); default the model's ``input_size``.
        score_threshold: candidates need a class score above this (0.01 for mAP, higher for display).
        iou_threshold: per-class NMS IoU threshold.
        max_detections: per image after NMS (COCO scores at most 100).
        pre_nms_topk: only the best this-many (box, class) candidates enter NMS (bounds NMS cost on an
            untrained model; EfficientNMS_TRT caps at 4096 the same way).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        input_hw: Optional[Tuple[int, int]] = None,
        device: Union[str, torch.device] = "cpu",
        score_threshold: float = 0.01,
        iou_threshold: float = 0.45,
        max_detections: int = 100,
        pre_nms_topk: int = 1000,
        class_agnostic: bool = False,
        pad_value: int = 114,
    ):
        self.model = model
        self.device = torch.device(device)
        self.input_hw = tuple(int(v) for v in (input_hw or model.input_size))
        self.score_threshold = float(score_threshold)
        self.iou_threshold = float(iou_threshold)
        self.max_detections = int(max_detections)
        self.pre_nms_topk = int(pre_nms_topk)
        self.class_agnostic = bool(class_agnostic)
        self.pad_value = int(pad_value)
        #: the model's class names (``predictor_from_checkpoint`` fills them from the checkpoint's card)
        self.class_names: List[str] = []

    def __call__(self, image_bgr: np.ndarray) -> Prediction:
        return self.predict_batch([image_bgr])[0]

    def predict_batch(self, images_bgr: Sequence[np.ndarray]) -> List[Prediction]:
        if not len(images_bgr):
            return []
        inputs = []
        params = []
        for image in images_bgr:
            boxed, p = letterbox(image, self.input_hw, pad_value=self.pad_value)
            inputs.append(to_chw_rgb(boxed))
            params.append(p)
        batch = torch.from_numpy(np.stack(inputs)).to(self.device)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                x = normalize_batch(batch, self.model.normalization)
                det = self.model.decode(self.model.forward_raw(x))
        finally:
            if was_training:
                self.model.train()
        out: List[Prediction] = []
        for i, p in enumerate(params):
            boxes, scores, classes = self._postprocess(det.boxes[i].float(), det.scores[i].float())
            src = np.asarray(p.to_source(boxes.cpu().numpy()), dtype=np.float32).reshape(-1, 4)
            out.append((src, scores.cpu().numpy().astype(np.float32), classes.cpu().numpy().astype(np.int64)))
        return out

    def _postprocess(
        self, boxes: torch.Tensor, scores: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """boxes [N, 4] xyxy input px, scores [N, C] -> NMS-ed (boxes [K, 4], scores [K], classes [K])."""
        threshold = self.score_threshold
        flat = scores.reshape(-1)
        if self.pre_nms_topk and flat.numel() > self.pre_nms_topk:
            kth = torch.topk(flat, self.pre_nms_topk, sorted=False).values.min()
            # strict ">" in NMS: step just below the k-th value so it stays a candidate
            threshold = max(threshold, float(torch.nextafter(kth, kth.new_tensor(-1.0))))
        return multiclass_nms(
            boxes,
            scores,
            threshold,
            self.iou_threshold,
            self.max_detections,
            class_agnostic=self.class_agnostic,
        )


def predictor_from_checkpoint(path, *, device: str = "cpu", **options) -> TorchPredictor:
    """Load a checkpoint written by ``edge train`` (its card rebuilds the model) as a ``TorchPredictor``."""
    from edge.train.checkpoint import load_checkpoint

    model, card = load_checkpoint(path, device=device)
    log.info("loaded %s: %s, input %s, classes %s", path, card.get("arch"), card.get("input_size"),
             card.get("class_names"))
    predictor = TorchPredictor(model, device=device, **options)
    predictor.class_names = [str(n) for n in (card.get("class_names") or [])]  # checked by `edge eval`
    return predictor
