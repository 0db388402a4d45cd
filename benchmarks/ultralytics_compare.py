#!/usr/bin/env python3
"""The same YOLOv8n ONNX through ``edge-run`` and through ultralytics' own predict loop, on one clip.

Issue 6 asks that a YOLOv8n ONNX at 320, run through ``edge-run`` (the bring-your-own path:
``edge surgery --preset yolov8``), beat ultralytics' own loop with drawing on the same clip.

ultralytics is NOT a dependency of this project: this script makes its own virtual environment under
/tmp, installs ultralytics there from PyPI, builds YOLOv8n from its yaml (random weights: nothing is
downloaded, and speed does not depend on weights) and exports it to ONNX there. Nothing it makes or fetches
belongs in the repository (the work folder is under /tmp).

Then, on one generated 640x480 clip, in interleaved rounds (the order alternates):

* ultralytics: ``YOLO(onnx).predict(clip, imgsz=320, stream=True)``, each result drawn with
  ``Results.plot()`` and written with ``cv2.VideoWriter`` as ultralytics' own ``save`` does on Linux
  (.avi, MJPG), in the ultralytics venv;
* edge: ``edge bench`` on the deploy graph (``edge surgery --preset yolov8 --nms onnx``): raw ONNX Runtime
  throughput, the ``edge-run`` pipeline (drawing + writing the same .avi MJPEG format with its own sink)
  and the naive sequential loop.

``--video-suffix .mp4`` makes both write MPEG-4 part 2 (mp4v) instead.

Run with the project's interpreter::

    .venv/bin/python benchmarks/ultralytics_compare.py [--frames 300] [--rounds 3] [--json OUT]

Every failure (no network, an install or export error) is reported with the exact step and output, and
the script exits non-zero; the results then say what failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_VENV = Path("/tmp/edge-ultralytics-venv")
DEFAULT_WORK = Path("/tmp/edge-ultralytics-work")

EXPORT_CODE = r"""
import json, shutil, sys
import torch
from ultralytics import YOLO
imgsz, out = int(sys.argv[1]), sys.argv[2]
torch.manual_seed(0)
model = YOLO("yolov8n.yaml")  # architecture only: random weights, no download
path = model.export(format="onnx", imgsz=imgsz, opset=17, simplify=False, dynamic=False)
shutil.move(str(path), out)
import ultralytics
print(json.dumps({"onnx": out, "ultralytics": ultralytics.__version__, "torch": torch.__version__}))
"""

PREDICT_CODE = r"""
import json, resource, sys, time
import cv2
from ultralytics import YOLO
onnx, clip, out, imgsz, warm = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
fourcc = "MJPG" if out.endswith(".avi") else "mp4v"
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
cap = cv2.VideoCapture(clip)
fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
cap.release()
model = YOLO(onnx, task="detect")
writer = cv2.VideoWriter(out, cv2.VideoWriter_fourcc(*fourcc), fps, size)
n, dets, t0, c0, speed = 0, 0, None, None, {}
for r in model.predict(source=clip, imgsz=imgsz, stream=True, verbose=False):
    writer.write(r.plot())  # ultralytics' own drawing
    n += 1
    dets += len(r.boxes)
    speed = r.speed
    if n == warm:
        t0, c0 = time.perf_counter(), cpu()
elapsed, used = time.perf_counter() - t0, cpu() - c0
writer.release()
timed = n - warm
print(json.dumps({"fps": timed / elapsed, "frames": n, "timed_frames": timed,
                  "cpu_ms_per_frame": used / timed * 1000.0, "detections_per_frame": dets / n,
                  "speed_ms_last_frame": speed}))
"""


class StepFailed(RuntimeError):
    """One step of the comparison failed; ``step`` names it, the message has the command's output."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"{step}: {message}")
        self.step = step


def _run(step: str, cmd: List[str], *, env: Optional[Dict[str, str]] = None, cwd: Optional[Path] = None,
         timeout: float = 1800) -> str:
    try:
        proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StepFailed(step, f"{' '.join(cmd)} could not run: {exc}") from exc
    if proc.returncode != 0:
        tail = (proc.stdout[-1500:] + "\n" + proc.stderr[-3000:]).strip()
        raise StepFailed(step, f"`{' '.join(cmd)}` exited {proc.returncode}:\n{tail}")
    return proc.stdout


