"""Reports of an ``edge bench`` document: a Markdown table to paste into an issue, a PNG chart, the terminal
summary and the command line that reproduces the run.

Input: the dict ``edge.bench.run_bench`` returns (or its JSON file). One row / one group of bars per case
(a model at one input size), labelled ``<precision> <H>x<W>`` plus the model's file name when the
document holds several models.

* ``markdown_report(doc)`` -> str: the machine line (CPU, cores, ONNX Runtime version and threads, load
  average, date), the FPS table (raw / e2e / naive, the ratios, RSS growth, CPU ms per frame) and the
  per-stage latency table (p50 / p99 ms of the e2e run, raw inference for reference).
* ``chart_png(doc, path)``: left, per-stage p50 latency per case (stacked bars, ms); right, raw, e2e and
  naive FPS per case (grouped bars). matplotlib is imported here only (``pip install 'edge-detect[plot]'``),
  with the non-interactive Agg backend, so it works without a display.
* ``write_reports(doc, out_dir)`` writes both (``bench.md``, ``bench.png``) and returns their paths.
* ``format_summary(doc)``: a few lines for the terminal, one per case; ``command_line(args)``: the
  ``edge bench`` command of parsed options, recorded in the document.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Sequence, Union

from edge.artifacts import atomic_open, atomic_write_text
from edge.errors import EdgeError, MissingDependencyError

if TYPE_CHECKING:
    import argparse

log = logging.getLogger(__name__)

STAGE_ORDER = ("capture", "preprocess", "infer", "postprocess", "draw", "sink")


def load_doc(path: Union[str, Path]) -> Dict[str, Any]:
    """Read an ``edge bench --json`` file."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EdgeError(f"cannot read bench results {p}: {exc}; expected the JSON written by `edge bench --json`") from exc
    _check(doc)
    return doc


def _check(doc: Dict[str, Any]) -> None:
    if not isinstance(doc, dict) or not doc.get("cases"):
        raise EdgeError("not an `edge bench` document: it has no 'cases' list")


def case_label(case: Dict[str, Any], with_model: bool = False) -> str:
    """``fp32 320x320`` (plus `` model.onnx`` when several models share the document)."""
    h, w = case.get("input", [0, 0])
    label = f"{case.get('precision', 'fp32')} {h}x{w}"
    return f"{label} {case.get('model_name', '')}".strip() if with_model else label


def _several_models(cases: Sequence[Dict[str, Any]]) -> bool:
    return len({c.get("model_name") for c in cases}) > 1


def _fmt(v: Any, digits: int = 1) -> str:
    if isinstance(v, (int, float)):
        return f"{v:.{digits}f}"
    return "-"


def machine_line(doc: Dict[str, Any]) -> str:
    m = doc.get("machine", {})
    load = m.get("load_average")
    load_txt = ", ".join(f"{v:.2f}" for v in load) if load else "n/a"
    parts = [
        f"CPU {m.get('cpu', '?')} ({m.get('cores', '?')} cores)",
        f"ONNX Runtime {m.get('onnxruntime', '?')} (intra-op threads: {m.get('ort_threads', '?')})",
        f"OpenCV {m.get('opencv', '?')}",
        f"load average {load_txt}",
        m.get("date", ""),
    ]
    return "; ".join(p for p in parts if p)


