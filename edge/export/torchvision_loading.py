"""``edge export --torchvision ARCH --weights FILE.pth``: a torchvision detector's weights -> the model -> an
``ExportSource`` for ``edge.export.torch_export.export_source``.

* ``load_state_dict``                the weights file (a state dict, or a checkpoint holding one), safely loaded
* ``infer_num_classes``              torchvision's class count from the classification head's shape
* ``build_torchvision_model``        the builder of ``TORCHVISION_ARCHS`` with the weights loaded
* ``source_from_torchvision_model``  the ``ExportSource`` of an in-memory ``SSD`` / ``RetinaNet``: class names,
                                     default input size, normalization, postprocess settings for the sidecar
* ``source_from_torchvision``        the two above from an architecture name and a weights file
* ``TorchvisionExportRequest``       the CLI's torchvision options, validated before any model is built

The wrapper that the graph is traced from, its decode and how its NMS relates to torchvision's, are in
``edge.export.torchvision_adapter``. Everything needing torch or torchvision is imported lazily.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from edge.errors import ModelError
from edge.export.torchvision_adapter import (
    FAMILY_RETINANET,
    TORCHVISION_ARCHS,
    ArchInfo,
    TorchvisionPostprocess,
    _family,
    _padded,
    _torch,
    _torchvision,
    wrap_torchvision,
)

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
Size = Tuple[int, int]



def _default_input_size(model: Any) -> Size:
    """SSD: its fixed size (H, W); RetinaNet: torchvision's shorter-side size (``min_size``, 800 by default),
    square, rounded up to ``size_divisible``. For 4:3 frames, ask for 800x1088 (``--imgsz``) to see objects
    at the scale torchvision's resize gives them (shorter side 800)."""
    fixed = getattr(model.transform, "fixed_size", None)
    if fixed is not None:
        return (int(fixed[1]), int(fixed[0]))
    side = int(model.transform.min_size[-1])
    return _padded((side, side), int(getattr(model.transform, "size_divisible", 32)))


def load_state_dict(path: PathLike) -> Dict[str, Any]:
    """A torchvision detector's weights from ``path``: a state dict, or a checkpoint dict holding one under
    ``model`` / ``state_dict`` / ``model_state_dict`` (torchvision's reference scripts save ``model``).
    ``module.`` prefixes (DistributedDataParallel) are removed. Loaded with ``weights_only=True``."""
    import argparse

    torch = _torch()
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"--weights {p} does not exist; pass the .pth file torch.save() wrote")
    try:
        safe = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5: allow the references' args
        if safe is not None:
            with safe([argparse.Namespace]):
                obj = torch.load(str(p), map_location="cpu", weights_only=True)
        else:
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError and friends: the file holds more than tensors and plain data
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{p} cannot be loaded as weights ({first}); expected a state dict saved with "
                         "torch.save(model.state_dict(), path) (a pickled whole model is not loaded, for "
                         "safety): re-save it with torch.save(model.state_dict(), 'weights.pth')") from None
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict", "model_state_dict"):
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj or not all(hasattr(v, "shape") for v in obj.values()):
        raise ModelError(f"{p} holds {type(obj).__name__}, not a state dict of tensors; save "
                         "model.state_dict() (or a dict with it under 'model')")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def infer_num_classes(arch: str, state_dict: Mapping[str, Any]) -> int:
    """torchvision's ``num_classes`` (background included) from the classification head's shape."""
    info = _arch_info(arch)
    weight = state_dict.get(info.cls_key)
    if weight is None:
        raise ModelError(f"the weights have no {info.cls_key!r}: they are not a {arch} state dict "
                         f"(first keys: {list(state_dict)[:3]}); check --torchvision")
    out = int(weight.shape[0])
    if out % info.anchors0:
        raise ModelError(f"{info.cls_key} has {out} output channels, not a multiple of {info.anchors0} anchors "
                         f"per location: not a default {arch} head; pass --num-classes")
    return out // info.anchors0


def _arch_info(arch: str) -> ArchInfo:
    if arch not in TORCHVISION_ARCHS:
        raise ModelError(f"torchvision architecture {arch!r} is not supported; expected one of "
                         f"{sorted(TORCHVISION_ARCHS)}")
    return TORCHVISION_ARCHS[arch]


