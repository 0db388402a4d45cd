"""Running models: opening any model file, backends, sources, sinks, the threaded pipeline behind ``edge-run``.

Nothing here imports torch. TensorRT and PyCUDA are imported lazily, only by
``edge.runtime.tensorrt_backend`` and ``edge.cuda``, and only when an engine is run.

Modules:
    app                   ``edge-run`` as a function (``RunOptions``, ``run_live``): model, source, sinks, pipeline
    open_model            the backend for any model file, making its deploy graph first (checkpoint, pre-NMS ONNX)
    engines               ``edge build``: engines for any model file on this device, the legacy INT8 calibrator
    predictors            model files as ``edge eval`` predictors (the same suffixes as ``edge-run``)
    plan                  how many frames are inferred at once, on how many threads, per backend and source
    backend               the ``Backend`` interface, model outputs, the conformance contract
    onnxruntime_backend   ONNX Runtime (CPU by default, CUDA provider when present)
    tensorrt_backend      TensorRT engines through PyCUDA buffers (Jetson, desktop GPUs)
    sources               frame sources by URI (test://, files, image folders, V4L2, CSI, RTSP), capture thread
    sinks                 display, video file, JSON lines
    serve                 the live page: MJPEG over HTTP, bounded connections, HTTP Basic
    serve_access          ``--serve`` parsing (IPv6 in brackets), who may watch: ``--serve-auth``/``--serve-public``
    pipeline              threaded stages with bounded queues and preallocated buffers
    draw                  boxes, labels, scores and FPS drawn in place
    stats                 FPS, per-stage p50/p99, glass-to-glass latency, counters
"""

from __future__ import annotations
