"""The INT8 accuracy gate: measured mAP decides which precision ``edge quantize`` hands over.

Every candidate graph is scored the way ``edge eval MODEL.onnx`` scores it (``edge.runtime.predictors``: the
runtime's letterbox preprocessing, ONNX Runtime, ``edge.nms`` with score > 0.001, IoU 0.5, 100 per image;
then ``edge.evaluate.evaluate_detections``) on a validation split. Preprocessed inputs are computed once
and shared by all candidates; the FP32 result is identical to ``edge eval`` on the source ONNX.

Steps (each one recorded in the JSON report, with mAP50, mAP50-95, the drop in mAP50 points against
FP32, output errors against FP32 and seconds)::

    1. FP32 (the source graph): the reference.
    2. FP16.
    3. INT8, every weighted layer quantized. Drop <= budget (default 1.0 point): hand over INT8.
    4. Over budget: per-layer sensitivity. The weighted layers, in graph order, are split into at most
       ``max_groups`` contiguous groups; each group is measured alone: ``quantize-one`` (only that group
       quantized: its drop against FP32) or ``exclude-one`` (all but that group: the mAP it wins back).
       Ties are broken by the groups' effect on the raw outputs (mean |score| error against FP32).
    5. Mixed precision: the most sensitive groups are kept in float one by one, re-quantizing and
       re-scoring each time, until the drop is within budget (hand over that mixed INT8 graph) or more
       than ``max_float_fraction`` of the weighted layers would be float.
    6. That failing: FP16, saying so, if FP16 is itself within budget; otherwise the model is refused.

One mAP50 point is 0.01 of mAP50 (mAP50 is reported in [0, 1]). With ``precision="fp16"`` only steps 1, 2
and the budget check of FP16 run. FP16 is scored on ONNX Runtime's CPU, which runs fp16 graphs by
casting each node lacking an fp16 kernel to float32: weights and tensors between nodes are rounded to
fp16, arithmetic inside a node is float32 (TensorRT's fp16 kernels accumulate in fp16 or fp32 by tactic).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edge.errors import DataError, EdgeError, ModelError
from edge.export.prenms import EvalSettings, OnnxPreNmsPredictor
from edge.export.quantize.compare import output_errors

log = logging.getLogger(__name__)

SENSITIVITY_MODES = ("quantize-one", "exclude-one")
DEFAULT_MAX_DROP = 1.0
DECISIONS = ("int8", "int8-mixed", "fp16", "fp16-fallback", "refused")


@dataclass
class GateConfig:
    """Settings of the accuracy gate.

    val_data / val_split: the dataset YAML and split scored (never the calibration images, ideally).
    val_count: score only the first N images of the split (None: all).
    max_drop: the budget, in mAP50 points (1.0 = 0.01 mAP50) below FP32.
    sensitivity: "quantize-one" or "exclude-one" (see the module docstring).
    max_groups: at most this many layer groups are probed (contiguous runs of weighted layers).
    max_float_fraction: mixed precision keeps at most this share of the weighted layers in float.
    settings: postprocessing for scoring (``edge.runtime.predictors.EvalSettings``: what ``edge eval`` uses).
    threads: ONNX Runtime intra-op threads (0: all cores).
    """

    val_data: str
    val_split: str = "val"
    val_count: Optional[int] = None
    max_drop: float = DEFAULT_MAX_DROP
    sensitivity: str = "quantize-one"
    max_groups: int = 16
    max_float_fraction: float = 0.5
    settings: EvalSettings = field(default_factory=EvalSettings)
    threads: int = 0

    def validate(self) -> GateConfig:
        if not self.val_data:
            raise EdgeError("the accuracy gate needs a validation dataset (--val-data DATA.yaml)")
        if not (self.max_drop >= 0 and math.isfinite(self.max_drop)):
            raise EdgeError(f"--max-drop must be a non-negative number of mAP50 points, got {self.max_drop}")
        if self.sensitivity not in SENSITIVITY_MODES:
            raise EdgeError(f"sensitivity {self.sensitivity!r} is not one of {list(SENSITIVITY_MODES)}")
        if int(self.max_groups) < 1:
            raise EdgeError(f"max_groups must be >= 1, got {self.max_groups}")
        if not 0.0 <= float(self.max_float_fraction) <= 1.0:
            raise EdgeError(f"max_float_fraction must be in [0, 1], got {self.max_float_fraction}")
        if self.val_count is not None and int(self.val_count) < 1:
            raise EdgeError(f"--val-count must be >= 1, got {self.val_count}")
        self.settings.validate()
        return self


def check_gate_splits(val_data: Any, val_split: Optional[str], calib_data: Any = None,
                      calib_split: Optional[str] = None) -> Optional[str]:
    """Before anything is calibrated: the gate's split and the calibration split exist in their dataset YAMLs
    (one DataError naming every missing split and the splits each YAML has). Returns the gate's split:
    ``val_split``, or with None the default ``edge train`` validates on (``edge.data.splits.resolve_val_split``:
    the YAML's ``val``; where a training run would carve part of its training split instead, a DataError
    asking for ``--val-split``, as the gate has no training split to carve from). None without ``val_data``."""
    from edge.data import load_config
    from edge.data.splits import resolve_val_split

    problems: List[str] = []
    resolved = val_split
    if calib_data is not None and calib_split:
        calib_cfg = load_config(calib_data)
        if calib_split not in calib_cfg.splits:
            problems.append(f"--calib {calib_data} has no split {calib_split!r} (it has "
                            f"{', '.join(calib_cfg.splits)}); pick one with --calib-split")
    if val_data is not None:
        try:
            resolved = resolve_val_split(load_config(val_data), val_split, None, skip="--no-gate").split
        except DataError as exc:
            problems.append(f"the accuracy gate (--val-data): {exc}")
    if len(problems) == 1:
        raise DataError(problems[0])
    if problems:
        raise DataError("\n".join([f"{len(problems)} problems with the splits; fix them all:"] +
                                   [f"  - {p}" for p in problems]))
    return resolved


def gate_conventions_problem(sidecar: Dict[str, Any]) -> Optional[str]:
    """Why the accuracy gate cannot score this model, or None: the gate reads ``boxes`` as xyxy input pixels
    and ``scores`` as per-class scores without a background column, which the sidecar of ``edge export``
    (carried forward by later stages) states in its ``outputs`` block."""
    outputs = sidecar.get("outputs") if isinstance(sidecar, dict) else None
    if not isinstance(outputs, dict) or "boxes" not in outputs or "scores" not in outputs:
        return ("its sidecar does not describe the boxes and scores outputs (a model edge export did not write?)")
    boxes, scores = outputs.get("boxes") or {}, outputs.get("scores") or {}
    if boxes.get("format", "xyxy") != "xyxy" or boxes.get("normalized", False) \
            or boxes.get("units", "input pixels") != "input pixels":
        return f"its boxes are {boxes.get('format')} {boxes.get('units')} (normalized: {boxes.get('normalized')})"
    if scores.get("background_column", False):
        return "its scores have a background column"
    return None


# ----------------------------------------------------------------------------------------------- scoring


class ValidationSet:
    """A split's images, preprocessed once into a model's input format.

    ``dataset``: the (possibly truncated) ``edge.data.records.Dataset``; ``inputs[i]`` the model input
    (batch 1) of ``dataset.records[i]`` and ``params[i]`` its letterbox parameters.
    """

    def __init__(self, dataset: Any, prepare: Any) -> None:
        from edge.data.images import read_image

        if not dataset.records:
            raise DataError(f"dataset {dataset.name!r} split {dataset.split!r} has no images to score")
        self.dataset = dataset
        self.inputs: List[np.ndarray] = []
        self.params: List[Any] = []
        for record in dataset.records:
            x, p = prepare(read_image(record.path))
            self.inputs.append(x)
            self.params.append(p)

    @classmethod
    def load(cls, config: GateConfig, prepare: Any) -> ValidationSet:
        from edge.data import load_dataset

        dataset = load_dataset(config.val_data, config.val_split)
        if config.val_count is not None and config.val_count < len(dataset.records):
            dataset = replace(dataset, records=list(dataset.records[: int(config.val_count)]))
        return cls(dataset, prepare)

    def __len__(self) -> int:
        return len(self.inputs)


@dataclass
class Evaluation:
    """One candidate's score. ``errors``: against the FP32 raw outputs (see ``compare.output_errors``)."""

    name: str
    map50: float
    map50_95: Optional[float]
    num_detections: int
    seconds: float
    errors: Dict[str, float] = field(default_factory=dict)

    def drop_points(self, reference: Evaluation) -> float:
        return 100.0 * (reference.map50 - self.map50)

    def to_dict(self, reference: Optional[Evaluation] = None) -> Dict[str, Any]:
        out: Dict[str, Any] = {"model": self.name, "map50": round(self.map50, 6),
                               "map50_95": None if self.map50_95 is None else round(self.map50_95, 6),
                               "detections": self.num_detections, "seconds": round(self.seconds, 2)}
        if reference is not None:
            out["drop_points"] = round(self.drop_points(reference), 4)
        out.update({k: float(f"{v:.6g}") for k, v in self.errors.items()})
        return out


