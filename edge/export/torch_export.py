"""``edge export``: a PyTorch detector -> pre-NMS ONNX graphs (one per resolution) + JSON sidecars.

Each graph has one input and two outputs::

    images   uint8 [B, H, W, 3] BGR letterboxed frames (``uint8-nhwc-bgr``, default; cast, channel swap,
             normalization and NHWC->NCHW inside the graph, see ``edge.export.preprocess``), or
             float32 [B, 3, H, W] RGB normalized (``float-nchw``)
    boxes    float32 [B, N, 4] x1,y1,x2,y2 in input pixels (decode is in the graph)
    scores   float32 [B, N, C] per-class scores, activations applied, no background column

N depends on the resolution (anchors / default boxes are laid out per feature-map cell), so each size is
exported from the model rebuilt for that size (``ExportSource.model_for_size``: ``build_model`` with the
card's config and the new ``input_size``, the same state dict). ``--dynamic-hw`` instead writes one graph
with free H and W, where the family allows it (YOLO: grids from the map shapes, anchors in pixels); SSD
and RetinaNet have default boxes fixed to one size and say so.

Every graph verifies itself before it is written: ONNX Runtime runs it on sample inputs (random frames,
and real images letterboxed with ``edge.letterbox`` when given) and each output must match the traced
PyTorch module within ``tolerance`` (``max|onnx - torch| / max(1, max|torch|)`` <= 1e-4 for fp32), else
``ModelError`` and no file is left behind: the graph lives in memory/temporary files until it has passed
``onnx.checker``, shape inference and the comparison, then it is written atomically (temporary name,
fsync, rename). Simplification (onnxslim) is re-verified the same way and dropped with a warning when it
breaks anything.

The source is an ``ExportSource`` (``edge.export.export_types``): ``source_from_checkpoint`` (a
checkpoint from ``edge train``) or ``source_from_model`` (an in-memory module).
``edge.export.torchvision_loading`` builds an ``ExportSource`` whose ``model_for_size`` returns a module
with the same contract
(float32 [B, 3, H, W] normalized RGB -> (boxes [B, N, 4] xyxy input pixels, scores [B, N, C])).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import inspect
import json
import logging
import os
import platform
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from edge.artifacts import LOW_SPACE_BYTES, PRE_NMS_OUTPUTS, free_bytes
from edge.errors import DataError, ModelError, OutputError, import_optional
from edge.export.export_types import ExportResult, ExportSource, Size, parse_size
from edge.export.preprocess import (
    INPUT_LAYOUTS,
    INPUT_NAME,
    LAYOUT_UINT8_NHWC_BGR,
    RUNTIME_LAYOUT_NAMES,
    NormalizationSpec,
    frames_for_layout,
    input_description,
    letterboxed_frames,
    sample_frames,
    wrap_with_preprocessing,
)
from edge.export.simplify import SimplifyOutcome, simplify_and_verify
from edge.export.verify import (
    DEFAULT_TOLERANCE,
    Sample,
    VerificationReport,
    check_graph,
    expect_outputs,
    output_shapes,
    verify_samples,
    warn_if_input_independent,
)

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17  # TensorRT 8.5 (JetPack 5) parses up to 17; TensorRT 8.2 (JetPack 4.6) needs <= 13
MIN_OPSET = 11
MAX_OPSET = 20  # the TorchScript exporter's ceiling
MAX_VERIFY_IMAGES = 8
PathLike = Union[str, "os.PathLike[str]"]


# ------------------------------------------------------------------------------------------------ config


@dataclass
class ExportConfig:
    """Options of one ``edge export`` run.

    imgsz: (H, W) sizes to export, one graph each; empty -> the source's input size. With
        ``dynamic_hw`` one graph is written, nominal size ``imgsz[0]``, verified at every listed size.
    batch: static batch size (ignored with ``dynamic_batch``).
    input_layout: "uint8-nhwc-bgr" (preprocessing in the graph) or "float-nchw".
    tolerance: allowed ``max|onnx - torch| / max(1, max|torch|)`` per output (fp32: 1e-4).
    verify_images: real images (BGR files) letterboxed into extra verification samples.
    random_samples: number of random-frame samples per size (at least 1; 2 with a dynamic batch: B=1, 2).
    name: file stem; default the architecture name. Files are NAME_HxW.onnx (NAME_dynamic.onnx with
        ``dynamic_hw``) plus the .json sidecar beside each.
    pad_value: letterbox pad value of the real verification images and the sidecar; None -> the
        source's (the model card's, 114 by default).
    """

    imgsz: List[Size] = field(default_factory=list)
    batch: int = 1
    dynamic_batch: bool = False
    dynamic_hw: bool = False
    opset: int = DEFAULT_OPSET
    input_layout: str = LAYOUT_UINT8_NHWC_BGR
    simplify: bool = True
    simplify_tool: str = "auto"
    tolerance: float = DEFAULT_TOLERANCE
    verify_images: List[Path] = field(default_factory=list)
    random_samples: int = 2
    name: Optional[str] = None
    pad_value: Optional[int] = None
    seed: int = 0

    def validate(self) -> ExportConfig:
        self.imgsz = [parse_size(s) for s in self.imgsz]
        if len(set(self.imgsz)) != len(self.imgsz):
            raise ModelError(f"--imgsz lists a size twice: {[f'{h}x{w}' for h, w in self.imgsz]}")
        if int(self.batch) < 1:
            raise ModelError(f"batch must be >= 1, got {self.batch}")
        if self.dynamic_batch and int(self.batch) != 1:
            raise ModelError(f"--batch {self.batch} and --dynamic-batch exclude each other: a graph has either a "
                             "fixed batch or a free one")
        if not MIN_OPSET <= int(self.opset) <= MAX_OPSET:
            raise ModelError(f"opset {self.opset} is outside the supported {MIN_OPSET}..{MAX_OPSET}; use 17 for "
                             "TensorRT >= 8.5 (JetPack 5/6), 13 for TensorRT 8.2 (JetPack 4.6)")
        if self.input_layout not in INPUT_LAYOUTS:
            raise ModelError(f"input layout {self.input_layout!r} is unknown; expected one of {list(INPUT_LAYOUTS)}")
        if not (self.tolerance > 0 and np.isfinite(self.tolerance)):
            raise ModelError(f"tolerance must be a positive number, got {self.tolerance}")
        if int(self.random_samples) < 1:
            raise ModelError(f"random_samples must be >= 1, got {self.random_samples}")
        if self.pad_value is not None and not 0 <= int(self.pad_value) <= 255:
            raise ModelError(f"pad value {self.pad_value} is outside 0..255")
        if self.name is not None and (not self.name or any(c in self.name for c in "/\\")):
            raise ModelError(f"--name {self.name!r} must be a plain file stem (no slashes)")
        self.verify_images = [Path(p) for p in self.verify_images]
        return self


# ------------------------------------------------------------------------------------------------ sources


def _torch() -> Any:
    return import_optional("torch", "torch", "exporting a PyTorch model to ONNX", "pip install 'edge-detect[export]'")


def _rebuilder(model: Any, arch: str, config: Dict[str, Any]) -> Callable[[Size], Any]:
    """model_for_size for a registry detector: the same weights in a model built for another input size."""

    def model_for_size(size: Size) -> Any:
        current = tuple(int(v) for v in getattr(model, "input_size", (-1, -1)))
        if current == tuple(size):
            return model.eval()
        from edge.models import build_model

        cfg = dict(config)
        cfg["input_size"] = [int(size[0]), int(size[1])]
        try:
            other = build_model(arch, **cfg)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"cannot rebuild {arch!r} for a {size[0]}x{size[1]} input: {exc}") from None
        try:
            other.load_state_dict(model.state_dict())
        except RuntimeError as exc:
            raise ModelError(f"{arch!r} weights do not fit the model rebuilt for {size[0]}x{size[1]}: "
                             f"{str(exc).splitlines()[0]}; export at the trained size instead") from None
        return other.eval()

    return model_for_size


def source_from_model(model: Any, class_names: Sequence[str], *, arch: Optional[str] = None,
                      config: Optional[Dict[str, Any]] = None, card: Optional[Dict[str, Any]] = None,
                      checkpoint: Optional[PathLike] = None, checkpoint_sha256: Optional[str] = None,
                      pad_value: int = 114) -> ExportSource:
    """An ``ExportSource`` for an in-memory ``edge.models`` detector (``arch``, ``config``, ``input_size``,
    ``normalization`` attributes); other sizes are rebuilt with ``build_model(arch, **config)``."""
    arch = arch or getattr(model, "arch", "") or type(model).__name__
    config = dict(config if config is not None else getattr(model, "config", {}) or {})
    names = [str(n) for n in class_names]
    num_classes = getattr(model, "num_classes", None)
    if num_classes is not None and int(num_classes) != len(names):
        raise ModelError(f"the model has {num_classes} classes but {len(names)} class names were given ({names})")
    return ExportSource(
        arch=str(arch),
        class_names=names,
        input_size=parse_size(list(model.input_size)),
        normalization=NormalizationSpec.from_any(model.normalization),
        model_for_size=_rebuilder(model.eval(), str(arch), config),
        config=config,
        card=dict(card or {}),
        checkpoint=Path(checkpoint) if checkpoint is not None else None,
        checkpoint_sha256=checkpoint_sha256,
        pad_value=int(pad_value),
    )


def source_from_checkpoint(path: PathLike) -> ExportSource:
    """Load a checkpoint written by ``edge train`` (``edge.train.checkpoint``) as an ``ExportSource``."""
    from edge.artifacts import sha256_file
    from edge.train.checkpoint import load_checkpoint

    p = Path(path)
    if p.is_dir():
        p = p / "last.pt" if not (p / "best.pt").exists() else p / "best.pt"
    model, card = load_checkpoint(p)
    names = card.get("class_names") or card.get("classes")
    if not names:
        raise ModelError(f"{p}: the model card has no class_names; expected a card written by `edge train`")
    pad = int((card.get("input") or {}).get("pad_value", 114))
    return source_from_model(model, names, arch=card.get("arch"), config=card.get("config"), card=card,
                             checkpoint=p, checkpoint_sha256=sha256_file(p), pad_value=pad)


# ------------------------------------------------------------------------------------------------ samples


def _read_images(paths: Sequence[Path]) -> List[np.ndarray]:
    from edge.data.images import IMAGE_EXTENSIONS, list_images, read_image

    files: List[Path] = []
    for p in paths:
        if p.is_dir():
            found = list_images(p)
            if not found:
                raise DataError(f"--verify-images folder {p} holds no images (looked for {IMAGE_EXTENSIONS})")
            files.extend(found)
        elif p.exists():
            files.append(p)
        else:
            raise DataError(f"--verify-images {p} does not exist; pass image files or a folder of images")
    if len(files) > MAX_VERIFY_IMAGES:
        log.info("verifying on the first %d of %d images", MAX_VERIFY_IMAGES, len(files))
        files = files[:MAX_VERIFY_IMAGES]
    return [read_image(f) for f in files]


def _pad(config: ExportConfig) -> int:
    return 114 if config.pad_value is None else int(config.pad_value)


def _batch_sizes(config: ExportConfig) -> List[int]:
    if config.dynamic_batch:
        return [1 + (i % 2) for i in range(max(2, config.random_samples))]
    return [int(config.batch)] * int(config.random_samples)


def sample_inputs(config: ExportConfig, sizes: Sequence[Size], normalization: NormalizationSpec,
                  images: Sequence[np.ndarray] = ()) -> List[Tuple[str, np.ndarray]]:
    """(name, graph input array) verification cases: random frames at each size (batch sizes per
    ``_batch_sizes``), then real ``images`` letterboxed at each size."""
    cases: List[Tuple[str, np.ndarray]] = []
    seed = int(config.seed)
    for size in sizes:
        for i, b in enumerate(_batch_sizes(config)):
            frames = sample_frames(b, size, seed=seed + 1000 * i + size[0] * 7 + size[1])
            cases.append((f"random{i} {size[0]}x{size[1]} b{b}",
                          frames_for_layout(frames, config.input_layout, normalization)))
        if images:
            batch = 2 if config.dynamic_batch else int(config.batch)
            for j, frames in enumerate(letterboxed_frames(images, size, batch, _pad(config))):
                cases.append((f"images{j} {size[0]}x{size[1]} b{batch}",
                              frames_for_layout(frames, config.input_layout, normalization)))
    return cases


def torch_outputs(module: Any, inputs: np.ndarray) -> Dict[str, np.ndarray]:
    """Run the traced module on one graph input; returns {"boxes", "scores"} as float32 numpy."""
    torch = _torch()
    with torch.no_grad():
        out = module(torch.from_numpy(np.ascontiguousarray(inputs)))
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise ModelError(f"the model's forward returned {type(out).__name__}; expected (boxes [B,N,4], "
                         "scores [B,N,C])")
    boxes, scores = (t.detach().cpu().numpy() for t in out)
    if boxes.ndim != 3 or boxes.shape[-1] != 4:
        raise ModelError(f"the model's boxes have shape {list(boxes.shape)}; expected [B, N, 4] xyxy")
    if scores.ndim != 3 or scores.shape[:2] != boxes.shape[:2]:
        raise ModelError(f"the model's scores have shape {list(scores.shape)}; expected [B, N, C] with B, N of "
                         f"boxes {list(boxes.shape)}")
    return {"boxes": boxes, "scores": scores}


def reference_samples(module: Any, cases: Sequence[Tuple[str, np.ndarray]]) -> List[Sample]:
    """Verification samples with PyTorch's outputs as the reference."""
    return [Sample(name=name, inputs={INPUT_NAME: x}, expected=torch_outputs(module, x)) for name, x in cases]


