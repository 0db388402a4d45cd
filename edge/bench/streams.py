"""``edge bench --streams N``: N file streams through one batched ``edge-run`` against N separate
``edge-run`` processes on the same clips, in interleaved rounds.

Each round runs the batched process (``edge-run MODEL --source c0 ... --source cN-1``), then the N separate
processes started together (``edge-run MODEL --source ci``), in the order batched/separate on even rounds
and separate/batched on odd ones. Every process is a real ``edge-run`` (``python -m edge.cli.run``) with
``--stats-json``; its peak RSS comes from ``os.wait4`` (the kernel's ``ru_maxrss`` of that child).

* ``batched_fps``: frames written by the batched process / the wall time from its launch to its exit.
* ``separate_fps``: frames written by all N processes / the wall time from their launch (together) to the
  last exit. Both include starting Python and loading the model (once, or N times at once: a real cost of
  N processes); ``batched_loop_fps`` / ``separate_loop_fps`` leave it out (the frames over the loop's own
  ``elapsed_s``; for the N processes the longest one, which flatters them: their loops do not start
  together, and one that starts early runs alone for a while).
* ``batched_rss_mb`` / ``separate_rss_mb``: peak RSS of the batched process / the sum over the N processes.
* ``batched_cpu_ms_per_frame`` / ``separate_cpu_ms_per_frame``: CPU time (user + system, ``os.wait4``) per
  frame, startup included: steadier than FPS on a shared machine, where a process with more runnable
  threads simply gets a larger share of the cores.
* ``per_stream_fps``, ``glass_to_glass_p99_ms``: each stream of the batched process (its stats' ``streams``).

Medians over the rounds; every round's figures are kept under ``rounds``.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from edge.artifacts import atomic_write_json
from edge.bench.clip import make_clip
from edge.errors import EdgeError

log = logging.getLogger(__name__)


def _start(model: str, sources: Sequence[str], stats: Path, extra: Sequence[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "edge.cli.run", model, "--headless", "--log-every", "0", "-q",
           "--stats-json", str(stats), *extra]
    for s in sources:
        cmd += ["--source", s]
    env = dict(os.environ)  # the children run this very edge package, wherever the bench was started
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def _finish(proc: subprocess.Popen) -> Tuple[float, float]:
    """Wait for ``proc``; its peak RSS in MiB (``ru_maxrss``, KiB on Linux) and its CPU seconds."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status >> 8
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise EdgeError(f"edge-run exited with {proc.returncode} during the bench: {err.strip()[-400:]}")
    return usage.ru_maxrss / 1024.0, usage.ru_utime + usage.ru_stime


def _batched(model: str, clips: Sequence[str], work: Path, extra: Sequence[str]) -> Dict[str, Any]:
    stats = work / "batched.json"
    t0 = time.perf_counter()
    rss, cpu = _finish(_start(model, clips, stats, extra))
    wall = time.perf_counter() - t0
    d = json.loads(stats.read_text())
    frames = d["frames"]["written"]
    return {"fps": frames / wall, "loop_fps": frames / d["elapsed_s"], "rss_mb": rss, "frames": frames,
            "wall_s": wall, "cpu_ms_per_frame": 1000.0 * cpu / max(1, frames),
            "per_stream_fps": [s["e2e_fps"] for s in d["streams"]],
            "glass_to_glass_p99_ms": [s["glass_to_glass_ms"]["p99_ms"] for s in d["streams"]]}


def _separate(model: str, clips: Sequence[str], work: Path, extra: Sequence[str]) -> Dict[str, Any]:
    paths = [work / f"separate{i}.json" for i in range(len(clips))]
    t0 = time.perf_counter()
    procs = [_start(model, [clip], path, extra) for clip, path in zip(clips, paths)]
    usage = [_finish(p) for p in procs]
    wall = time.perf_counter() - t0
    docs = [json.loads(p.read_text()) for p in paths]
    frames = sum(d["frames"]["written"] for d in docs)
    return {"fps": frames / wall, "loop_fps": frames / max(d["elapsed_s"] for d in docs),
            "rss_mb": sum(u[0] for u in usage), "frames": frames, "wall_s": wall,
            "cpu_ms_per_frame": 1000.0 * sum(u[1] for u in usage) / max(1, frames),
            "per_stream_fps": [d["e2e_fps"] for d in docs]}