def _ul_env(work: Path) -> Dict[str, str]:
    env = dict(os.environ)
    env.update({"YOLO_OFFLINE": "1", "YOLO_VERBOSE": "False", "YOLO_CONFIG_DIR": str(work / "ultralytics-config")})
    env.pop("PYTHONPATH", None)
    return env


def ensure_venv(venv: Path, *, install: bool = True) -> Dict[str, Any]:
    """``venv`` with ultralytics and the same onnxruntime/onnx versions as this project's environment."""
    import onnx
    import onnxruntime

    python = venv / "bin" / "python"
    pins = [f"onnxruntime=={onnxruntime.__version__}", f"onnx=={onnx.__version__}"]
    if not python.exists():
        if not install:
            raise StepFailed("venv", f"{venv} does not exist and --skip-install was given")
        _run("venv", [sys.executable, "-m", "venv", str(venv)], timeout=300)
    probe = "import ultralytics, onnxruntime; print(ultralytics.__version__, onnxruntime.__version__)"
    try:
        versions = _last_line(_run("probe", [str(python), "-c", probe], timeout=300)).split()
    except StepFailed:
        if not install:
            raise
        _run("pip install ultralytics", [str(python), "-m", "pip", "install", "-q", "ultralytics"] + pins,
             timeout=1800)
        versions = _last_line(_run("probe", [str(python), "-c", probe], timeout=300)).split()
    return {"venv": str(venv), "ultralytics": versions[0], "onnxruntime_in_venv": versions[1]}


def _last_line(text: str) -> str:
    """The last printed line (ultralytics prints a settings notice on its first import)."""
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


def export_yolov8n(venv: Path, work: Path, imgsz: int) -> Path:
    out = work / f"yolov8n_{imgsz}.onnx"
    if not out.exists():
        _run("export", [str(venv / "bin" / "python"), "-c", EXPORT_CODE, str(imgsz), str(out)], env=_ul_env(work),
             cwd=work, timeout=900)
    return out


def surgery(onnx_path: Path) -> Path:
    out = onnx_path.with_name(onnx_path.stem + ".nms.onnx")
    if not out.exists():
        _run("edge surgery", [sys.executable, "-m", "edge", "-q", "surgery", str(onnx_path), "--preset", "yolov8",
                              "--nms", "onnx", "--out", str(out)], cwd=ROOT, timeout=600)
    return out


def ultralytics_round(venv: Path, work: Path, onnx_path: Path, clip: Path, imgsz: int, warm: int,
                      suffix: str) -> Dict[str, Any]:
    out = _run("ultralytics predict", [str(venv / "bin" / "python"), "-c", PREDICT_CODE, str(onnx_path), str(clip),
                                       str(work / f"ultralytics_out{suffix}"), str(imgsz), str(warm)],
               env=_ul_env(work), cwd=work, timeout=1800)
    return json.loads(out.strip().splitlines()[-1])