def verify_against_torch(onnx_model: Any, module: Any, cases: Sequence[Tuple[str, np.ndarray]],
                         tolerance: float = DEFAULT_TOLERANCE, what: str = "exported graph") -> VerificationReport:
    """Run ``onnx_model`` (path, bytes or ModelProto) in ONNX Runtime and ``module`` in PyTorch on ``cases``;
    raise ModelError when any output's ``max|onnx - torch| / max(1, max|torch|)`` exceeds ``tolerance``."""
    return verify_samples(onnx_model, reference_samples(module, cases), tolerance, what=what)


# ------------------------------------------------------------------------------------------------ export


def _tool_versions(simplify: Optional[SimplifyOutcome]) -> Dict[str, str]:
    import onnx
    import onnxruntime

    import edge

    torch = _torch()
    versions = {"edge": edge.__version__, "torch": torch.__version__.split("+")[0], "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__, "python": platform.python_version()}
    if simplify is not None and simplify.tool:
        versions[simplify.tool] = simplify.tool_version or "?"
    return versions


@contextlib.contextmanager
def _temporary_path(folder: Path, stem: str) -> Iterator[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=".onnx.tmp", dir=str(folder))
    os.close(fd)
    try:
        yield Path(tmp)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _torch_onnx_export(module: Any, example: Any, path: Path, config: ExportConfig) -> List[str]:
    """TorchScript-based ``torch.onnx.export`` (opsets 11..20, what TensorRT 8.x parses); returns the
    tracer warnings (messages) it emitted."""
    torch = _torch()
    batch_axis: Dict[int, str] = {0: "batch"} if config.dynamic_batch else {}
    hw_axes: Dict[int, str] = {}
    if config.dynamic_hw:
        hw_axes = {1: "height", 2: "width"} if config.input_layout == LAYOUT_UINT8_NHWC_BGR else {2: "height", 3: "width"}
    out_axes: Dict[int, str] = dict(batch_axis)
    if config.dynamic_hw:
        out_axes[1] = "num_boxes"
    dynamic_axes = None
    if batch_axis or hw_axes:
        input_axes = dict(batch_axis)
        input_axes.update(hw_axes)
        dynamic_axes = {INPUT_NAME: input_axes, "boxes": dict(out_axes), "scores": dict(out_axes)}
    kwargs: Dict[str, Any] = dict(
        input_names=[INPUT_NAME], output_names=list(PRE_NMS_OUTPUTS), opset_version=int(config.opset),
        dynamic_axes=dynamic_axes, do_constant_folding=True, export_params=True,
    )
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the dynamo exporter needs opset >= 18 (TensorRT 8.x cannot parse it)
    tracer: List[str] = []
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        try:
            torch.onnx.export(module, (example,), str(path), **kwargs)
        except OSError:
            raise  # writing the file failed: export_graph names the output and the cause
        except Exception as exc:  # the exporter raises many types (RuntimeError, SymbolicValueError, ...)
            if free_bytes(path.parent) < LOW_SPACE_BYTES:  # a write failure the exporter wrapped
                raise OSError(errno.ENOSPC, f"No space left on device ({exc})", str(path)) from None
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"torch.onnx.export failed at opset {config.opset}: {first}; try another --opset "
                             "(17 is the default) or check that forward() traces (no data-dependent Python "
                             "control flow)") from None
    for w in caught:
        msg = str(w.message).splitlines()[0]
        if w.category.__name__ == "TracerWarning":
            tracer.append(msg)
        log.debug("torch.onnx.export: %s: %s", w.category.__name__, msg)
    return tracer


