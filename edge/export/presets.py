"""Bring-your-own detector heads: find the boxes and scores in a foreign graph and bring them to one form.

Whatever the model, surgery appends NMS to one canonical pair (``CanonicalHead``):

* boxes  [B, N, 4] float, ``box_format`` xyxy or cxcywh, **input pixels** (normalized boxes are scaled by
  the input width and height here); deltas in that format when ``anchors`` is given (fused decoder);
* scores [B, N, C] float, one column per foreground class (a background column is removed here, so
  class ids are 0-based foreground ids, as in this project's own exports), softmax applied here,
  sigmoid left pending (``sigmoid=True``) so EfficientNMS_TRT can apply it to the survivors only.

Sources, chosen by ``HeadSpec``:

* named tensors (``--boxes NAME --scores NAME``): this project's exports (``boxes`` xyxy pixels,
  ``scores`` activated, no background) and any detector with the same two-tensor split;
* ``yolov5``: one tensor [B, N, 5 + C] = (cx, cy, w, h, objectness, class scores...), pixels, sigmoid
  already applied; scores = objectness * class score;
* ``yolov8`` (also YOLOv11): one tensor [B, 4 + C, N] = (cx, cy, w, h, class scores...) channel-first,
  pixels, sigmoid applied; transposed here.

Needs onnx-graphsurgeon (``export`` extra); import lazily.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edge.errors import EdgeError, ModelError

BOX_FORMATS = ("xyxy", "cxcywh")
SCORE_ACTIVATIONS = ("none", "sigmoid", "softmax")
PRESETS = ("yolov5", "yolov8")


@dataclass
class HeadSpec:
    """Where the boxes and scores are and how they are encoded (the bring-your-own flags)."""

    boxes: str = "boxes"
    scores: str = "scores"
    box_format: str = "xyxy"
    normalized: bool = False
    background_class: int = -1
    score_activation: str = "none"
    preset: Optional[str] = None
    preset_output: Optional[str] = None  # the preset's single tensor; default: the graph's first output
    anchors: Optional[str] = None  # fused-decoder form: boxes are deltas against these [1|B, N, 4]
    input_size: Optional[Tuple[int, int]] = None  # (H, W) for --normalized when the graph's input is dynamic

    def validate(self) -> HeadSpec:
        if self.box_format not in BOX_FORMATS:
            raise EdgeError(f"box format {self.box_format!r} is not one of {list(BOX_FORMATS)}")
        if self.score_activation not in SCORE_ACTIVATIONS:
            raise EdgeError(
                f"score activation {self.score_activation!r} is not one of {list(SCORE_ACTIVATIONS)}"
            )
        if self.preset is not None and self.preset not in PRESETS:
            raise EdgeError(f"preset {self.preset!r} is not one of {list(PRESETS)}")
        if int(self.background_class) < -1:
            raise EdgeError(f"background class must be a score column index >= 0 or -1 (none), got "
                            f"{self.background_class}")
        if self.preset is not None and self.anchors is not None:
            raise EdgeError("--anchors cannot be combined with --preset: YOLO presets carry decoded boxes")
        if self.input_size is not None:
            h, w = (int(v) for v in self.input_size)
            if h < 1 or w < 1:
                raise EdgeError(f"input size must be positive HxW, got {h}x{w}")
        return self


@dataclass
class CanonicalHead:
    """The pair NMS is appended to (see the module docstring)."""

    boxes: Any  # gs.Variable [B, N, 4], box_format, input pixels (or deltas when anchors)
    scores: Any  # gs.Variable [B, N, C], background removed, sigmoid pending if ``sigmoid``
    box_format: str
    sigmoid: bool
    anchors: Any = None  # gs.Tensor [1|B, N, 4] or None
    batch: Any = None  # the batch dim (int, or a symbolic name)
    num_boxes: Optional[int] = None
    num_classes: Optional[int] = None
    source: Dict[str, Any] = field(default_factory=dict)  # what was found and done, for the sidecar


def _dims(t: Any) -> Optional[List[Any]]:
    """Shape as a list (ints for static dims, str/None for dynamic ones), None when the rank is unknown."""
    shape = getattr(t, "shape", None)
    return None if shape is None else list(shape)


def _static(d: Any) -> Optional[int]:
    return int(d) if isinstance(d, (int, np.integer)) and int(d) >= 0 else None


def _is_float32(t: Any) -> bool:
    """True when ``t`` is float32 or of unknown type (then assumed float32)."""
    if t.dtype is None:
        return True
    try:
        return np.dtype(t.dtype) == np.float32
    except TypeError:
        return False


def _fmt(shape: Optional[Sequence[Any]]) -> str:
    if shape is None:
        return "unknown shape"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def find_tensor(graph: Any, name: str, role: str, constants: Optional[Dict[str, Any]] = None) -> Any:
    """A graph output (or, failing that, any tensor) called ``name``; ModelError naming the outputs if none.

    ``constants`` (name -> array) are initializers no node uses, which onnx-graphsurgeon does not import.
    """
    for t in graph.outputs:
        if t.name == name:
            return t
    tensors = graph.tensors()
    if name in tensors:
        return tensors[name]
    if constants and name in constants:
        import onnx_graphsurgeon as gs

        return gs.Constant(name, np.asarray(constants[name]))
    outs = ", ".join(f"{t.name} {_fmt(_dims(t))}" for t in graph.outputs) or "none"
    raise ModelError(
        f"{role} tensor {name!r} not found in the graph; its outputs are: {outs}. "
        f"Name the right one with --{role} NAME (or pick --preset for single-tensor YOLO heads)"
    )


def image_input_size(graph: Any) -> Optional[Tuple[int, int]]:
    """(H, W) of the graph's image input when static: first rank-4 input, NCHW or NHWC by its 3/1 dim."""
    for t in graph.inputs:
        dims = _dims(t)
        if dims is None or len(dims) != 4:
            continue
        d = [_static(v) for v in dims]
        if d[1] in (1, 3) and d[2] and d[3]:
            return d[2], d[3]
        if d[3] in (1, 3) and d[1] and d[2]:
            return d[1], d[2]
    return None


