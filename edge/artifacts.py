"""Sidecar JSON for every model and engine file, content hashes, and atomic writes.

Every stage writes ``NAME.ext`` plus ``NAME.json`` beside it. The sidecar carries what the next stage needs
(class names, input size and layout, normalization, NMS parameters, precision, cache keys) so that any
stage's output can be taken by the next with no extra flags. Metadata never goes inside an engine file:
``trtexec`` and DeepStream must still load it.

One home for what each stage's file is: the model-file suffixes every verb accepts (``MODEL_SUFFIXES``,
``model_file_kind``) and the output names of pre-NMS and deploy graphs (``PRE_NMS_OUTPUTS``,
``NMS_OUTPUTS``, the optional ``MAX_SCORE_OUTPUT``).

Writes are atomic: data goes to a temporary file in the destination folder, is flushed and fsynced, then
renamed over the destination. An interrupted write (Ctrl-C, a full disk) leaves the old file or nothing,
never half a file; a failed one raises ``edge.errors.OutputError`` naming the path and the cause (ENOSPC,
EISDIR, EACCES), which the command line reports as one line and exit status 2. ``check_output_path``
refuses an output that cannot be written before any work starts.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Union

from edge.errors import WRITE_ERRNOS, ModelError, OutputError

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

SIDECAR_VERSION = 1

#: Outputs of a pre-NMS graph (``edge export``, ``edge quantize``): ``boxes`` float [B, N, 4] xyxy input
#: pixels and ``scores`` float [B, N, C] per-class scores.
PRE_NMS_OUTPUTS = ("boxes", "scores")
#: Outputs of a deploy graph (``edge surgery``; engines built from it), in this order:
#: ``num_detections`` int32 [B, 1], ``detection_boxes`` float32 [B, K, 4] xyxy input pixels,
#: ``detection_scores`` float32 [B, K] (descending), ``detection_classes`` int32 [B, K] (0-based).
NMS_OUTPUTS = ("num_detections", "detection_boxes", "detection_scores", "detection_classes")
#: An optional fifth output of a deploy graph, after the four (``edge surgery`` adds it; older graphs lack
#: it): ``max_score`` float32 [B], the highest score of each image before NMS (over every candidate box and
#: class, activation applied), so a run that finds nothing can say how far below the threshold the model
#: stayed. Computed from the scores tensor that feeds the NMS node, so EfficientNMS_TRT graphs (and the
#: engines built from them) carry it as well as ONNX NMS graphs.
MAX_SCORE_OUTPUT = "max_score"

#: Model-file suffix -> what the file is. ``edge-run``, ``edge eval``, ``edge bench`` and ``edge build``
#: all accept exactly these (``model_file_kind``):
#: ``checkpoint``: a training checkpoint (``edge train``; exported on the fly where torch is installed);
#: ``onnx``: a pre-NMS graph (NMS appended on the fly) or a deploy graph (NMS inside);
#: ``engine``: a serialized TensorRT engine (``edge build``) with its cache-key sidecar.
MODEL_SUFFIXES: Dict[str, str] = {
    ".pt": "checkpoint", ".pth": "checkpoint", ".ckpt": "checkpoint",
    ".onnx": "onnx",
    ".engine": "engine", ".plan": "engine", ".trt": "engine",
}
CHECKPOINT_SUFFIXES = tuple(s for s, kind in MODEL_SUFFIXES.items() if kind == "checkpoint")
ONNX_SUFFIXES = tuple(s for s, kind in MODEL_SUFFIXES.items() if kind == "onnx")
ENGINE_SUFFIXES = tuple(s for s, kind in MODEL_SUFFIXES.items() if kind == "engine")


def model_file_kind(path: PathLike) -> str:
    """``checkpoint``, ``onnx`` or ``engine`` from the file's suffix (``MODEL_SUFFIXES``); ModelError for
    any other suffix, naming the ones accepted."""
    suffix = Path(path).suffix.lower()
    kind = MODEL_SUFFIXES.get(suffix)
    if kind is None:
        accepted = ", ".join(f"{s} ({k})" for s, k in MODEL_SUFFIXES.items())
        raise ModelError(f"{Path(path).name}: unknown model file type {suffix or '(no suffix)'!r}; "
                         f"expected one of {accepted}")
    return kind


def sha256_file(path: PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sidecar_path(model_path: PathLike) -> Path:
    """``model.onnx`` -> ``model.json`` (same folder, same stem)."""
    return Path(model_path).with_suffix(".json")


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "wb", *, what: str = "") -> Iterator[Any]:
    """Open a temporary file beside ``path``; on clean exit fsync and rename it to ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was. A failed write (a full
    disk, a folder under that name, no permission) raises ``OutputError`` naming ``path`` and the cause;
    ``what`` is how the user named the file (``--stats-json``), for the message.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open supports modes 'w' and 'wb', not {mode!r}")
    dest = Path(path)
    if dest.is_dir():
        raise OutputError.from_os_error(dest, IsADirectoryError(errno.EISDIR, "Is a directory"), what=what)
    tmp = ""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=str(dest.parent))
        # mkstemp makes the file 0600; give it the mode a plain open() would (0666 less the umask)
        os.chmod(tmp, 0o666 & ~_current_umask())
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            try:
                yield fh
            except OSError as exc:  # the caller's own OSErrors pass unless only a write can cause them
                if exc.errno not in WRITE_ERRNOS:
                    raise _Passed(exc) from None
                raise
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except _Passed as passed:
        _remove(tmp)
        raise passed.exc from None
    except OSError as exc:
        _remove(tmp)
        raise OutputError.from_os_error(dest, exc, what=what, note=f"{dest.name} was not written") from None
    except BaseException:
        _remove(tmp)
        raise


