"""Graph surgery: append NMS to a pre-NMS detector ONNX (``edge surgery``).

In:  a detector ONNX with boxes and scores outputs (this project's export: ``boxes`` [B,N,4] xyxy input
     pixels and ``scores`` [B,N,C] activated, no background column; or a foreign model described by
     ``HeadSpec``: named tensors with their encoding, or a YOLOv5 / YOLOv8 preset).
Out: the same graph ending in four outputs, whichever NMS is chosen:

    num_detections    [B, 1]    int32
    detection_boxes   [B, K, 4] float32  x1, y1, x2, y2 in input pixels
    detection_scores  [B, K]    float32
    detection_classes [B, K]    int32    0-based foreground class ids
    max_score         [B]       float32  (fifth, optional) each image's highest score before NMS

* ``efficient``: one EfficientNMS_TRT plugin node (TensorRT 8.0.1 - 10.x), every attribute explicit;
* ``onnx``: standard NonMaxSuppression + gathers/top-K (ONNX Runtime; TensorRT >= 8.6). Graphs below
  opset 11 are converted to opset 11 first (onnx.version_converter).

Old exports that list initializers as graph inputs are cleaned (the initializers stay, the input
entries go), so ONNX Runtime can fold them and TensorRT sees one image input. Every written graph
passes ``onnx.checker`` and strict shape inference (the efficient one through its CPU copy, with the
plugin in a custom domain) and one ONNX Runtime run; the sidecar is carried forward with what was done.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from edge.artifacts import MAX_SCORE_OUTPUT, NMS_OUTPUTS
from edge.efficient_nms import MAX_CANDIDATES, PLUGIN_NAME, PLUGIN_VERSION, EfficientNMSParams
from edge.errors import EdgeError, MissingDependencyError, ModelError
from edge.export.opset import model_opset
from edge.export.presets import HeadSpec

log = logging.getLogger(__name__)

NMS_TYPES = ("efficient", "onnx")
MIN_OPSET = 9
ONNX_NMS_MIN_OPSET = 11

PathLike = Union[str, "os.PathLike[str]"]

# EfficientNMS_TRT's fused decoder (DecodeBoxes in plugin/efficientNMSPlugin/efficientNMSInference.cu) reorders
# the corners of the delta and of the anchor before adding them; both NMS flavours here do the same.
_CORNER_DECODER_NOTE = (
    "--anchors with xyxy deltas: EfficientNMS_TRT's decoder puts the corners of each delta and anchor in order "
    "(x1 <= x2, y1 <= y2) before adding them, and both NMS flavours of this graph decode the same way. Deltas "
    "that are plain offsets (box - anchor) can have the x1 offset above the x2 one, and then decode to another "
    "box than delta + anchor: for those, add the anchors in the model and run surgery without --anchors, or "
    "export centre-size deltas (--box-format cxcywh)"
)


#: NMS settings when neither a flag nor the input's sidecar gives them (``resolve_nms_settings``)
DEFAULT_NMS_SETTINGS: Dict[str, Any] = {"score_threshold": 0.25, "iou_threshold": 0.45, "max_detections": 100}
_SETTING_FLAGS = {"score_threshold": "--score-threshold", "iou_threshold": "--iou-threshold",
                  "max_detections": "--max-detections"}


@dataclass
class SurgeryConfig:
    """What ``edge surgery`` does. ``head`` says where boxes and scores are and how they are encoded.

    ``score_threshold``, ``iou_threshold``, ``max_detections``: None takes the input's sidecar's recorded
    settings (``surgery_file``; a torchvision export records its model's), else ``DEFAULT_NMS_SETTINGS``.
    """

    nms: str = "efficient"
    score_threshold: Optional[float] = None
    iou_threshold: Optional[float] = None
    max_detections: Optional[int] = None
    class_agnostic: bool = False
    head: HeadSpec = field(default_factory=HeadSpec)
    classes: Optional[List[str]] = None  # class names for the sidecar (foreign models have none)
    verify: bool = True  # run the written graph once in ONNX Runtime

    def validate(self) -> SurgeryConfig:
        if self.nms not in NMS_TYPES:
            raise EdgeError(f"--nms {self.nms!r} is not one of {list(NMS_TYPES)}")
        for flag, value in (("--score-threshold", self.score_threshold), ("--iou-threshold", self.iou_threshold)):
            if value is not None and not (0.0 <= float(value) <= 1.0):
                raise EdgeError(f"{flag} must be in [0, 1], got {value}")
        if self.max_detections is not None and int(self.max_detections) < 1:
            raise EdgeError(f"--max-detections (K) must be >= 1, got {self.max_detections}")
        if self.nms == "efficient" and self.max_detections is not None and int(self.max_detections) > MAX_CANDIDATES:
            log.warning("--max-detections %d: EfficientNMS_TRT never returns more than its %d candidates",
                        self.max_detections, MAX_CANDIDATES)
        if self.classes is not None and not self.classes:
            raise EdgeError("--classes was given but empty")
        self.head.validate()
        return self


def recorded_nms_settings(sidecar: Optional[Dict[str, Any]]) -> Tuple[Dict[str, Any], str]:
    """The NMS settings a sidecar records for ``edge surgery`` and the key they are under: a torchvision
    export's ``config.edge_surgery`` (its model's score_thresh / nms_thresh / detections_per_img), or a flat
    ``edge_surgery`` block. ({}, "") when none is recorded."""
    sc = sidecar or {}
    config = sc.get("config") if isinstance(sc.get("config"), dict) else {}
    for key, block in (("config.edge_surgery", config.get("edge_surgery")), ("edge_surgery", sc.get("edge_surgery"))):
        if isinstance(block, dict):
            found = {k: block[k] for k in DEFAULT_NMS_SETTINGS if isinstance(block.get(k), (int, float))}
            if found:
                return found, key
    return {}, ""


def resolve_nms_settings(config: SurgeryConfig, sidecar: Optional[Dict[str, Any]] = None,
                         sidecar_name: str = "the sidecar") -> Tuple[SurgeryConfig, Dict[str, str]]:
    """``config`` with every unset NMS setting filled: from the sidecar's recorded settings
    (``recorded_nms_settings``), else ``DEFAULT_NMS_SETTINGS``; a value set in ``config`` (a flag) wins.
    Returns (the config, where each value came from: its flag, ``NAME.json KEY``, or ``default``)."""
    recorded, key = recorded_nms_settings(sidecar)
    values: Dict[str, Any] = {}
    origin: Dict[str, str] = {}
    for name, default in DEFAULT_NMS_SETTINGS.items():
        given = getattr(config, name)
        if given is not None:
            values[name], origin[name] = given, _SETTING_FLAGS[name]
        elif name in recorded:
            values[name], origin[name] = recorded[name], f"{sidecar_name} {key}"
        else:
            values[name], origin[name] = default, "default"
    values["max_detections"] = int(values["max_detections"])
    return replace(config, **values), origin


@dataclass
class SurgeryResult:
    """The deploy graph and what surgery did (the sidecar's ``nms`` block and friends)."""

    model: Any  # onnx.ModelProto
    nms: Dict[str, Any]
    source: Dict[str, Any]
    num_classes: Optional[int]
    opset: int
    input_size: Optional[Tuple[int, int]]
    notes: List[str] = field(default_factory=list)


def _deps() -> Tuple[Any, Any]:
    try:
        import onnx
        import onnx_graphsurgeon as gs
    except ImportError as exc:
        raise MissingDependencyError(
            getattr(exc, "name", None) or "onnx", "graph surgery", "pip install 'edge-detect[export]'"
        ) from exc
    return onnx, gs


def load_model(path: PathLike) -> Any:
    """Load an ONNX file (external data included), with a ModelError that says what went wrong."""
    onnx, _ = _deps()
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"ONNX model {p} not found; pass the path of a pre-NMS detector .onnx file")
    try:
        return onnx.load(str(p))
    except Exception as exc:
        raise ModelError(f"{p} is not a readable ONNX file ({exc})") from exc