def _preset_tensors(graph: Any, ops: Any, spec: HeadSpec) -> Tuple[Any, Any, Dict[str, Any]]:
    """(boxes cxcywh [B,N,4], scores [B,N,C], info) from a YOLOv5 or YOLOv8 single output tensor."""
    if spec.preset_output:
        out = find_tensor(graph, spec.preset_output, "preset-output")
    else:
        if not graph.outputs:
            raise ModelError("the graph has no outputs: nothing for the preset to read")
        out = graph.outputs[0]
    dims = _dims(out)
    if dims is None or len(dims) != 3:
        raise ModelError(
            f"preset {spec.preset}: output {out.name!r} has {_fmt(dims)}; expected rank 3 "
            + ("[B, N, 5+C] (cx, cy, w, h, obj, classes...)" if spec.preset == "yolov5"
               else "[B, 4+C, N] (cx, cy, w, h, classes... by N anchors)")
        )
    info: Dict[str, Any] = {"preset": spec.preset, "preset_output": out.name}
    if spec.preset == "yolov5":
        width = _static(dims[2])
        if width is not None and width < 6:
            raise ModelError(
                f"preset yolov5: output {out.name!r} is {_fmt(dims)}; expected last dim 5 + C >= 6 "
                "(cx, cy, w, h, objectness, one score per class). Is it a YOLOv8 layout [B, 4+C, N]? "
                "Then use --preset yolov8"
            )
        end = width if width is not None else 2**31 - 1
        boxes = ops.slice(out, 0, 4, 2, hint="yolo_boxes")
        obj = ops.slice(out, 4, 5, 2, hint="yolo_obj")
        cls = ops.slice(out, 5, end, 2, hint="yolo_cls")
        scores = ops.binary("Mul", cls, obj, hint="yolo_scores")
        boxes.shape = [dims[0], dims[1], 4]
        scores.shape = [dims[0], dims[1], (width - 5) if width is not None else None]
    else:
        height = _static(dims[1])
        if height is not None and height < 5:
            raise ModelError(
                f"preset yolov8: output {out.name!r} is {_fmt(dims)}; expected dim 1 = 4 + C >= 5 "
                "(cx, cy, w, h, one score per class, by N). Is it a YOLOv5 layout [B, N, 5+C]? "
                "Then use --preset yolov5"
            )
        if height is not None and _static(dims[2]) is not None and _static(dims[2]) < height:
            # [B, N, 4+C] exported without the transpose: accept only when unambiguous
            raise ModelError(
                f"preset yolov8: output {out.name!r} is {_fmt(dims)}; expected [B, 4+C, N] with N "
                "anchors on the last axis (N > 4+C). A [B, N, 4+C] tensor needs no transpose: "
                "split it into boxes and scores in the model, or use named --boxes/--scores tensors"
            )
        end = height if height is not None else 2**31 - 1
        t = ops.transpose(out, [0, 2, 1], hint="yolo_nc")
        boxes = ops.slice(t, 0, 4, 2, hint="yolo_boxes")
        scores = ops.slice(t, 4, end, 2, hint="yolo_scores")
        boxes.shape = [dims[0], dims[2], 4]
        scores.shape = [dims[0], dims[2], (height - 4) if height is not None else None]
    boxes.dtype = scores.dtype = np.float32 if out.dtype is None else out.dtype
    return boxes, scores, info


