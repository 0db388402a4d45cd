"""The self-test's ``tensorrt dynamic H/W`` check: an engine built with ``edge build --imgsz HxW`` at a size
other than the model's own (``other_size``: 320x320 -> 256x320), from a deploy graph with a free height
and width, run through the TensorRT backend at that size and compared with ONNX Runtime on the same graph
and inputs. It also checks that the backend preprocesses frames to the size the engine was built for (an
engine whose sidecar and runtime disagree fails every frame with ``input shape ... != run shape``).

The deploy graph (``dynamic_deploy_graph``), first that applies:

1. the model itself, when its input already has a free height and width (``edge export --dynamic-hw``);
2. the model with its input's height and width freed, when the graph computes its shapes from its input:
   kept only when ONNX Runtime gives the static graph's detections at the model's own size and runs it
   at the other size;
3. the checkpoint it was exported from (its sidecar's ``source.checkpoint`` beside it, or the bundled
   checkpoint for the bundled model; same sha256 as recorded) exported again the way ``edge export
   --dynamic-hw`` does and given the same NMS by ``edge surgery`` (needs torch: the export extra).

Otherwise the check is skipped, with what each way found.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from edge.artifacts import read_sidecar, sha256_file
from edge.doctor.compare import compare_detections, make_batches
from edge.doctor.report import FAIL, SKIP, Check
from edge.doctor.shipped import ShipContext, build_and_compare, onnxruntime_outputs
from edge.errors import EdgeError
from edge.ort import import_onnx

log = logging.getLogger(__name__)

NAME = "tensorrt dynamic H/W"


class NotDynamic(EdgeError):
    """No deploy graph with a free height and width can be had for the model here (the message says why)."""


@dataclass
class DynamicGraph:
    """A deploy graph with a free height and width, and how it was obtained."""

    path: Path
    how: str


def other_size(height: int, width: int) -> Tuple[int, int]:
    """The size the dynamic engine is built for: 64 px less high (64 px more below 128), same width."""
    return (height - 64, width) if height - 64 >= 64 else (height + 64, width)


def _hw_dims(model: Any, fmt: Any) -> List[Any]:
    from edge.model_input import LAYOUT_UINT8_NHWC_BGR

    dims = model.graph.input[0].type.tensor_type.shape.dim
    return [dims[1], dims[2]] if fmt.layout == LAYOUT_UINT8_NHWC_BGR else [dims[2], dims[3]]


def _copy_sidecar(model_path: Path, out: Path, **input_changes: Any) -> None:
    sidecar = read_sidecar(model_path, required=False)
    if sidecar is None:
        return
    from edge.artifacts import write_sidecar

    data = dict(sidecar)
    data["input"] = dict(data.get("input") or {}, **input_changes)
    write_sidecar(out, data)


def _freed(ctx: ShipContext, model_path: Path, size: Tuple[int, int], work: Path) -> DynamicGraph:
    """Way 2: the model with its input's height and width freed, checked with ONNX Runtime."""
    onnx = import_onnx()
    model = onnx.load(str(model_path))
    for dim, name in zip(_hw_dims(model, ctx.input_format), ("height", "width")):
        dim.Clear()
        dim.dim_param = name
    del model.graph.value_info[:]
    out = work / (model_path.stem + ".dynamic_hw.onnx")
    out.write_bytes(model.SerializeToString())

    def run(batches: List[Any], hw: Tuple[int, int]) -> List[Dict[str, Any]]:
        try:
            return onnxruntime_outputs(str(out), ctx.input_name, batches)
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime's shape errors come in several types
            raise NotDynamic(f"with its input's height and width freed, ONNX Runtime cannot run it at {hw[0]}x{hw[1]} "
                             f"({str(exc).splitlines()[0][:200]}): its shapes are fixed inside the graph") from None

    same = run(ctx.batches, (int(ctx.input_format.height), int(ctx.input_format.width)))
    run(make_batches(dataclasses.replace(ctx.input_format, height=size[0], width=size[1]), ctx.frames[:1]), size)
    problems = [p for got, want in zip(same, ctx.expected(str(model_path))) for p in compare_detections(got, want, 1e-6)]
    if problems:
        raise NotDynamic(f"with its input's height and width freed, the graph no longer gives its own detections at "
                         f"its own size ({problems[0]})")
    _copy_sidecar(model_path, out, dynamic_hw=True)
    return DynamicGraph(out, "the deploy graph with its input's height and width freed (its shapes follow the input)")


def _checkpoint(model_path: Path, sidecar: Dict[str, Any]) -> Path:
    """The checkpoint ``model_path`` was exported from, with the recorded sha256, or NotDynamic saying why."""
    from edge.bundled import bundled_checkpoint, bundled_model

    source = sidecar.get("source") or {}
    name = source.get("checkpoint")
    if not name:
        raise NotDynamic("its sidecar names no checkpoint to export again")
    candidates = [model_path.parent / Path(name).name]
    try:
        if model_path.resolve() == bundled_model().resolve():
            candidates.insert(0, bundled_checkpoint())
    except EdgeError:
        pass
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise NotDynamic(f"its checkpoint {name} is not beside it")
    if source.get("checkpoint_sha256") and sha256_file(found) != source["checkpoint_sha256"]:
        raise NotDynamic(f"{found} is not the checkpoint it was exported from (sha256 differs)")
    return found