def strip_initializer_inputs(model: Any) -> int:
    """Remove graph inputs that are initializers (old exporters list weights as inputs); returns how many."""
    inits = {i.name for i in model.graph.initializer}
    keep = [i for i in model.graph.input if i.name not in inits]
    removed = len(model.graph.input) - len(keep)
    if removed:
        del model.graph.input[:]
        model.graph.input.extend(keep)
        if model.ir_version < 4:  # IR < 4 required initializers to be inputs
            model.ir_version = 4
    return removed


def _convert_opset(model: Any, target: int) -> Any:
    onnx, _ = _deps()
    from onnx import version_converter

    src = model_opset(model)
    try:
        converted = version_converter.convert_version(model, target)
    except Exception as exc:
        raise ModelError(
            f"the model is at opset {src}; ONNX NonMaxSuppression needs opset >= {target} and converting "
            f"failed ({exc}). Re-export the model at opset >= {target}, or use --nms efficient (any opset "
            f">= {MIN_OPSET})"
        ) from exc
    log.info("converted the graph from opset %d to %d for ONNX NonMaxSuppression", src, target)
    return converted


def _existing_nms(model: Any) -> Optional[str]:
    for node in model.graph.node:
        if node.op_type in ("NonMaxSuppression", PLUGIN_NAME, "BatchedNMS_TRT", "BatchedNMSDynamic_TRT"):
            return node.op_type
    names = {o.name for o in model.graph.output}
    if set(NMS_OUTPUTS) <= names:
        return "outputs " + ", ".join(NMS_OUTPUTS)
    return None