def _check_pair(boxes: Any, scores: Any, anchors: Any) -> Tuple[Any, Optional[int], Optional[int]]:
    bd, sd = _dims(boxes), _dims(scores)
    if bd is None:
        raise ModelError(
            f"boxes tensor {boxes.name!r} has an unknown shape; expected [B, N, 4]. Run shape inference "
            "on the model (onnxslim or onnx.shape_inference) or re-export it with static output shapes"
        )
    if len(bd) != 3:
        raise ModelError(
            f"boxes tensor {boxes.name!r} is {_fmt(bd)} (rank {len(bd)}); expected rank 3 [B, N, 4] "
            "(one box per anchor, shared by all classes)"
        )
    if _static(bd[2]) is not None and _static(bd[2]) != 4:
        raise ModelError(
            f"boxes tensor {boxes.name!r} is {_fmt(bd)}; its last dim must be 4 (x1,y1,x2,y2 or "
            "cx,cy,w,h). Did you swap --boxes and --scores?"
        )
    if sd is None:
        raise ModelError(f"scores tensor {scores.name!r} has an unknown shape; expected [B, N, C]")
    if len(sd) != 3:
        raise ModelError(
            f"scores tensor {scores.name!r} is {_fmt(sd)} (rank {len(sd)}); expected rank 3 [B, N, C]"
        )
    nb, ns = _static(bd[1]), _static(sd[1])
    if nb is not None and ns is not None and nb != ns:
        raise ModelError(
            f"boxes {boxes.name!r} {_fmt(bd)} and scores {scores.name!r} {_fmt(sd)} disagree on N "
            f"({nb} boxes vs {ns} score rows); expected [B, N, 4] and [B, N, C] with the same N"
        )
    if _static(sd[2]) == 0:
        raise ModelError(f"scores tensor {scores.name!r} is {_fmt(sd)}: no classes")
    if anchors is not None:
        ad = _dims(anchors)
        if ad is None or len(ad) != 3 or (_static(ad[2]) not in (None, 4)):
            raise ModelError(
                f"anchors tensor {anchors.name!r} is {_fmt(ad)}; expected [1, N, 4] or [B, N, 4]"
            )
        na = _static(ad[1])
        if na is not None and nb is not None and na != nb:
            raise ModelError(
                f"anchors {anchors.name!r} {_fmt(ad)} has {na} anchors but boxes {boxes.name!r} has {nb}"
            )
    return bd[0], nb if nb is not None else ns, _static(sd[2])