class Evaluator:
    """Scores candidate graphs (``onnx.ModelProto``) on a ``ValidationSet``; the first scored is the
    reference whose raw outputs the others' ``errors`` compare against."""

    def __init__(self, valset: ValidationSet, sidecar: Dict[str, Any], settings: EvalSettings, threads: int = 0):
        self.valset = valset
        self.sidecar = dict(sidecar)
        self.settings = settings
        self.threads = int(threads)
        self._reference: Optional[List[Dict[str, np.ndarray]]] = None

    def evaluate(self, name: str, model: Any) -> Evaluation:
        from edge.evaluate import evaluate_detections
        from edge.metrics import ImageDetections

        start = time.perf_counter()
        predictor = OnnxPreNmsPredictor(model, sidecar=self.sidecar, settings=self.settings, threads=self.threads)
        dataset = self.valset.dataset
        num_classes = len(dataset.class_names)
        raw: List[Dict[str, np.ndarray]] = []
        detections: Dict[Any, Any] = {}
        count = 0
        try:
            for record, x, params in zip(dataset.records, self.valset.inputs, self.valset.params):
                boxes, scores = predictor.infer(x)
                if scores.shape[-1] != num_classes:
                    raise ModelError(
                        f"the model scores {scores.shape[-1]} classes but {dataset.name!r} has {num_classes} "
                        f"({dataset.class_names}); validate on the dataset the model was trained for")
                raw.append({"boxes": boxes, "scores": scores})
                b, s, c = predictor.postprocess(boxes, scores, params)
                detections[record.image_id] = ImageDetections(b, s, c)
                count += len(s)
        finally:
            predictor.close()
        result = evaluate_detections(dataset, detections)
        if result.map50 is None:
            raise DataError(f"{dataset.name!r}/{dataset.split} has no ground-truth boxes: mAP50 is undefined, so "
                            "the gate cannot judge accuracy; pick a split with annotations")
        errors: Dict[str, float] = {}
        if self._reference is None:
            self._reference = raw
        else:
            errors = output_errors(raw, self._reference)
        ev = Evaluation(name, float(result.map50), result.map50_95, count, time.perf_counter() - start, errors)
        log.info("gate: %-28s mAP50 %.4f  mAP50-95 %s  (%.1f s)", name, ev.map50,
                 "n/a" if ev.map50_95 is None else f"{ev.map50_95:.4f}", ev.seconds)
        return ev