def _exported(model_path: Path, size: Tuple[int, int], nominal: Tuple[int, int], work: Path) -> DynamicGraph:
    """Way 3: the source checkpoint exported again with a free height and width, NMS as the model's."""
    sidecar = read_sidecar(model_path, required=False) or {}
    checkpoint = _checkpoint(model_path, sidecar)
    if importlib.util.find_spec("torch") is None:
        raise NotDynamic(f"exporting its checkpoint {checkpoint.name} again needs the export extra (torch: "
                         "`pip install 'edge-detect[export]'`), which is not installed here")
    from edge.export.surgery import SurgeryConfig, surgery_file
    from edge.export.torch_export import ExportConfig, export_checkpoint

    export = sidecar.get("export") or {}
    nms = sidecar.get("nms") or {}
    config = ExportConfig(imgsz=[nominal, size], dynamic_hw=True, name=model_path.stem.split(".")[0],
                          opset=int(sidecar.get("opset") or export.get("opset") or 17),
                          **({"input_layout": export["input_layout"]} if export.get("input_layout") else {}))
    surgery = SurgeryConfig(nms=str(nms.get("type", "onnx")), score_threshold=float(nms.get("score_threshold", 0.25)),
                            iou_threshold=float(nms.get("iou_threshold", 0.45)),
                            max_detections=int(nms.get("max_detections", 100)),
                            class_agnostic=bool(nms.get("class_agnostic", False)))
    try:
        exported = export_checkpoint(checkpoint, work, config)[0].onnx_path
        out = work / (Path(exported).stem + ".nms.onnx")
        surgery_file(exported, out, surgery)
    except Exception as exc:  # noqa: BLE001 - ModelError (fixed anchors), MissingDependencyError, torch's own
        raise NotDynamic(f"exporting its checkpoint {checkpoint.name} with --dynamic-hw failed: {exc}") from None
    return DynamicGraph(out, f"{checkpoint.name} exported again with --dynamic-hw, NMS appended by edge surgery "
                        f"({surgery.nms}, score > {surgery.score_threshold:g}, IoU {surgery.iou_threshold:g})")


def dynamic_deploy_graph(ctx: ShipContext, model_path: Path, size: Tuple[int, int]) -> DynamicGraph:
    """A deploy graph of ``model_path`` with a free height and width (see the module docstring)."""
    onnx = import_onnx()
    model = onnx.load(str(model_path))
    if not all(d.HasField("dim_value") and d.dim_value > 0 for d in _hw_dims(model, ctx.input_format)):
        return DynamicGraph(model_path, "the deploy graph itself (its input has a free height and width)")
    work = ctx.work / "dynamic_hw"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    nominal = (int(ctx.input_format.height), int(ctx.input_format.width))
    reasons = []
    for way in (lambda: _freed(ctx, model_path, size, work), lambda: _exported(model_path, size, nominal, work)):
        try:
            return way()
        except NotDynamic as exc:
            reasons.append(str(exc))
    raise NotDynamic(f"{model_path.name} has a fixed {nominal[0]}x{nominal[1]} input and no graph with a free "
                     f"height and width can be made from it here: " + "; ".join(reasons) +
                     ". Export one with `edge export CHECKPOINT --dynamic-hw` + `edge surgery` and pass it with --model")


def check_dynamic_hw(ctx: ShipContext, model: str, precision: Optional[str], skip_reason: str,
                     size: Optional[Tuple[int, int]] = None) -> None:
    """``tensorrt dynamic H/W``: ``edge build DYNAMIC.onnx --imgsz HxW`` at a size other than the model's
    own, run through the TensorRT backend at that size and compared with ONNX Runtime at that size."""
    if ctx.hooks.build_config is None or ctx.hooks.open_engine is None:
        skip_reason = skip_reason or "these engine hooks cannot build the engines edge build ships (a test stand-in)"
    if skip_reason or precision is None:
        ctx.checks.append(Check(NAME, SKIP, f"not run: {skip_reason or 'no float precision is built here'}"))
        return
    size = size or other_size(int(ctx.input_format.height), int(ctx.input_format.width))
    try:
        graph = dynamic_deploy_graph(ctx, Path(model), size)
    except NotDynamic as exc:
        ctx.checks.append(Check(NAME, SKIP, f"not run: {exc}"))
        return
    fmt = dataclasses.replace(ctx.input_format, height=size[0], width=size[1])
    batches = make_batches(fmt, ctx.frames)
    details = {"dynamic_graph": str(graph.path), "dynamic_graph_from": graph.how, "built_size": list(size),
               "model_size": [int(ctx.input_format.height), int(ctx.input_format.width)]}
    try:
        expected = onnxruntime_outputs(str(graph.path), ctx.input_name, batches)
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime's shape errors come in several types
        ctx.checks.append(Check(NAME, FAIL, f"{graph.path.name} has a free height and width, but ONNX Runtime "
                                f"cannot run it at {size[0]}x{size[1]}: {str(exc).splitlines()[0][:200]}",
                                "re-export it with `edge export --dynamic-hw` (which verifies other sizes)", details))
        return

    def agrees(backend: Any) -> List[str]:
        got = (int(backend.input_format.height), int(backend.input_format.width))
        if got == tuple(size):
            return []
        return [f"the runtime would letterbox frames to {got[0]}x{got[1]} for this engine, built for "
                f"{size[0]}x{size[1]}: edge-run would fail every frame (input shape != run shape); the engine's "
                "sidecar and the runtime must agree on the size it was built for"]

    build_and_compare(ctx, NAME, ctx.build_config(str(graph.path), precision, imgsz=[tuple(size)]), precision,
                      batches=batches, expected=expected, extra_problems=agrees, details=details,
                      extra_fix="the engine's sidecar must record the size it was built for and the TensorRT backend "
                      "preprocess to it: update edge; until then build engines at the model's own size (edge build "
                      "without --imgsz)")