def _working_copy(model: Any, config: SurgeryConfig) -> Tuple[Any, int, int, int, List[str]]:
    """A copy of ``model`` that NMS can be appended to: refused when it already ends in NMS or is below
    ``MIN_OPSET``, initializer inputs removed, converted to opset 11 for ``--nms onnx`` when older.

    Returns (the copy, its opset, the source's opset, initializer inputs removed, notes).
    """
    onnx, _ = _deps()
    existing = _existing_nms(model)
    if existing:
        raise ModelError(
            f"the model already ends in NMS ({existing}); edge surgery expects a pre-NMS detector "
            "(boxes + scores outputs). Run it on the exported model, not on a deploy graph"
        )
    work = onnx.ModelProto()
    work.CopyFrom(model)
    notes: List[str] = []
    removed = strip_initializer_inputs(work)
    if removed:
        notes.append(f"removed {removed} initializers listed as graph inputs")
        log.info("removed %d initializers listed as graph inputs (an old exporter's habit)", removed)
    opset = model_opset(work)
    source_opset = opset
    if opset < MIN_OPSET:
        raise ModelError(
            f"the model is at opset {opset}; edge surgery supports opset >= {MIN_OPSET}. Re-export it with a "
            "newer opset, or convert it with onnx.version_converter"
        )
    if config.nms == "onnx" and opset < ONNX_NMS_MIN_OPSET:
        work = _convert_opset(work, ONNX_NMS_MIN_OPSET)
        opset = ONNX_NMS_MIN_OPSET
        notes.append(f"converted from opset {source_opset} to {opset}")
    return work, opset, source_opset, removed, notes


