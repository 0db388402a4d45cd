"""``edge bench --streams N``: real edge-run processes (one batched, N separate) on the same generated clip,
the document's keys and what they must add up to."""

from __future__ import annotations

import json

from edge.cli.main import main

KEYS = ("streams", "batched_fps", "separate_fps", "batched_rss_mb", "separate_rss_mb", "per_stream_fps",
        "glass_to_glass_p99_ms")


def test_bench_streams_batched_against_separate_processes(model, tmp_path, capsys):
    out = tmp_path / "streams.json"
    rc = main(["bench", str(model), "--streams", "2", "--frames", "12", "--repeats", "2", "--clip-size", "160x120",
               "--json", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert all(k in doc for k in KEYS) and doc["streams"] == 2
    assert len(doc["per_stream_fps"]) == 2 and len(doc["glass_to_glass_p99_ms"]) == 2
    assert all(v > 0 for v in doc["per_stream_fps"] + doc["glass_to_glass_p99_ms"])
    assert doc["batched_fps"] > 0 and doc["separate_fps"] > 0
    # two interleaved rounds, each with every frame of both streams through each way
    assert len(doc["rounds"]) == 2
    assert all(r[w]["frames"] == 24 for r in doc["rounds"] for w in ("batched", "separate"))
    # one process against two: each holds its own interpreter, OpenCV and ONNX Runtime
    assert 0 < doc["batched_rss_mb"] < doc["separate_rss_mb"]
    assert doc["batched_cpu_ms_per_frame"] > 0 and doc["separate_cpu_ms_per_frame"] > 0
    assert "2 streams: batched" in capsys.readouterr().out
