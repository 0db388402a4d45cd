"""``edge doctor``: is this machine ready to run edge? An environment report and an on-device self-test.

Environment report (``collect_report``): one ``Check`` per line, each ``ok``, ``warn``, ``fail`` or
``skip`` (not applicable here), with how to fix what is wrong:

    platform (Jetson model), L4T / JetPack, Python environment, CUDA toolkit and driver, TensorRT and its
    plugin library (EfficientNMS_TRT registered?), PyCUDA, OpenCV build (GStreamer?), V4L2 cameras, CSI
    cameras (nvargus-daemon), display, power mode and clocks, memory, disk, ONNX Runtime providers.

Every probe reads the system through ``SystemPaths`` (file locations, a command runner, the environment),
so tests run the same probes against fake sysfs/procfs trees.

Self-test (``run_selftest``), the GPU test suite a user runs on their own device:

1. ONNX Runtime on the deploy model: the backend contract (``edge.runtime.backend.conformance_report``),
   the graph split at its NMS (the NMS "tail" alone reproduces the detections from the pre-NMS
   tensors), and timings.
2. For each precision the device supports (fp32; fp16 on SM 5.3/6.0/6.2 and >= 7.0; int8 with a Q/DQ
   model on SM 6.1 and >= 7.0; on TensorRT 11 the precisions the ONNX itself carries):

   * a probe engine (the deploy graph plus its pre-NMS tensors as outputs) built with ``edge.trt.build``
     and run through the TensorRT backend: the backend contract, the pre-NMS tensors against ONNX
     Runtime's on the same inputs (within ``PRE_NMS_TOLERANCE``; errors are
     ``max|trt - ort| / max(1, max|ort|)``), TensorRT's NMS output identical to the reference NMS tail
     run on TensorRT's own pre-NMS tensors, and its timing;
   * the engine ``edge build`` ships (the deploy graph as it is, built through ``edge build``'s code
     path), run as ``edge-run`` runs it, its detections matched one to one with ONNX Runtime's
     (``ENGINE_VS_ONNXRUNTIME_TOLERANCE``; detections on an NMS threshold may differ as borderline).

3. What else ships: ``--cuda-graph`` replay of the shipped engine (same detections as without), a
   legacy-calibrated INT8 engine (TensorRT <= 10, calibrated on the self-test frames), a dynamic-H/W
   engine built at a size other than the model's own, and DLA core 0 with GPU fallback where the device
   has a DLA. Each is one check; its details (the JSON report) record the engine's path, sha256, size,
   build flags and profile, the input size, the largest deviations from ONNX Runtime and the timings.

Where TensorRT, PyCUDA or a GPU is missing, the TensorRT checks are reported as ``skip`` with the exact
reason; only ``fail`` makes the exit status nonzero.

Modules (each imports only the ones listed before it):

    facts         SystemPaths, the small readers of system files, PlatformFacts
    report        Check, the statuses, DoctorReport (text, JSON, exit code)
    probes        one probe per environment check, and collect_report
    nms_split     the deploy graph split at its NMS, and OrtGraphRunner
    compare       pre-NMS errors and tolerances, post-NMS identity, timing, the self-test inputs
    precisions    which engine precisions a device gets
    engine_hooks  how the self-test builds and opens engines (TensorRT + PyCUDA by default)
    shipped       the engines edge build ships, checked against ONNX Runtime; cuda graph, INT8, DLA
    dynamic_hw    a deploy graph with a free height and width, and the dynamic-H/W engine check
    selftest      SelftestConfig and run_selftest
    verb          run_doctor: what ``edge doctor`` does with its options

Runtime path: no torch. numpy and the standard library at import; onnx, onnxruntime, OpenCV, TensorRT and
PyCUDA are imported inside the functions that need them.
"""

from __future__ import annotations

from edge.doctor.engine_hooks import EngineHooks, EngineUnavailable, tensorrt_hooks
from edge.doctor.facts import PlatformFacts, SystemPaths, detect_platform, system_paths
from edge.doctor.probes import collect_report
from edge.doctor.report import FAIL, OK, SKIP, STATUSES, WARN, Check, DoctorReport
from edge.doctor.selftest import SelftestConfig, run_selftest
from edge.doctor.verb import run_doctor

__all__ = [
    "FAIL",
    "OK",
    "SKIP",
    "STATUSES",
    "WARN",
    "Check",
    "DoctorReport",
    "EngineHooks",
    "EngineUnavailable",
    "PlatformFacts",
    "SelftestConfig",
    "SystemPaths",
    "collect_report",
    "detect_platform",
    "run_doctor",
    "run_selftest",
    "system_paths",
    "tensorrt_hooks",
]