def _append_efficient_nms(ops: Any, head: Any, config: SurgeryConfig,
                          k: int) -> Tuple[List[Any], Dict[str, Any]]:
    """``--nms efficient``: one EfficientNMS_TRT node on the resolved head; returns (its four outputs, the
    sidecar's ``nms`` block without the settings common to both NMS types)."""
    from edge.export.efficient_nms_node import add_efficient_nms

    params = EfficientNMSParams(
        score_threshold=float(config.score_threshold),
        iou_threshold=float(config.iou_threshold),
        max_output_boxes=k,
        background_class=-1,  # removed from the scores above, so class ids are foreground ids
        score_activation=head.sigmoid,
        class_agnostic=bool(config.class_agnostic),
        box_coding=1 if head.box_format == "cxcywh" else 0,
    ).validate()
    outputs = add_efficient_nms(ops, head.boxes, head.scores, params, anchors=head.anchors, batch=head.batch)
    nms_block: Dict[str, Any] = {
        "type": "efficient",
        "op": PLUGIN_NAME,
        "plugin_version": PLUGIN_VERSION,
        "attributes": params.to_attributes(),
        "max_candidates": MAX_CANDIDATES,
        "fused_decoder": head.anchors is not None,
        "score_compare": ">=",
        "iou_compare": ">=",
    }
    return outputs, nms_block


def _append_onnx_nms(ops: Any, head: Any, config: SurgeryConfig, k: int) -> Tuple[List[Any], Dict[str, Any]]:
    """``--nms onnx``: decode to xyxy, apply the sigmoid where the head needs it, then the standard-ONNX NMS
    subgraph; returns (its four outputs, the sidecar's ``nms`` block without the common settings)."""
    from edge.export.nms_graph import add_onnx_nms, to_xyxy

    boxes = to_xyxy(ops, head.boxes, head.box_format, head.anchors)
    scores = ops.op("Sigmoid", [head.scores], hint="sigmoid") if head.sigmoid else head.scores
    outputs = add_onnx_nms(
        ops, boxes, scores,
        score_threshold=float(config.score_threshold),
        iou_threshold=float(config.iou_threshold),
        max_detections=k,
        class_agnostic=bool(config.class_agnostic),
        batch=head.batch,
    )
    nms_block = {"type": "onnx", "op": "NonMaxSuppression", "score_compare": ">", "iou_compare": ">"}
    return outputs, nms_block


def _max_score_output(ops: Any, head: Any) -> Any:
    """``MAX_SCORE_OUTPUT`` [B] float32: the highest score of each image over every candidate and class,
    computed from the scores tensor that feeds the NMS node (the sigmoid the NMS applies, applied after the
    max: it is monotonic), so both NMS flavours carry it and the four NMS outputs keep their order."""
    import onnx_graphsurgeon as gs

    top = ops.reduce("ReduceMax", head.scores, [1, 2], keepdims=False, hint="max_score_reduce")
    if head.sigmoid:
        top = ops.op("Sigmoid", [top], hint="max_score_sigmoid")
    out = gs.Variable(MAX_SCORE_OUTPUT, dtype=np.float32, shape=[head.batch if head.batch is not None else "batch"])
    ops.graph.nodes.append(gs.Node("Cast", ops.name(MAX_SCORE_OUTPUT), {"to": 1}, [top], [out]))  # 1: FLOAT
    return out


def _deploy_model(graph: Any, outputs: List[Any], work: Any, ir_version: int) -> Any:
    """``graph`` ending in ``outputs``, cleaned and sorted, as an onnx.ModelProto with ``ir_version`` and the
    source's metadata and doc string."""
    _, gs = _deps()
    graph.outputs = outputs
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    out = gs.export_onnx(graph, do_type_check=True)
    out.ir_version = ir_version
    del out.metadata_props[:]
    out.metadata_props.extend(work.metadata_props)
    out.doc_string = work.doc_string
    return out