# ----------------------------------------------------------------------------------------------- the gate


@dataclass
class GateOutcome:
    """The gate's decision, the graph to hand over (None when refused), the layers kept float, the report."""

    decision: str
    model: Any
    float_nodes: List[str]
    message: str
    report: Dict[str, Any]


def layer_groups(names: Sequence[str], max_groups: int) -> List[List[str]]:
    """Contiguous groups of ``names`` (graph order): one layer each when there are at most ``max_groups``,
    else ``max_groups`` runs of nearly equal length."""
    n = len(names)
    if n <= max_groups:
        return [[x] for x in names]
    bounds = [int(round(i * n / max_groups)) for i in range(max_groups + 1)]
    return [list(names[bounds[i]:bounds[i + 1]]) for i in range(max_groups) if bounds[i + 1] > bounds[i]]


def _overlap(calib: Any, dataset: Any) -> int:
    if calib is None:
        return 0
    val = {str(Path(r.path).resolve()) for r in dataset.records}
    return sum(1 for p in calib.paths if str(Path(p).resolve()) in val)


def _validation(model: Any, config: GateConfig, sidecar: Dict[str, Any],
                calib: Any) -> Tuple[Evaluator, Dict[str, Any]]:
    """The evaluator of the validation split (preprocessed once for ``model``) and the report's
    ``validation`` entry; warns when the model's classes differ from the dataset's or calibration images
    are also scored."""
    reference_predictor = OnnxPreNmsPredictor(model, sidecar=sidecar, settings=config.settings, threads=config.threads)
    try:
        valset = ValidationSet.load(config, reference_predictor.prepare)
    finally:
        reference_predictor.close()
    evaluator = Evaluator(valset, sidecar, config.settings, config.threads)
    model_classes = [str(c) for c in (sidecar.get("class_names") or sidecar.get("classes") or [])]
    mismatch = bool(model_classes) and model_classes != list(valset.dataset.class_names)
    if mismatch:
        log.warning("the model's classes %s differ from the validation dataset's %s: class i of the model is scored "
                    "as the dataset's class i, so the gate's mAP figures mean little", model_classes,
                    list(valset.dataset.class_names))
    overlap = _overlap(calib, valset.dataset)
    if overlap:
        log.warning("%d of the %d calibration images are also in the validation split %r: the gate's figures "
                    "are then a little optimistic", overlap, len(calib), config.val_split)
    validation = {"data": str(config.val_data), "split": config.val_split, "images": len(valset),
                  "calibration_images_also_validated": overlap, "class_names_differ": mismatch}
    return evaluator, validation