def _remove_background(ops: Any, scores: Any, bg: int, num_classes: Optional[int]) -> Any:
    """Drop score column ``bg`` (Gather with the kept column ids; Slice when C is dynamic and bg is 0)."""
    if num_classes is None:
        if bg != 0:
            raise ModelError(
                f"scores tensor has a dynamic class count; removing background column {bg} needs a static "
                "C (only background 0 works with a dynamic C). Re-export with static output shapes"
            )
        return ops.slice(scores, 1, 2**31 - 1, 2, hint="drop_background")
    if not (0 <= bg < num_classes):
        raise ModelError(
            f"background class {bg} is out of range for scores with C = {num_classes} columns "
            f"(expected 0..{num_classes - 1}, or -1 for none)"
        )
    if num_classes == 1:
        raise ModelError("scores have a single column and it is the background class: no classes remain")
    if bg == 0:
        return ops.slice(scores, 1, num_classes, 2, hint="drop_background")
    if bg == num_classes - 1:
        return ops.slice(scores, 0, num_classes - 1, 2, hint="drop_background")
    keep = [c for c in range(num_classes) if c != bg]
    return ops.gather(scores, keep, axis=2, hint="drop_background")


def resolve_head(graph: Any, ops: Any, spec: HeadSpec, constants: Optional[Dict[str, Any]] = None) -> CanonicalHead:
    """Find the head described by ``spec`` in ``graph`` and append the nodes that make it canonical.

    ``constants``: initializers by name (anchors may be an initializer no node uses yet).
    """
    spec.validate()
    anchors = None
    if spec.preset is not None:
        boxes, scores, info = _preset_tensors(graph, ops, spec)
        box_format, normalized, bg, activation = "cxcywh", False, -1, "none"
    else:
        boxes = find_tensor(graph, spec.boxes, "boxes")
        scores = find_tensor(graph, spec.scores, "scores")
        if spec.anchors is not None:
            anchors = find_tensor(graph, spec.anchors, "anchors", constants)
        info = {"boxes": boxes.name, "scores": scores.name}
        if anchors is not None:
            info["anchors"] = anchors.name
        box_format, normalized, bg = spec.box_format, spec.normalized, int(spec.background_class)
        activation = spec.score_activation
    batch, num_boxes, num_classes = _check_pair(boxes, scores, anchors)
    info.update(box_format=box_format, normalized=normalized, background_class=bg, score_activation=activation)
    for role in ("boxes", "scores", "anchors"):
        t = {"boxes": boxes, "scores": scores, "anchors": anchors}[role]
        if t is None or _is_float32(t):
            continue
        info[f"{role}_dtype"] = str(t.dtype)
        cast = ops.cast(t, 1, hint=f"{role}_fp32")  # TensorProto.FLOAT: NMS runs in fp32
        if role == "boxes":
            boxes = cast
        elif role == "scores":
            scores = cast
        else:
            anchors = cast

    if activation == "softmax":
        # over the class axis, background included; axis 2 of [B, N, C] is right in every opset
        scores = ops.op("Softmax", [scores], {"axis": 2}, hint="softmax")
    if bg >= 0:
        scores = _remove_background(ops, scores, bg, num_classes)
        num_classes = None if num_classes is None else num_classes - 1

    if normalized:
        size = tuple(spec.input_size) if spec.input_size else image_input_size(graph)
        if size is None:
            raise ModelError(
                "--normalized boxes are scaled to input pixels by the input width and height, but the "
                "graph's image input has no static [B,3,H,W] or [B,H,W,3] shape; pass --input-size HxW"
            )
        h, w = int(size[0]), int(size[1])
        scale = ops.f32([w, h, w, h], hint="pixel_scale")
        if anchors is not None:
            # corners decode as delta + anchor: scale both; centre-size decodes relative to the
            # anchor size, so scaling the anchors alone scales the decoded box
            anchors = ops.binary("Mul", anchors, scale, hint="anchors_to_pixels")
            if box_format == "xyxy":
                boxes = ops.binary("Mul", boxes, scale, hint="deltas_to_pixels")
        else:
            boxes = ops.binary("Mul", boxes, scale, hint="boxes_to_pixels")
        info["input_size"] = [h, w]

    return CanonicalHead(
        boxes=boxes,
        scores=scores,
        box_format=box_format,
        sigmoid=(activation == "sigmoid"),
        anchors=anchors,
        batch=batch,
        num_boxes=num_boxes,
        num_classes=num_classes,
        source=info,
    )