def _set_metadata(model: Any, source: ExportSource, config: ExportConfig, size: Size) -> None:
    """Small, standard ONNX metadata_props so a graph separated from its sidecar still says what it takes."""
    props = {
        "edge_arch": source.arch,
        "edge_classes": json.dumps(source.class_names),
        "edge_input_layout": RUNTIME_LAYOUT_NAMES[config.input_layout],
        "edge_input_size": f"{size[0]}x{size[1]}",
        "edge_normalization": json.dumps(source.normalization.to_dict()),
    }
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "edge (torch.onnx.export)"


def _declare_output_shapes(model: Any, config: ExportConfig, expected: Dict[str, np.ndarray]) -> None:
    """Write the known output dims into the graph's outputs: ["batch" | B, N | "num_boxes", 4 | C].

    The exporter leaves N symbolic where the model reshapes with -1 under a dynamic batch; TensorRT and
    graph surgery are better served by a static N (it is static whenever H and W are).
    """
    for value in model.graph.output:
        ref = expected[value.name]
        dims: List[Union[int, str]] = [
            "batch" if config.dynamic_batch else int(ref.shape[0]),
            "num_boxes" if config.dynamic_hw else int(ref.shape[1]),
            int(ref.shape[2]),
        ]
        shape = value.type.tensor_type.shape
        while len(shape.dim) < len(dims):
            shape.dim.add()
        for dim, want in zip(shape.dim, dims):
            dim.Clear()
            if isinstance(want, str):
                dim.dim_param = want
            else:
                dim.dim_value = want