def _build_ssdlite(num_classes: int, reduced_tail: bool, **kwargs: Any) -> Any:
    """``ssdlite320_mobilenet_v3_large`` as torchvision builds it, with ``reduced_tail`` chosen: torchvision
    reduces the tail only when no pretrained backbone is used, so weights trained from an ImageNet backbone
    need ``reduced_tail=False`` (which the builder cannot be told without downloading that backbone)."""
    from torchvision.models.detection import ssdlite

    if reduced_tail:
        return ssdlite.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes,
                                                     **kwargs)
    from torchvision.models import mobilenet_v3_large

    torch = _torch()
    norm_layer = functools.partial(torch.nn.BatchNorm2d, eps=0.001, momentum=0.03)
    backbone = ssdlite._mobilenet_extractor(
        mobilenet_v3_large(weights=None, norm_layer=norm_layer, reduced_tail=False), 6, norm_layer)
    size = (320, 320)
    anchor_generator = ssdlite.DefaultBoxGenerator([[2, 3] for _ in range(6)], min_ratio=0.2, max_ratio=0.95)
    out_channels = ssdlite.det_utils.retrieve_out_channels(backbone, size)
    defaults = {"score_thresh": 0.001, "nms_thresh": 0.55, "detections_per_img": 300, "topk_candidates": 300,
                "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    defaults.update(kwargs)
    head = ssdlite.SSDLiteHead(out_channels, anchor_generator.num_anchors_per_location(), num_classes, norm_layer)
    return ssdlite.SSD(backbone, anchor_generator, size, num_classes, head=head, **defaults)


def _candidate_models(arch: str, num_classes: int, kwargs: Dict[str, Any]) -> List[Any]:
    from torchvision.models import detection

    if arch == "ssdlite320_mobilenet_v3_large":
        return [lambda: _build_ssdlite(num_classes, True, **kwargs),  # trained from scratch (torchvision's default)
                lambda: _build_ssdlite(num_classes, False, **kwargs)]  # trained from an ImageNet backbone
    builder = getattr(detection, arch)
    return [lambda: builder(weights=None, weights_backbone=None, num_classes=num_classes, **kwargs)]


def _load_into(model: Any, state_dict: Mapping[str, Any]) -> Optional[str]:
    """Load strictly, except BatchNorm ``num_batches_tracked`` counters (absent from FrozenBatchNorm2d
    weights, which torchvision uses for pretrained backbones). Returns None or the reason it failed."""
    try:
        result = model.load_state_dict(dict(state_dict), strict=False)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if "size mismatch" in ln]
        return lines[0] if lines else str(exc).splitlines()[0]
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        return (f"missing keys {missing[:3]}{'...' if len(missing) > 3 else ''}, unexpected keys "
                f"{list(result.unexpected_keys)[:3]}")
    return None


def build_torchvision_model(arch: str, state_dict: Mapping[str, Any], num_classes: Optional[int] = None,
                            **builder_kwargs: Any) -> Any:
    """The torchvision detector ``arch`` with ``state_dict`` loaded, in eval mode.

    ``num_classes`` (background included, as torchvision counts) defaults to the head's shape in the
    weights; ``builder_kwargs`` go to torchvision's builder (e.g. ``score_thresh``, ``topk_candidates``).
    """
    _torchvision()
    _arch_info(arch)
    n = int(num_classes) if num_classes is not None else infer_num_classes(arch, state_dict)
    reasons = []
    for make in _candidate_models(arch, n, dict(builder_kwargs)):
        model = make()
        reason = _load_into(model, state_dict)
        if reason is None:
            return model.eval()
        reasons.append(reason)
    raise ModelError(f"the weights do not fit torchvision's {arch} with num_classes={n}: {reasons[-1]}; check "
                     "--torchvision (the architecture) and --num-classes (background included)")


def _class_layout(family: str, num_tv_classes: int, class_names: Optional[Sequence[str]]) -> Tuple[List[str], bool]:
    """(foreground class names, drop_background) for a model with ``num_tv_classes`` score columns."""
    if class_names is None:
        names = [f"class{i}" for i in range(1, num_tv_classes)]
        log.warning("no class names given: naming torchvision labels 1..%d %s..%s (pass --classes)",
                    num_tv_classes - 1, names[0] if names else "", names[-1] if names else "")
        return names, True
    names = [str(n) for n in class_names]
    if len(names) == num_tv_classes - 1:
        return names, True
    if family == FAMILY_RETINANET and len(names) == num_tv_classes:
        return names, False
    keep = (f" (or {num_tv_classes} to keep RetinaNet's column 0 as a class)" if family == FAMILY_RETINANET
            else "")
    raise ModelError(f"{len(names)} class names for a torchvision model with num_classes={num_tv_classes} "
                     f"(background included); expected {num_tv_classes - 1} foreground names, label 1 "
                     f"first{keep}")