def apply_surgery(model: Any, config: SurgeryConfig) -> SurgeryResult:
    """Append NMS to ``model`` (an onnx.ModelProto, not modified) as ``config`` says.

    Raises ModelError naming the tensor and the expectation for missing outputs, wrong ranks, a boxes
    tensor whose last dim is not 4, and the like; EdgeError for bad settings.
    """
    onnx, gs = _deps()
    from edge.export.graph_ops import GraphOps
    from edge.export.presets import image_input_size, resolve_head

    config, _ = resolve_nms_settings(config.validate())
    work, opset, source_opset, removed, notes = _working_copy(model, config)
    ir_version = max(int(work.ir_version), int(onnx.helper.find_min_ir_version_for(
        [onnx.helper.make_opsetid("", opset)])))
    try:
        work = onnx.shape_inference.infer_shapes(work)
    except Exception as exc:  # shapes are then whatever the file declares
        log.warning("shape inference on the source model failed (%s); using declared shapes only", exc)

    graph = gs.import_onnx(work)
    taken = set(graph.tensors().keys())
    clash = [n for n in NMS_OUTPUTS if n in taken]
    if clash:
        raise ModelError(f"the model already has tensors named {clash}; rename them before surgery")
    ops = GraphOps(graph, opset, prefix="nms")
    constants = {}
    if config.head.anchors and config.head.anchors not in taken:
        constants = {i.name: onnx.numpy_helper.to_array(i) for i in work.graph.initializer
                     if i.name == config.head.anchors}
    head = resolve_head(graph, ops, config.head, constants)
    if head.anchors is not None and head.box_format == "xyxy":
        notes.append(_CORNER_DECODER_NOTE)
        log.warning("%s", _CORNER_DECODER_NOTE)

    k = int(config.max_detections)
    if config.nms == "efficient":
        outputs, nms_block = _append_efficient_nms(ops, head, config, k)
    else:
        outputs, nms_block = _append_onnx_nms(ops, head, config, k)
    if MAX_SCORE_OUTPUT in taken:
        log.info("not adding the %s output: the model already has a tensor of that name", MAX_SCORE_OUTPUT)
    else:
        outputs.append(_max_score_output(ops, head))
    nms_block.update(
        score_threshold=float(config.score_threshold),
        iou_threshold=float(config.iou_threshold),
        max_detections=k,
        class_agnostic=bool(config.class_agnostic),
        outputs=list(NMS_OUTPUTS),
        box_format="xyxy",
        box_units="input_pixels",
    )

    if len(outputs) > len(NMS_OUTPUTS):
        nms_block["max_score_output"] = MAX_SCORE_OUTPUT
    out = _deploy_model(graph, outputs, work, ir_version)
    input_size = tuple(config.head.input_size) if config.head.input_size else image_input_size(graph)
    return SurgeryResult(
        model=out,
        nms=nms_block,
        source=dict(head.source, opset_in=source_opset, opset_out=opset,
                    initializer_inputs_removed=removed),
        num_classes=head.num_classes,
        opset=opset,
        input_size=input_size,  # type: ignore[arg-type]
        notes=notes,
    )


def check_model(model: Any) -> None:
    """onnx.checker + strict shape inference; graphs with EfficientNMS_TRT are checked via their CPU copy."""
    onnx, _ = _deps()
    from edge.export.ort_custom_ops import make_cpu_runnable, trt_nms_nodes

    target = make_cpu_runnable(model) if trt_nms_nodes(model) else model
    try:
        onnx.checker.check_model(target)
        onnx.shape_inference.infer_shapes(target, check_type=True, strict_mode=True)
    except Exception as exc:
        raise ModelError(f"the graph written by surgery fails the ONNX checker: {exc}") from exc


def _feed(model: Any, input_size: Optional[Tuple[int, int]], seed: int = 0) -> Optional[Dict[str, np.ndarray]]:
    """Random inputs for every graph input; None when a non-batch dim is dynamic and cannot be guessed."""
    from onnx import helper

    rng = np.random.default_rng(seed)
    inits = {i.name for i in model.graph.initializer}
    feed: Dict[str, np.ndarray] = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type)
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if dims and dims[0] is None:
            dims[0] = 1
        if len(dims) == 4 and input_size is not None:
            if dims[1] in (1, 3) and dims[2] is None and dims[3] is None:
                dims[2], dims[3] = input_size
            elif dims[3] in (1, 3) and dims[1] is None and dims[2] is None:
                dims[1], dims[2] = input_size
        if any(d is None for d in dims):
            return None
        if np.issubdtype(dtype, np.integer):
            feed[vi.name] = rng.integers(0, 256, size=dims).astype(dtype)
        else:
            feed[vi.name] = rng.random(dims, dtype=np.float32).astype(dtype)
    return feed