class _GateRun:
    """One run of the gate: the report it writes (``steps`` in order), the FP32 reference every step is
    compared with, the budget in mAP50 points, and the FP16 candidate once scored (``score_fp16``)."""

    def __init__(self, report: Dict[str, Any], fp32: Evaluation, budget: float) -> None:
        self.report = report
        self.steps: List[Dict[str, Any]] = report["steps"]
        self.fp32 = fp32
        self.budget = budget
        self.fp16_model: Any = None
        self.fp16: Any = None  # the Evaluation FP16 is judged by

    def step(self, kind: str, ev: Evaluation, **extra: Any) -> Dict[str, Any]:
        entry = {"step": kind}
        entry.update(ev.to_dict(self.fp32))
        entry.update(extra)
        self.steps.append(entry)
        return entry

    def score_fp16(self, evaluator: Evaluator, fp16_model: Any, fp16_simulation: Any) -> None:
        """Score the FP16 graph (and its simulation, when given: FP16 is then judged by the worse)."""
        self.fp16_model = fp16_model
        fp16 = evaluator.evaluate("fp16", fp16_model)
        self.step("fp16", fp16, runtime="the fp16 graph on ONNX Runtime CPU (fp32 islands: mostly weight rounding)")
        if fp16_simulation is not None:
            fp16_sim = evaluator.evaluate("fp16 (simulated)", fp16_simulation)
            self.step("fp16-simulated", fp16_sim,
                      runtime="fp32 graph with fp16 weights and every tensor rounded to fp16")
            if fp16_sim.map50 < fp16.map50:
                fp16 = fp16_sim
        self.fp16 = fp16

    def finish(self, decision: str, chosen: Any, floats: List[str], message: str,
               final: Optional[Evaluation]) -> GateOutcome:
        report = self.report
        report["decision"] = decision
        report["message"] = message
        report["float_layers"] = list(floats)
        if final is not None:
            report["final"] = final.to_dict(self.fp32)
        report["fp32"] = self.fp32.to_dict()
        return GateOutcome(decision, chosen, list(floats), message, report)

    def fp16_only(self) -> GateOutcome:
        """The verdict of ``precision="fp16"``: FP16 within budget, or refused."""
        fp16, fp32, budget = self.fp16, self.fp32, self.budget
        if fp16.drop_points(fp32) <= budget:
            return self.finish("fp16", self.fp16_model, [], f"FP16 drops {fp16.drop_points(fp32):.2f} mAP50 points "
                               f"(budget {budget:g})", fp16)
        return self.finish("refused", None, [], f"FP16 drops {fp16.drop_points(fp32):.2f} mAP50 points, over the "
                           f"{budget:g}-point budget", fp16)

    def fp16_fallback(self, why: str) -> GateOutcome:
        fp16, fp32, budget = self.fp16, self.fp32, self.budget
        if fp16.drop_points(fp32) <= budget:
            return self.finish("fp16-fallback", self.fp16_model, [], f"{why}; falling back to FP16 (drop "
                               f"{fp16.drop_points(fp32):.2f} points, within the {budget:g}-point budget)", fp16)
        return self.finish("refused", None, [], f"{why}; FP16 also drops {fp16.drop_points(fp32):.2f} points "
                           f"(budget {budget:g}): no precision below FP32 keeps the accuracy", fp16)