class _Passed(Exception):
    """Carries an OSError of the caller's through ``atomic_open`` unchanged."""

    def __init__(self, exc: OSError) -> None:
        super().__init__(str(exc))
        self.exc = exc


def _remove(tmp: str) -> None:
    if tmp:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: PathLike, data: bytes, *, what: str = "") -> None:
    with atomic_open(path, "wb", what=what) as fh:
        fh.write(data)


def atomic_write_text(path: PathLike, text: str, *, what: str = "") -> None:
    with atomic_open(path, "w", what=what) as fh:
        fh.write(text)


def atomic_write_json(path: PathLike, obj: Any, *, what: str = "") -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n", what=what)


# -- output checks ---------------------------------------------------------------------------------

#: Less free space than this on an output's disk counts as full: a video writer's next flush (FFmpeg
#: writes in 32 KiB blocks) cannot complete.
LOW_SPACE_BYTES = 64 * 1024


def free_bytes(folder: PathLike) -> int:
    """Bytes this process can still write on ``folder``'s file system (root may use the reserved blocks)."""
    st = os.statvfs(folder)
    blocks = st.f_bfree if hasattr(os, "geteuid") and os.geteuid() == 0 else st.f_bavail
    return int(blocks) * int(st.f_frsize)


def check_output_path(path: PathLike, what: str = "", *, make_folder: bool = False) -> Path:
    """Refuse, before any work, an output that cannot be written: ``path`` is a folder (EISDIR), its
    folder is missing (ENOENT; with ``make_folder`` the writer creates it, so only the rest is checked
    when it exists) or not a folder (ENOTDIR), not writable (EACCES, EROFS: a probe file is created and
    removed), or its disk is full (ENOSPC: under ``LOW_SPACE_BYTES`` free). Writes nothing under
    ``path``; returns it as a Path."""
    dest = Path(path)
    if dest.is_dir():
        raise OutputError.from_os_error(dest, IsADirectoryError(errno.EISDIR, "Is a directory"), what=what)
    folder = dest.parent
    if not folder.exists():
        if make_folder:
            return dest
        raise OutputError(dest, "ENOENT", f"folder {folder} does not exist", "create it first", what=what)
    if not folder.is_dir():
        raise OutputError(dest, "ENOTDIR", f"{folder} is a file, not a folder", "check the path", what=what)
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".probe", dir=str(folder))
        os.close(fd)
        os.unlink(probe)
        free = free_bytes(folder)
    except OSError as exc:
        raise OutputError.from_os_error(dest, exc, what=what) from None
    if free < LOW_SPACE_BYTES:
        raise OutputError.from_os_error(dest, OSError(errno.ENOSPC, "No space left on device"), what=what,
                                        note=f"{free} bytes free")
    return dest


def _json_default(obj: Any) -> Any:
    # numpy scalars/arrays and Paths appear in configs; write them as plain JSON.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serializable")


def read_sidecar(model_path: PathLike, required: bool = True) -> Optional[Dict[str, Any]]:
    """Read the sidecar of ``model_path``; None if absent and not required."""
    path = sidecar_path(model_path)
    if not path.exists():
        if required:
            raise ModelError(
                f"{path} not found: every model file needs its JSON sidecar beside it (same name, .json). "
                f"Re-run the stage that wrote {Path(model_path).name}, or pass the missing details as flags."
            )
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path} is not valid JSON ({exc}); delete it and re-run the stage that wrote it") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path} must hold a JSON object, found {type(data).__name__}")
    return data


def write_sidecar(model_path: PathLike, data: Dict[str, Any]) -> Path:
    """Write ``data`` as the sidecar of ``model_path`` atomically; returns the sidecar path."""
    out = dict(data)
    out.setdefault("sidecar_version", SIDECAR_VERSION)
    path = sidecar_path(model_path)
    atomic_write_json(path, out)
    log.debug("wrote sidecar %s", path)
    return path


def derive_sidecar(
    source_model: PathLike, out_model: PathLike, stage: str, updates: Dict[str, Any]
) -> Dict[str, Any]:
    """Carry a sidecar forward one stage: the source's fields, updated, plus a history entry.

    The source sidecar may be absent (a user's own ONNX); then only ``updates`` are kept. The history
    records each stage with the input file's sha256, so a later stage can tell what its input came from.
    """
    base = read_sidecar(source_model, required=False) or {}
    history = list(base.get("history", []))
    history.append({"stage": stage, "input": Path(source_model).name, "input_sha256": sha256_file(source_model)})
    merged = dict(base)
    merged.update(updates)
    merged["history"] = history
    merged["file"] = Path(out_model).name
    return merged
