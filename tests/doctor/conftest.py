"""``models``: the deploy graphs the self-test's tests share (tests/doctor/tiny_models.py), written once per
test module; tests that use them skip where onnx, onnxruntime-extensions or onnx-graphsurgeon is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import pytest


@pytest.fixture(scope="module")
def models(tmp_path_factory: Any) -> Dict[str, Path]:
    pytest.importorskip("onnxruntime_extensions")
    pytest.importorskip("onnx_graphsurgeon")
    from tests.doctor.tiny_models import write_deploy_model

    d = tmp_path_factory.mktemp("selftest_models")
    return {"efficient": write_deploy_model(d, "efficient"), "onnx": write_deploy_model(d, "onnx"),
            "pre": d / "tiny.onnx"}