def streams_bench(model: str, streams: int, *, frames: int = 150, repeats: int = 3, clip_size: Tuple[int, int] = (640, 480),
                  workdir: Optional[str] = None, extra: Sequence[str] = (),
                  echo: Callable[[str], None] = log.info) -> Dict[str, Any]:
    """The document ``edge bench --streams`` writes (see the module docstring)."""
    if streams < 1 or repeats < 1 or frames < 1:
        raise EdgeError(f"--streams, --repeats and --frames must be >= 1, found {streams}, {repeats}, {frames}")
    tmp = tempfile.TemporaryDirectory(prefix="edge-bench-streams-") if workdir is None else None
    work = Path(workdir or tmp.name)  # type: ignore[union-attr]
    work.mkdir(parents=True, exist_ok=True)
    try:
        clip = make_clip(work / "clip.avi", frames, size=clip_size)
        clips = [str(clip)] * streams  # the same clip N times: every stream decodes and infers its own copy
        rounds: List[Dict[str, Any]] = []
        for r in range(repeats):
            order = ("batched", "separate") if r % 2 == 0 else ("separate", "batched")
            result: Dict[str, Any] = {}
            for which in order:
                fn = _batched if which == "batched" else _separate
                result[which] = fn(model, clips, work, extra)
            rounds.append(result)
            echo(f"round {r + 1}/{repeats}: batched {result['batched']['fps']:.1f} FPS "
                 f"{result['batched']['rss_mb']:.0f} MiB, separate {result['separate']['fps']:.1f} FPS "
                 f"{result['separate']['rss_mb']:.0f} MiB")
    finally:
        if tmp is not None:
            tmp.cleanup()
    return _document(model, streams, frames, rounds)


def _document(model: str, streams: int, frames: int, rounds: List[Dict[str, Any]]) -> Dict[str, Any]:
    def med(which: str, key: str) -> float:
        return round(statistics.median(r[which][key] for r in rounds), 3)

    best = min(rounds, key=lambda r: abs(r["batched"]["fps"] - med("batched", "fps")))["batched"]
    return {
        "streams": streams,
        "batched_fps": med("batched", "fps"),
        "separate_fps": med("separate", "fps"),
        "batched_rss_mb": med("batched", "rss_mb"),
        "separate_rss_mb": med("separate", "rss_mb"),
        "batched_loop_fps": med("batched", "loop_fps"),
        "separate_loop_fps": med("separate", "loop_fps"),
        "batched_cpu_ms_per_frame": med("batched", "cpu_ms_per_frame"),
        "separate_cpu_ms_per_frame": med("separate", "cpu_ms_per_frame"),
        "per_stream_fps": [round(v, 3) for v in best["per_stream_fps"]],
        "glass_to_glass_p99_ms": [round(v, 3) for v in best["glass_to_glass_p99_ms"]],
        "model": model,
        "frames_per_stream": frames,
        "cpu_count": os.cpu_count(),
        "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "rounds": rounds,
    }


def run_streams_command(args: Any, echo: Callable[[str], None]) -> int:
    """``edge bench --streams N --json FILE [MODEL]``."""
    from edge.bundled import bundled_model

    if len(args.models) > 1:
        raise EdgeError(f"--streams benches one model; {len(args.models)} were given")
    model = args.models[0] if args.models else str(bundled_model())
    extra: List[str] = []
    if args.no_draw:
        extra.append("--no-draw")
    doc = streams_bench(model, args.streams, frames=args.frames, repeats=args.repeats, clip_size=args.clip_size,
                        workdir=args.workdir, extra=extra, echo=echo)
    atomic_write_json(args.json, doc, what="--json")
    echo(f"{args.streams} streams: batched {doc['batched_fps']:.1f} FPS in {doc['batched_rss_mb']:.0f} MiB, "
         f"{args.streams} processes {doc['separate_fps']:.1f} FPS in {doc['separate_rss_mb']:.0f} MiB; wrote {args.json}")
    return 0