def _check_dynamic_hw(module: Any, sizes: Sequence[Size], source: ExportSource) -> None:
    torch = _torch()
    for size in sizes[1:]:
        try:
            with torch.no_grad():
                module(torch.zeros(1, 3, size[0], size[1]))
        except Exception as exc:
            raise ModelError(
                f"{source.arch} built for {sizes[0][0]}x{sizes[0][1]} cannot run on a {size[0]}x{size[1]} input "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}): its anchors/default "
                "boxes are fixed to one input size, so a graph with dynamic H/W is not possible; export one "
                "graph per size with --imgsz H1xW1 H2xW2 instead of --dynamic-hw") from None


def _dynamic_hw_sizes(nominal: Size, listed: Sequence[Size]) -> List[Size]:
    sizes = [nominal] + [s for s in listed if s != nominal]
    if len(sizes) == 1:  # prove the graph is really free in H and W: one more, non-square size
        sizes.append((nominal[0] + 32, nominal[1] + 64))
    return sizes


def export_graph(source: ExportSource, size: Size, out_path: Path, config: ExportConfig,
                 images: Sequence[np.ndarray] = ()) -> ExportResult:
    """Export ``source`` at ``size`` to ``out_path`` (+ sidecar); verify, simplify, re-verify, write atomically.

    Raises ModelError (nothing written) when the graph fails onnx.checker/shape inference or differs from
    PyTorch by more than ``config.tolerance``.
    """
    import onnx

    from edge.artifacts import atomic_write_bytes, sha256_bytes, write_sidecar

    module = source.model_for_size(size)
    traced = wrap_with_preprocessing(module, config.input_layout, source.normalization).eval()
    sizes = _dynamic_hw_sizes(size, config.imgsz) if config.dynamic_hw else [size]
    if config.dynamic_hw:
        _check_dynamic_hw(module, sizes, source)
    what = out_path.name
    cases = sample_inputs(config, sizes, source.normalization, images)
    samples = reference_samples(traced, cases)
    example = _torch().from_numpy(cases[0][1])

    try:
        with _temporary_path(out_path.parent, out_path.stem) as tmp:
            tracer = _torch_onnx_export(traced, example, tmp, config)
            if tracer:
                log.debug("%s: %d tracer warning(s), first: %s", what, len(tracer), tracer[0])
            proto = onnx.load(str(tmp))
    except OSError as exc:  # the exporter's own file (a full disk, a read-only folder), not the opset
        raise OutputError.from_os_error(out_path, exc, note=f"{out_path.name} was not written") from None
    if proto.ByteSize() >= 2 ** 31 - 1:  # pragma: no cover - no model here is that large
        raise ModelError(f"{what}: the graph is over 2 GB, which needs ONNX external data; not supported yet")
    _set_metadata(proto, source, config, size)
    _declare_output_shapes(proto, config, samples[0].expected)
    expect_outputs(proto, PRE_NMS_OUTPUTS, what)
    check_graph(proto, what)
    try:
        report = verify_samples(proto, samples, config.tolerance, what=what)
    except ModelError as exc:
        hint = f" Tracer warnings: {tracer[0]}" if tracer else ""
        raise ModelError(f"{exc}.{hint}") from None

    outcome: Optional[SimplifyOutcome] = None
    if config.simplify:
        proto, outcome = simplify_and_verify(proto, samples, config.tolerance, tool=config.simplify_tool, what=what)
        if outcome.simplified and outcome.report is not None:
            report = outcome.report

    warn_if_input_independent(report.input_spread, what)
    data = proto.SerializeToString()
    atomic_write_bytes(out_path, data)
    num_boxes: Dict[str, int] = {}
    for (name, _), smp in zip(cases, samples):  # case names are "<kind> HxW bB"
        num_boxes[name.split(" ")[1]] = int(smp.expected["boxes"].shape[1])
    meta = _sidecar(source, config, size, module, proto, out_path.name, sha256_bytes(data), num_boxes, report,
                    outcome)
    try:
        sidecar_path = write_sidecar(out_path, meta)
    except BaseException:
        with contextlib.suppress(OSError):
            out_path.unlink()
        raise
    log.info("wrote %s (%s, %s; boxes %s; max error %s)", out_path, f"{size[0]}x{size[1]}", config.input_layout,
             num_boxes, {k: f"{v:.1e}" for k, v in report.max_errors.items()})
    return ExportResult(onnx_path=out_path, sidecar_path=sidecar_path, input_size=size, num_boxes=num_boxes,
                        report=report, simplify=outcome, sidecar=meta)


