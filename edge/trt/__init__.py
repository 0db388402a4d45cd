"""TensorRT engine building: version dispatch, cache keys, the legacy INT8 calibrator, trtexec equivalents.

Only ``edge/trt/api.py`` touches the ``tensorrt`` module (imported lazily); everything else here is plain
Python that is tested on machines without TensorRT.
"""