def source_from_torchvision_model(model: Any, class_names: Optional[Sequence[str]] = None, *,
                                  arch: Optional[str] = None, input_size: Optional[Sequence[int]] = None,
                                  weights: Optional[PathLike] = None, weights_sha256: Optional[str] = None,
                                  pad_value: int = 114) -> Any:
    """An ``ExportSource`` for an in-memory torchvision ``SSD`` / ``RetinaNet`` (its own weights loaded).

    class_names: foreground names, torchvision label 1 first (one fewer than the model's num_classes); for
        RetinaNet as many names as classes keeps column 0 as a class.
    input_size: default (H, W) (SSD: its fixed size; RetinaNet: ``min_size`` square, 800x800 by default);
        ``edge export --imgsz`` may ask for others (one wrapper per size, same weights, its own anchors).
    """
    _torchvision()
    from edge.export.export_types import ExportSource, parse_size
    from edge.export.preprocess import NormalizationSpec

    model.eval()
    family = _family(model)
    num_tv = int(getattr(model.head.classification_head, "num_classes", 0)
                 or getattr(model.head.classification_head, "num_columns", 0))
    names, drop = _class_layout(family, num_tv, class_names)
    name = arch or type(model).__name__.lower()
    size = parse_size(list(input_size)) if input_size is not None else _default_input_size(model)
    settings = TorchvisionPostprocess.from_model(model)
    mean = [float(v) for v in model.transform.image_mean]
    std = [float(v) for v in model.transform.image_std]
    import torchvision

    config: Dict[str, Any] = {
        "framework": "torchvision",
        "torchvision_arch": name,
        "torchvision_version": torchvision.__version__.split("+")[0],
        "family": family,
        "num_classes": num_tv,
        "background_dropped": drop,
        "label_offset": 1 if drop else 0,
        "input_size": [int(size[0]), int(size[1])],
        "size_divisible": int(getattr(model.transform, "size_divisible", 1)),
        "torchvision_resize": ({"fixed_size": [int(v) for v in model.transform.fixed_size]}
                               if getattr(model.transform, "fixed_size", None) is not None else
                               {"min_size": [int(v) for v in model.transform.min_size],
                                "max_size": int(model.transform.max_size)}),
        "torchvision_postprocess": settings.to_dict(),
        "edge_surgery": settings.surgery_settings(),
    }

    def model_for_size(target: Size) -> Any:
        return wrap_torchvision(model, target, drop_background=drop)

    return ExportSource(
        arch=name,
        class_names=names,
        input_size=size,
        normalization=NormalizationSpec(scale=255.0, mean=(mean[0], mean[1], mean[2]),
                                        std=(std[0], std[1], std[2])).validate(),
        model_for_size=model_for_size,
        config=config,
        card={},
        checkpoint=Path(weights) if weights is not None else None,
        checkpoint_sha256=weights_sha256,
        pad_value=int(pad_value),
    )


def source_from_torchvision(arch: str, weights: PathLike, class_names: Optional[Sequence[str]] = None, *,
                            num_classes: Optional[int] = None, input_size: Optional[Sequence[int]] = None,
                            builder_kwargs: Optional[Dict[str, Any]] = None) -> Any:
    """``edge export --torchvision ARCH --weights FILE.pth``: build ``arch``, load the user's weights, and
    return its ``ExportSource`` (see ``source_from_torchvision_model``)."""
    from edge.artifacts import sha256_file

    _torchvision()
    state = load_state_dict(weights)
    model = build_torchvision_model(arch, state, num_classes, **dict(builder_kwargs or {}))
    return source_from_torchvision_model(model, class_names, arch=arch, input_size=input_size, weights=weights,
                                         weights_sha256=sha256_file(weights))


@dataclass
class TorchvisionExportRequest:
    """The CLI's torchvision options, validated before any model is built."""

    arch: str
    weights: Path
    class_names: Optional[List[str]] = None
    num_classes: Optional[int] = None
    builder_kwargs: Dict[str, Any] = field(default_factory=dict)

    def validate(self) -> TorchvisionExportRequest:
        _arch_info(self.arch)
        self.weights = Path(self.weights)
        if not self.weights.is_file():
            raise ModelError(f"--weights {self.weights} does not exist; pass the .pth file of your trained "
                             f"{self.arch}")
        if self.num_classes is not None and int(self.num_classes) < 2:
            raise ModelError(f"--num-classes {self.num_classes}: torchvision counts the background, so at least 2")
        if self.class_names is not None:
            self.class_names = [n.strip() for n in self.class_names if n.strip()]
            if not self.class_names:
                raise ModelError("--classes is empty; pass comma-separated names, torchvision label 1 first")
        return self

    def source(self) -> Any:
        self.validate()
        return source_from_torchvision(self.arch, self.weights, self.class_names, num_classes=self.num_classes,
                                       builder_kwargs=self.builder_kwargs)