def edge_round(deploy: Path, clip: Path, frames: int, threads: int, suffix: str) -> Dict[str, Any]:
    from edge.bench import BenchCase, BenchConfig, run_bench

    config = BenchConfig(frames=frames, repeats=1, threads=threads, video_suffix=suffix)
    doc = run_bench([BenchCase(deploy)], config, str(clip))
    return doc["cases"][0]


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV, help=f"ultralytics' venv ({DEFAULT_VENV})")
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORK, help=f"work folder ({DEFAULT_WORK})")
    p.add_argument("--frames", type=int, default=300, help="frames of the clip (300)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians reported (3)")
    p.add_argument("--imgsz", type=int, default=320, help="network input (320)")
    p.add_argument("--threads", type=int, default=0, help="edge's ONNX Runtime threads (0: all cores)")
    p.add_argument("--video-suffix", default=".avi", choices=(".avi", ".mp4"),
                   help="what both loops write: .avi (MJPEG, ultralytics' own save format on Linux) or .mp4 (mp4v)")
    p.add_argument("--skip-install", action="store_true", help="fail instead of creating/installing the venv")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    args = p.parse_args(argv)

    from edge.bench import load_average, machine_info, make_clip

    args.workdir.mkdir(parents=True, exist_ok=True)
    result: Dict[str, Any] = {"command": "python benchmarks/ultralytics_compare.py " + " ".join(argv or sys.argv[1:]),
                              "machine": machine_info(args.threads), "frames": args.frames, "imgsz": args.imgsz,
                              "video_suffix": args.video_suffix}
    try:
        result["venv"] = ensure_venv(args.venv, install=not args.skip_install)
        onnx_path = export_yolov8n(args.venv, args.workdir, args.imgsz)
        deploy = surgery(onnx_path)
        clip = args.workdir / f"clip_{args.frames}.mp4"
        if not clip.exists():
            make_clip(clip, args.frames)
        rounds = []
        for r in range(args.rounds):
            got: Dict[str, Any] = {}
            for who in (("ultralytics", "edge") if r % 2 == 0 else ("edge", "ultralytics")):
                if who == "ultralytics":
                    got[who] = ultralytics_round(args.venv, args.workdir, onnx_path, clip, args.imgsz, 5,
                                                 args.video_suffix)
                else:
                    got[who] = edge_round(deploy, clip, args.frames, args.threads, args.video_suffix)
            e = got["edge"]
            u = got["ultralytics"]
            rounds.append({
                "ultralytics_fps": round(u["fps"], 2), "edge_e2e_fps": e["e2e_fps"],
                "edge_e2e_steady_fps": e["e2e_steady_fps"], "edge_raw_fps": e["raw_fps"],
                "edge_naive_fps": e["naive_fps"], "edge_over_ultralytics": round(e["e2e_fps"] / u["fps"], 3),
                "ort_defaults_raw_fps": e.get("raw_ort_defaults_fps"),
                "edge_raw_parallel_fps": e.get("raw_parallel_fps"),
                "edge_e2e_over_raw_best": e.get("e2e_over_raw_best"),
                "edge_inference_plan": e.get("inference_plan"),
                "ultralytics_over_raw": round(u["fps"] / e["raw_fps"], 3),
                "edge_e2e_over_raw": e["e2e_over_raw"],
                "cpu_ms_per_frame": {"ultralytics": round(u["cpu_ms_per_frame"], 2), **e["cpu_ms_per_frame"]},
                "ultralytics_speed_ms": u["speed_ms_last_frame"],
                "detections_per_frame": {"ultralytics": u["detections_per_frame"], "edge": e["detections_per_frame"]},
                "load_average": load_average(),
            })
            print(json.dumps(rounds[-1]), flush=True)
        result["rounds"] = rounds
        result["median"] = {k: round(statistics.median(r[k] for r in rounds), 3) for k in
                            ("ultralytics_fps", "edge_e2e_fps", "edge_e2e_steady_fps", "edge_raw_fps", "edge_naive_fps",
                             "edge_over_ultralytics", "ultralytics_over_raw", "edge_e2e_over_raw",
                             "ort_defaults_raw_fps", "edge_raw_parallel_fps", "edge_e2e_over_raw_best")
                            if all(r.get(k) is not None for r in rounds)}
        result["status"] = "ok"
        rc = 0
    except StepFailed as exc:
        result["status"] = "failed"
        result["failed_step"] = exc.step
        result["error"] = str(exc)
        print(f"FAILED at {exc.step}: {exc}", file=sys.stderr)
        rc = 1
    result["load_average_after"] = load_average()
    result["python"] = platform.python_version()
    result["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if rc == 0:
        m = result["median"]
        print(f"| ultralytics predict+plot+write | {m['ultralytics_fps']:.1f} FPS ({m['ultralytics_over_raw']:.2f}x raw) |")
        print(f"| edge-run e2e                   | {m['edge_e2e_fps']:.1f} FPS ({m['edge_e2e_over_raw']:.2f}x raw, "
              f"{m['edge_over_ultralytics']:.2f}x ultralytics) |")
        print(f"| naive loop                     | {m['edge_naive_fps']:.1f} FPS |")
        print(f"| raw ONNX Runtime (edge graph)  | {m['edge_raw_fps']:.1f} FPS |")
        if "edge_raw_parallel_fps" in m:
            print(f"| raw parallel (edge-run's workers) | {m['edge_raw_parallel_fps']:.1f} FPS "
                  f"(e2e {m['edge_e2e_over_raw_best']:.2f}x the best raw) |")
    return rc


if __name__ == "__main__":
    sys.exit(main())