def markdown_report(doc: Dict[str, Any]) -> str:
    """The Markdown tables for ``doc`` (see the module docstring)."""
    _check(doc)
    cases: List[Dict[str, Any]] = doc["cases"]
    several = _several_models(cases)
    src = doc.get("source", {})
    cfg = doc.get("config", {})
    size = src.get("frame_size")
    src_txt = f"{src.get('uri', '?')}" + (f" ({size[0]}x{size[1]})" if size else "")
    lines = [
        f"**Machine:** {machine_line(doc)}",
        "",
        f"**Input:** {src_txt}; {cfg.get('frames', '?')} frames per run, {cfg.get('repeats', '?')} interleaved "
        f"round(s) (medians); e2e inference: {_plan_text(cases[0])}; drawing "
        f"{'on' if cfg.get('draw', True) else 'off'}, annotated video written ({cfg.get('video_suffix', '.avi')}).",
        "",
        "| case | raw FPS | ORT defaults FPS | raw parallel FPS | e2e FPS | naive FPS | e2e / raw | e2e / ORT defaults "
        "| e2e / best raw | e2e / naive | RSS growth MB | CPU ms/frame raw / e2e / naive |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cases:
        cpu = c.get("cpu_ms_per_frame", {})
        cpu_txt = " / ".join(_fmt(cpu.get(m)) for m in ("raw", "e2e", "naive"))
        lines.append(
            f"| {case_label(c, several)} | {_fmt(c.get('raw_fps'))} | {_fmt(c.get('raw_ort_defaults_fps'))} | "
            f"{_fmt(c.get('raw_parallel_fps'))} | {_fmt(c.get('e2e_fps'))} | {_fmt(c.get('naive_fps'))} | "
            f"{_fmt(c.get('e2e_over_raw'), 2)} | {_fmt(c.get('e2e_over_raw_ort_defaults'), 2)} | "
            f"{_fmt(c.get('e2e_over_raw_best'), 2)} | {_fmt(c.get('e2e_over_naive'), 2)} | "
            f"{_fmt(c.get('rss_growth_mb'))} | {cpu_txt} |"
        )
    lines += ["", "raw: inference calls alone, back to back from one thread on a session over every core (spinning "
              "off); ORT defaults: the same with ONNX Runtime's own defaults (spinning on); raw parallel: inference "
              "alone from as many threads as e2e has inference workers, on e2e's session; best raw: the highest "
              "of the three; e2e: `edge-run`'s threaded loop; naive: one thread, one frame at a time."]
    lines += ["", "Per-stage latency of the e2e run, p50 / p99 ms (raw: inference calls alone):", ""]
    stages = [s for s in STAGE_ORDER if any(s in c.get("stages_ms", {}) for c in cases)]
    lines.append("| case | " + " | ".join(stages) + " | glass-to-glass | raw infer |")
    lines.append("|---|" + "---:|" * (len(stages) + 2))
    for c in cases:
        st = c.get("stages_ms", {})
        cells = [f"{_fmt(st[s]['p50_ms'], 2)} / {_fmt(st[s]['p99_ms'], 2)}" if s in st else "-" for s in stages]
        g = c.get("glass_to_glass_ms", {})
        r = c.get("raw_latency_ms", {})
        cells.append(f"{_fmt(g.get('p50_ms'), 2)} / {_fmt(g.get('p99_ms'), 2)}")
        cells.append(f"{_fmt(r.get('p50_ms'), 2)} / {_fmt(r.get('p99_ms'), 2)}")
        lines.append(f"| {case_label(c, several)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _plan_text(case: Dict[str, Any]) -> str:
    plan = case.get("inference_plan")
    if not plan:
        return "1 worker"
    workers, threads = plan.get("workers", 1), plan.get("threads", 0)
    return (f"{workers} worker{'s' if workers != 1 else ''} x {threads or 'all'} thread(s), host threads at "
            f"nice +{plan.get('host_nice', 0)}")


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise MissingDependencyError(
            "matplotlib", "the edge bench chart", "pip install 'edge-detect[plot]' (or pip install matplotlib)"
        ) from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def chart_png(doc: Dict[str, Any], path: Union[str, Path], *, dpi: int = 110) -> Path:
    """Write the two-panel chart (per-stage p50 latency, FPS per mode) for every case to ``path``."""
    _check(doc)
    plt = _pyplot()
    import numpy as np

    cases: List[Dict[str, Any]] = doc["cases"]
    several = _several_models(cases)
    labels = [case_label(c, several) for c in cases]
    x = np.arange(len(cases))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(8.0, 2.2 * len(cases) + 5.0), 4.2))
    try:
        bottom = np.zeros(len(cases))
        colors = plt.get_cmap("tab10")
        for i, stage in enumerate(STAGE_ORDER):
            vals = np.array([c.get("stages_ms", {}).get(stage, {}).get("p50_ms", 0.0) for c in cases], float)
            if not vals.any():
                continue
            ax1.bar(x, vals, 0.6, bottom=bottom, label=stage, color=colors(i))
            bottom += vals
        ax1.set_xticks(x)
        ax1.set_xticklabels(labels, rotation=15, ha="right", fontsize=8)
        ax1.set_ylabel("p50 latency per stage (ms)")
        ax1.set_title("edge-run stages (stacked p50)")
        ax1.legend(fontsize=7, loc="upper left")

        modes = [(key, label, color) for key, label, color in (
            ("raw", "raw", "#4c72b0"), ("raw_ort_defaults", "ORT defaults", "#8172b3"),
            ("raw_parallel", "raw parallel", "#937860"), ("e2e", "e2e", "#55a868"), ("naive", "naive", "#c44e52"))
            if any(c.get(f"{key}_fps") for c in cases)]
        width = 0.8 / len(modes)
        for j, (mode, label, color) in enumerate(modes):
            vals = [float(c.get(f"{mode}_fps") or 0.0) for c in cases]
            bars = ax2.bar(x + (j - (len(modes) - 1) / 2) * width, vals, width, label=label, color=color)
            for b, v in zip(bars, vals):
                ax2.annotate(f"{v:.0f}", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=7)
        ax2.set_xticks(x)
        ax2.set_xticklabels(labels, rotation=15, ha="right", fontsize=8)
        ax2.set_ylabel("frames per second")
        ax2.set_title("raw ceilings vs edge-run (e2e) vs naive FPS")
        ax2.set_ylim(0, 1.25 * max([float(c.get(f"{m[0]}_fps") or 0.0) for c in cases for m in modes] + [1.0]))
        ax2.legend(fontsize=7, loc="upper right", ncol=3)
        m = doc.get("machine", {})
        fig.suptitle(f"edge bench: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, "
                     f"load {', '.join(str(v) for v in (m.get('load_average') or []))}", fontsize=9)
        fig.tight_layout()
        out = Path(path)
        with atomic_open(out, "wb", what="bench chart") as fh:
            fig.savefig(fh, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return out


def write_reports(doc: Dict[str, Any], out_dir: Union[str, Path], stem: str = "bench") -> Dict[str, Path]:
    """``out_dir/<stem>.md`` and ``out_dir/<stem>.png``; returns {"markdown": path, "chart": path}."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / f"{stem}.md"
    atomic_write_text(md, markdown_report(doc), what="bench report")
    png = chart_png(doc, out / f"{stem}.png")
    log.info("wrote %s and %s", md, png)
    return {"markdown": md, "chart": png}


def command_line(args: argparse.Namespace) -> str:
    """The ``edge bench`` command that reproduces this run (recorded in the document)."""
    parts = ["edge bench"] + [str(m) for m in (args.models or [])]
    if args.source:
        parts += ["--source", str(args.source)]
    parts += ["--frames", str(args.frames)]
    if args.imgsz:
        parts += ["--imgsz"] + [f"{h}x{w}" for h, w in args.imgsz]
    parts += ["--threads", str(args.threads), "--repeats", str(args.repeats)]
    if args.raw_iterations:
        parts += ["--raw-iterations", str(args.raw_iterations)]
    if args.queue_size != 2:
        parts += ["--queue-size", str(args.queue_size)]
    if args.infer_workers:
        parts += ["--infer-workers", str(args.infer_workers)]
    if args.host_nice is not None:
        parts += ["--host-nice", str(args.host_nice)]
    if args.no_draw:
        parts.append("--no-draw")
    if args.no_raw_reference:
        parts.append("--no-raw-reference")
    if args.video_suffix != ".avi":
        parts += ["--video-suffix", args.video_suffix]
    if tuple(args.clip_size) != (640, 480):
        parts += ["--clip-size", f"{args.clip_size[0]}x{args.clip_size[1]}"]
    parts += ["--json", str(args.json)]
    if args.report_dir:
        parts += ["--report-dir", str(args.report_dir)]
    return " ".join(parts)


def format_summary(doc: dict) -> str:
    """A few lines for the terminal: one per case."""
    lines = [machine_line(doc)]
    for c in doc["cases"]:
        cpu = c.get("cpu_ms_per_frame", {})
        lines.append(
            f"{case_label(c, True)}: raw {c['raw_fps']:.1f} FPS"
            + (f" (ORT defaults {c['raw_ort_defaults_fps']:.1f})" if c.get("raw_ort_defaults_fps") else "")
            + (f" (parallel {c['raw_parallel_fps']:.1f})" if c.get("raw_parallel_fps") else "")
            + f", e2e {c['e2e_fps']:.1f} FPS "
            f"({c['e2e_over_raw']:.2f}x raw, {c.get('e2e_over_raw_best') or 0:.2f}x the best raw, "
            f"{c['e2e_over_naive']:.2f}x naive), naive {c['naive_fps']:.1f} FPS, "
            f"RSS growth {c['rss_growth_mb']:.1f} MB, CPU ms/frame raw {cpu.get('raw', 0):.1f} "
            f"e2e {cpu.get('e2e', 0):.1f} naive {cpu.get('naive', 0):.1f}"
        )
    return "\n".join(lines)


__all__ = ["case_label", "chart_png", "command_line", "format_summary", "load_doc", "machine_line",
           "markdown_report", "write_reports"]