def _sensitivity(run: _GateRun, evaluator: Evaluator, quantizer: Any, config: GateConfig, keep: List[str],
                 int8: Evaluation) -> Tuple[List[List[str]], List[int]]:
    """Per-layer sensitivity (see the module docstring): the layer groups and their order, most sensitive
    first; records each probe and the ranking in the report."""
    fp32, report = run.fp32, run.report
    weighted = [n for n in quantizer.partition.weighted if n not in set(keep)]
    groups = layer_groups(weighted, int(config.max_groups))
    report["sensitivity"] = {"mode": config.sensitivity, "groups": len(groups), "layers": len(weighted)}
    scores: List[Tuple[float, float]] = []
    for i, group in enumerate(groups):
        if config.sensitivity == "quantize-one":
            candidate = quantizer.quantize(keep_float=keep, only=group)
            ev = evaluator.evaluate(f"sensitivity {i} (only)", candidate)
            value = ev.drop_points(fp32)
            tie = ev.errors.get("mean_score_error", 0.0)
        else:
            candidate = quantizer.quantize(keep_float=keep + group)
            ev = evaluator.evaluate(f"sensitivity {i} (excluded)", candidate)
            value = ev.map50 * 100.0 - int8.map50 * 100.0
            tie = int8.errors.get("mean_score_error", 0.0) - ev.errors.get("mean_score_error", 0.0)
        scores.append((value, tie))
        run.step("sensitivity", ev, group=i, layers=list(group), sensitivity_points=round(value, 4))
    order = sorted(range(len(groups)), key=lambda i: (-scores[i][0], -scores[i][1], i))
    report["ranking"] = [{"group": i, "layers": groups[i], "sensitivity_points": round(scores[i][0], 4),
                          "output_effect": float(f"{scores[i][1]:.6g}")} for i in order]
    return groups, order


