"""Per-thread scheduling priority for the pipeline's host stages.

On a small CPU (a Jetson's, a 2-core laptop's) ONNX Runtime's intra-op threads use every core during an
inference. When a host stage (decode, letterbox, draw, encode) preempts one of them in the middle of a
parallel operator, the whole operator waits for it: the host work lands *inside* the inference time, as
in a sequential loop. Lowering the host threads' priority (a higher nice value, on Linux per thread)
lets the inference threads preempt them at once, so host work runs in the gaps ONNX Runtime leaves
(between operators, during the graph's serial tail, between frames) instead of stretching inference.
It costs the neighbours nothing: only this process's own threads are lowered, never raised.

Linux only (``setpriority`` on a thread id changes that thread alone there); elsewhere a no-op.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

log = logging.getLogger(__name__)

MAX_NICE = 19


def lower_thread_priority(increment: int) -> bool:
    """Add ``increment`` to the calling thread's nice value (capped at 19). True when it was applied.

    Call it from the thread to lower, never from the main thread (whose id is the process id). A no-op
    returning False for ``increment <= 0``, off Linux, or where the OS refuses.
    """
    if increment <= 0 or not sys.platform.startswith("linux"):
        return False
    get_id = getattr(threading, "get_native_id", None)
    if get_id is None or not hasattr(os, "setpriority") or threading.current_thread() is threading.main_thread():
        return False
    try:
        tid = get_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(MAX_NICE, current + int(increment)))
        return True
    except OSError as exc:  # a seccomp'd container, say: run at the normal priority
        log.debug("cannot lower the priority of %s: %s", threading.current_thread().name, exc)
        return False


def thread_nice() -> int:
    """The calling thread's nice value (0 where it cannot be read)."""
    get_id = getattr(threading, "get_native_id", None)
    if get_id is None or not hasattr(os, "getpriority") or not sys.platform.startswith("linux"):
        return 0
    try:
        return int(os.getpriority(os.PRIO_PROCESS, get_id()))
    except OSError:
        return 0