def verify_runs(model: Any, max_detections: int, input_size: Optional[Tuple[int, int]] = None) -> bool:
    """Run the graph once in ONNX Runtime on random inputs and check the four outputs' shapes and types.

    Returns False (and logs) when an input has dynamic dims that cannot be filled; raises ModelError
    when the graph does not run or its outputs are not the expected ones.
    """
    from edge.export.ort_custom_ops import make_session

    feed = _feed(model, input_size)
    if feed is None:
        log.info("not running the new graph once: its input has dynamic dims (pass --input-size HxW)")
        return False
    names = list(NMS_OUTPUTS) + [o.name for o in model.graph.output if o.name == MAX_SCORE_OUTPUT]
    try:
        sess = make_session(model)
        outs = sess.run(names, feed)
    except Exception as exc:
        raise ModelError(f"ONNX Runtime cannot run the graph written by surgery: {exc}") from exc
    num = outs[0]
    b, k = num.shape[0], int(max_detections)
    expect = [((b, 1), np.int32), ((b, k, 4), np.float32), ((b, k), np.float32), ((b, k), np.int32), ((b,), np.float32)]
    for name, arr, (shape, dtype) in zip(names, outs, expect):
        if tuple(arr.shape) != shape or arr.dtype != dtype:
            raise ModelError(
                f"surgery output {name} came out {arr.dtype}{list(arr.shape)}, expected "
                f"{np.dtype(dtype).name}{list(shape)}"
            )
    if (num < 0).any() or (num > k).any():
        raise ModelError(f"num_detections {num.ravel().tolist()} is outside [0, {k}]")
    return True


def output_description(model: Any, max_detections: int) -> Dict[str, Any]:
    """The sidecar's ``outputs`` block for a deploy graph (replaces the export's boxes/scores entry)."""
    batch: Any = "batch"
    for o in model.graph.output:
        if o.name == NMS_OUTPUTS[0] and o.type.tensor_type.shape.dim:
            d = o.type.tensor_type.shape.dim[0]
            batch = d.dim_value if d.HasField("dim_value") else (d.dim_param or "batch")
    k = int(max_detections)
    return {
        "num_detections": {"name": NMS_OUTPUTS[0], "shape": [batch, 1], "dtype": "int32"},
        "detection_boxes": {"name": NMS_OUTPUTS[1], "shape": [batch, k, 4], "dtype": "float32",
                            "format": "xyxy", "units": "input pixels", "normalized": False},
        "detection_scores": {"name": NMS_OUTPUTS[2], "shape": [batch, k], "dtype": "float32"},
        "detection_classes": {"name": NMS_OUTPUTS[3], "shape": [batch, k], "dtype": "int32",
                              "meaning": "0-based index into classes (background removed)"},
        **({"max_score": {"name": MAX_SCORE_OUTPUT, "shape": [batch], "dtype": "float32",
                          "meaning": "each image's highest score before NMS (every box and class)"}}
           if any(o.name == MAX_SCORE_OUTPUT for o in model.graph.output) else {}),
    }


ULTRALYTICS_NORMALIZATION = {"scale": 255.0, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}