def _sidecar(source: ExportSource, config: ExportConfig, size: Size, module: Any, proto: Any, file_name: str,
             sha256: str, num_boxes: Dict[str, int], report: VerificationReport,
             outcome: Optional[SimplifyOutcome]) -> Dict[str, Any]:
    batch: Union[int, str] = "batch" if config.dynamic_batch else int(config.batch)
    h: Union[int, str] = "height" if config.dynamic_hw else int(size[0])
    w: Union[int, str] = "width" if config.dynamic_hw else int(size[1])
    shape = [batch, h, w, 3] if config.input_layout == LAYOUT_UINT8_NHWC_BGR else [batch, 3, h, w]
    n: Union[int, str] = "num_boxes" if config.dynamic_hw else num_boxes[f"{size[0]}x{size[1]}"]
    c = len(source.class_names)
    config_dict = dict(source.config)
    if "input_size" in config_dict:
        config_dict["input_size"] = [int(size[0]), int(size[1])]
    inp = input_description(config.input_layout, size, _pad(config))
    inp.update({"shape": shape, "dynamic_batch": bool(config.dynamic_batch), "dynamic_hw": bool(config.dynamic_hw)})
    history = []
    if source.checkpoint is not None:
        history.append({"stage": "export", "input": source.checkpoint.name, "input_sha256": source.checkpoint_sha256})
    return {
        "stage": "export",
        "file": file_name,
        "sha256": sha256,
        "arch": source.arch,
        "config": config_dict,
        "classes": list(source.class_names),
        "class_names": list(source.class_names),
        "num_classes": c,
        "input": inp,
        # flat keys read by edge.runtime (input_format_from_graph) and edge surgery
        "input_layout": RUNTIME_LAYOUT_NAMES[config.input_layout],
        "input_size": [int(size[0]), int(size[1])],
        "pad_value": _pad(config),
        "normalization": source.normalization.to_dict(),
        "anchors": source.anchors_for(module),
        "opset": int(config.opset),
        "outputs": {
            "boxes": {"name": "boxes", "shape": [batch, n, 4], "dtype": "float32", "format": "xyxy",
                      "units": "input pixels", "normalized": False},
            "scores": {"name": "scores", "shape": [batch, n, c], "dtype": "float32",
                       "activation": "applied", "background_column": False, "range": [0.0, 1.0]},
        },
        "num_boxes": dict(num_boxes),
        "source": {
            "checkpoint": str(source.checkpoint.name) if source.checkpoint else None,
            "checkpoint_sha256": source.checkpoint_sha256,
            "data_hash": (source.card.get("data") or {}).get("hash"),
            "epochs": source.card.get("epochs"),
            "metrics": source.card.get("metrics") or None,
            "backbone_weights": source.card.get("backbone_weights"),
        },
        "export": {
            "exporter": "torch.onnx.export (TorchScript)",
            "batch": None if config.dynamic_batch else int(config.batch),
            "dynamic_batch": bool(config.dynamic_batch),
            "dynamic_hw": bool(config.dynamic_hw),
            "input_layout": config.input_layout,
            "simplify": outcome.to_dict() if outcome is not None else {"simplified": False, "reason": "--no-simplify"},
            "tools": _tool_versions(outcome),
            "output_shapes": output_shapes(proto),
        },
        "verification": report.to_dict(),
        "history": history,
    }


