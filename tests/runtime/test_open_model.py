"""Every verb that takes a model (edge-run, edge eval, edge bench, edge build) takes the same files.

Each verb opens a model through its own entry (``open_backend``, ``load_predictor``,
``default_backend_factory``, ``deploy_graph_for``); all of them read ``edge.artifacts.MODEL_SUFFIXES``. A
file of every accepted suffix gets past the suffix check to the loader of its kind; any other suffix is
refused by every verb, naming the accepted ones.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.artifacts import MODEL_SUFFIXES, model_file_kind
from edge.bench.backends import default_backend_factory
from edge.errors import EdgeError
from edge.runtime.open_model import deploy_graph_for, open_backend
from edge.runtime.predictors import load_predictor

OPENERS = {
    "edge-run": lambda p: open_backend(p),
    "edge eval": lambda p: load_predictor(p),
    "edge bench": lambda p: default_backend_factory(p, None, 1),
    "edge build": lambda p: deploy_graph_for(p),
}
REFUSED = ("unknown model file type", "not supported")


def _error(opener, path: Path) -> str:
    try:
        opener(path)
    except (EdgeError, RuntimeError, OSError, ValueError) as exc:  # the loader of that kind failing on junk
        return str(exc)
    return ""


@pytest.mark.parametrize("verb", sorted(OPENERS))
@pytest.mark.parametrize("suffix", sorted(MODEL_SUFFIXES))
def test_every_verb_takes_every_model_suffix(verb, suffix, tmp_path):
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"not a real model")
    message = _error(OPENERS[verb], path)
    assert not any(r in message for r in REFUSED), f"{verb} refused {suffix}: {message}"


@pytest.mark.parametrize("verb", sorted(OPENERS))
def test_every_verb_refuses_other_suffixes_naming_the_accepted_ones(verb, tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"not ours")
    message = _error(OPENERS[verb], path)
    assert any(r in message for r in REFUSED), message
    assert all(s in message for s in MODEL_SUFFIXES), message


def test_model_file_kind():
    assert {model_file_kind(f"m{s}") for s in MODEL_SUFFIXES} == {"checkpoint", "onnx", "engine"}
    assert model_file_kind("M.ENGINE") == "engine"
    with pytest.raises(EdgeError, match=r"\.pt \(checkpoint\).*\.trt \(engine\)"):
        model_file_kind("m.pb")


def test_an_engine_stands_for_the_onnx_its_sidecar_names(tmp_path):
    from edge.artifacts import write_sidecar

    onnx = tmp_path / "det.nms.onnx"
    onnx.write_bytes(b"graph")
    engine = tmp_path / "det.engine"
    engine.write_bytes(b"plan")
    write_sidecar(engine, {"engine": {"source_onnx": str(onnx)}})
    assert deploy_graph_for(engine) == onnx
    onnx.unlink()
    with pytest.raises(EdgeError, match="names no ONNX that still exists"):
        deploy_graph_for(engine)