def ultralytics_input(model: Any) -> Dict[str, Any]:
    """What a YOLOv5/YOLOv8 export (the ``--preset`` graphs) expects of its image input, for the sidecar:
    float RGB [B, 3, H, W], pixel / 255, letterboxed on grey 114, as ultralytics' own predictor feeds it.
    Empty when the graph's input is not a float 3-channel NCHW image (then the runtime asks for a sidecar).

    ``model``: a deploy graph from ``apply_surgery``, whose inputs are real inputs only (initializers listed
    as inputs were removed by ``strip_initializer_inputs``)."""
    import onnx

    inputs = list(model.graph.input)
    if len(inputs) != 1:
        return {}
    t = inputs[0].type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
    if t.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16) or len(dims) != 4 or dims[1] != 3:
        return {}
    return {"input_layout": "float_nchw_rgb", "normalization": dict(ULTRALYTICS_NORMALIZATION), "pad_value": 114}


def surgery_file(model_path: PathLike, out_path: PathLike, config: SurgeryConfig) -> Dict[str, Any]:
    """Read MODEL.onnx (+ MODEL.json), append NMS, check, write OUT.onnx + OUT.json; returns the sidecar."""
    from edge.artifacts import (
        atomic_write_bytes,
        check_output_path,
        derive_sidecar,
        read_sidecar,
        sha256_bytes,
        write_sidecar,
    )

    src = Path(model_path)
    dst = Path(out_path)
    if dst.suffix != ".onnx":
        raise EdgeError(f"--out {dst} must end in .onnx (its sidecar goes beside it as {dst.stem}.json)")
    if dst.resolve() == src.resolve():
        raise EdgeError(f"--out {dst} is the input model; write the deploy graph to a new file")
    check_output_path(dst, "--out", make_folder=True)
    config.validate()
    model = load_model(src)
    base = read_sidecar(src, required=False) or {}
    config, origin = resolve_nms_settings(config, base, src.with_suffix(".json").name)
    log.info("NMS settings: score threshold %g (%s), IoU threshold %g (%s), max detections %d (%s)",
             config.score_threshold, origin["score_threshold"], config.iou_threshold, origin["iou_threshold"],
             config.max_detections, origin["max_detections"])
    size = base.get("input_size")
    if config.head.input_size is None and isinstance(size, (list, tuple)) and len(size) == 2:
        config = replace(config, head=replace(config.head, input_size=(int(size[0]), int(size[1]))))
    result = apply_surgery(model, config)
    check_model(result.model)

    classes = list(config.classes) if config.classes else None
    known = classes or base.get("classes") or base.get("class_names")
    if known and result.num_classes is not None and len(known) != result.num_classes:
        where = "--classes" if classes else f"{src.with_suffix('.json').name} 'classes'"
        raise ModelError(
            f"{where} names {len(known)} classes but the scores have {result.num_classes} foreground columns"
            + (" (after removing the background column)" if result.source.get("background_class", -1) >= 0 else "")
            + "; give one name per score column"
        )
    if config.verify:
        verify_runs(result.model, config.max_detections, result.input_size)

    updates: Dict[str, Any] = {
        "nms": result.nms,
        "surgery": result.source,
        "opset": result.opset,
        "num_classes": result.num_classes,
        "outputs": output_description(result.model, config.max_detections),
    }
    if classes:
        updates["classes"] = classes
        updates["class_names"] = classes
    if result.input_size and "input_size" not in base:
        updates["input_size"] = [int(result.input_size[0]), int(result.input_size[1])]
    if config.head.preset is not None and "normalization" not in base:
        updates.update(ultralytics_input(result.model))
    data = result.model.SerializeToString()
    meta = derive_sidecar(src, dst, "surgery", updates)
    atomic_write_bytes(dst, data, what="--out")
    meta["sha256"] = sha256_bytes(data)
    try:
        write_sidecar(dst, meta)
    except BaseException:  # a graph without its sidecar is half an output
        with contextlib.suppress(OSError):
            dst.unlink()
        raise
    log.info("wrote %s (%s NMS, K=%d) and its sidecar", dst, config.nms, config.max_detections)
    return read_sidecar(dst) or meta