def _mixed_precision(run: _GateRun, evaluator: Evaluator, quantizer: Any, config: GateConfig, keep: List[str],
                     groups: List[List[str]], order: List[int], drop: float) -> GateOutcome:
    """Keep the most sensitive groups in float, one more at a time, until the drop is within budget (the
    mixed INT8 graph) or the float share would pass ``max_float_fraction`` (then the FP16 fallback)."""
    fp32, report, budget = run.fp32, run.report, run.budget
    total = len(quantizer.partition.weighted)
    limit = int(math.floor(float(config.max_float_fraction) * total + 1e-9))
    floats = list(keep)
    best: Optional[Tuple[Evaluation, Any, List[str]]] = None
    for i in order:
        if len(floats) + len(groups[i]) > limit:
            report["mixed_stopped"] = (f"keeping group {i} too would make {len(floats) + len(groups[i])} of {total} "
                                       f"weighted layers float, over the limit of {limit} "
                                       f"(max_float_fraction {config.max_float_fraction:g})")
            break
        floats = floats + groups[i]
        candidate = quantizer.quantize(keep_float=floats)
        ev = evaluator.evaluate(f"mixed ({len(floats)} float)", candidate)
        run.step("mixed", ev, float_layers=list(floats))
        if best is None or ev.map50 > best[0].map50:
            best = (ev, candidate, list(floats))
        if ev.drop_points(fp32) <= budget:
            return run.finish("int8-mixed", candidate, floats,
                              f"INT8 dropped {drop:.2f} mAP50 points (budget {budget:g}); keeping {len(floats)} of "
                              f"{total} weighted layers in float ({', '.join(floats[:4])}"
                              f"{', ...' if len(floats) > 4 else ''}) brings the drop to "
                              f"{ev.drop_points(fp32):.2f} points", ev)
    report.setdefault("mixed_stopped", "every layer group allowed in float was tried")
    tried = "" if best is None else (f"; the best mixed graph ({len(best[2])} float layers) still drops "
                                     f"{best[0].drop_points(fp32):.2f}")
    return run.fp16_fallback(f"INT8 drops {drop:.2f} mAP50 points (budget {budget:g}) and mixed precision did not "
                             f"fix it{tried}")


def run_gate(
    model: Any,
    fp16_model: Any,
    quantizer: Any,
    config: GateConfig,
    *,
    precision: str = "int8",
    sidecar: Optional[Dict[str, Any]] = None,
    keep_float: Sequence[str] = (),
    calib: Any = None,
    fp16_simulation: Any = None,
) -> GateOutcome:
    """Run the gate (see the module docstring) and decide.

    Args:
        model: the FP32 source graph (``onnx.ModelProto``).
        fp16_model: its FP16 graph.
        quantizer: an ``edge.export.quantize.int8.Int8Quantizer`` of ``model`` (None with ``precision="fp16"``).
        keep_float: weighted layers the user keeps float in every INT8 candidate.
        calib: the ``CalibrationSource`` (only to report how many calibration images are also scored).
        fp16_simulation: ``edge.export.quantize.fp16.fp16_simulation`` of the FP16 graph; when given it is scored
            too and FP16 is judged by the worse of the two figures.
    """
    config.validate()
    if precision not in ("int8", "fp16"):
        raise EdgeError(f"precision {precision!r} is not int8 or fp16")
    if precision == "int8" and quantizer is None:
        raise EdgeError("the INT8 gate needs the Int8Quantizer of the model")
    sidecar = dict(sidecar or {})
    budget = float(config.max_drop)
    evaluator, validation = _validation(model, config, sidecar, calib)
    steps: List[Dict[str, Any]] = []
    report: Dict[str, Any] = {
        "metric": "mAP50 (Pascal VOC all-points AP at IoU 0.5, mean over classes), as edge eval reports it",
        "budget_points": budget,
        "requested": precision,
        "validation": validation,
        "settings": config.settings.to_dict(),
        "steps": steps,
    }

    fp32 = evaluator.evaluate("fp32", model)
    steps.append(dict({"step": "fp32"}, **fp32.to_dict()))
    run = _GateRun(report, fp32, budget)
    run.score_fp16(evaluator, fp16_model, fp16_simulation)
    if precision == "fp16":
        return run.fp16_only()

    keep = list(keep_float)
    int8_model = quantizer.quantize(keep_float=keep)
    int8 = evaluator.evaluate("int8", int8_model)
    run.step("int8", int8, float_layers=keep)
    drop = int8.drop_points(fp32)
    if drop <= budget:
        return run.finish("int8", int8_model, keep, f"INT8 drops {drop:.2f} mAP50 points (budget {budget:g})", int8)

    groups, order = _sensitivity(run, evaluator, quantizer, config, keep, int8)
    return _mixed_precision(run, evaluator, quantizer, config, keep, groups, order, drop)
