"""The capture-infer-draw runtime behind ``edge-run``: backends, sources, sinks, the threaded pipeline.

Nothing here imports torch. TensorRT and PyCUDA are imported lazily, only by
``edge.runtime.tensorrt_backend`` and ``edge.cuda``, and only when an engine is run.

Modules:
    backend               the ``Backend`` interface, model input/output formats, the conformance contract
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