def output_path(out_dir: Path, name: str, size: Size, dynamic_hw: bool) -> Path:
    """DIR/NAME_HxW.onnx, or DIR/NAME_dynamic.onnx for a graph with free H and W."""
    stem = f"{name}_dynamic" if dynamic_hw else f"{name}_{size[0]}x{size[1]}"
    return Path(out_dir) / f"{stem}.onnx"


def export_source(source: ExportSource, out_dir: PathLike, config: Optional[ExportConfig] = None) -> List[ExportResult]:
    """Export ``source`` at every size of ``config.imgsz`` (default: its input size) into ``out_dir``.

    Returns one ``ExportResult`` per written graph. Graphs already written stay when a later size fails.
    """
    config = dataclasses.replace(config or ExportConfig()).validate()
    if config.pad_value is None:
        config.pad_value = int(source.pad_value)
    sizes = list(config.imgsz) or [source.input_size]
    images = _read_images(config.verify_images) if config.verify_images else []
    name = config.name or source.arch
    targets = [sizes[0]] if config.dynamic_hw else sizes
    results = []
    for size in targets:
        path = output_path(Path(out_dir), name, size, config.dynamic_hw)
        results.append(export_graph(source, size, path, config, images))
    return results


def export_checkpoint(checkpoint: PathLike, out_dir: PathLike,
                      config: Optional[ExportConfig] = None) -> List[ExportResult]:
    """``edge export CHECKPOINT --out DIR``: load the checkpoint (``edge.train.checkpoint``) and export it."""
    return export_source(source_from_checkpoint(checkpoint), out_dir, config)
