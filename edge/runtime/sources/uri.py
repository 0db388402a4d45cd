"""Source URIs: ``parse_source`` turns a ``--source`` string into a ``SourceSpec`` (no device is opened).

Also ``camera_spec`` (``--camera N``), the ``WIDTHxHEIGHT`` size parser behind ``SourceSpec.size``, the
source kinds and the image suffixes that make a path an image source, and ``redact_uri``: the one way a
source is shown to a person or stored (logs, errors, stats), with the password of ``rtsp://user:pw@host``
and secret query parameters (``?token=...``) masked. Only the stream itself (``RtspSource.stream_url``) gets the URI with its credentials.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Tuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from edge.errors import EdgeError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
SOURCE_KINDS = ("test", "file", "images", "v4l2", "csi", "rtsp")
# query options of a stream URL that are edge's, not the camera's: dropped from the URL the stream opens
STREAM_OPTIONS = ("transport", "latency", "codec", "size", "out")
CAMERA_FORMAT_NAMES = {"mjpeg": "mjpeg", "mjpg": "mjpeg", "jpeg": "mjpeg", "h264": "h264", "yuyv": "yuyv",
                       "yuy2": "yuyv"}


_URL_AUTHORITY = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/\s?#]*)")
REDACTED = "***"


def _redact_authority(m: "re.Match[str]") -> str:
    scheme, authority = m.group(1), m.group(2)
    userinfo, at, host = authority.rpartition("@")  # the last '@': a password may hold an unescaped one
    if not at:
        return m.group(0)
    user, colon, _password = userinfo.partition(":")
    masked = f"{user}:{REDACTED}" if colon and user else REDACTED  # a bare user name may be a token
    return f"{scheme}{masked}@{host}"


# query parameters that carry a secret (signed URLs, stream tokens, API keys): their values are masked
SECRET_QUERY_KEYS = (
    "token", "access_token", "auth", "authorization", "auth_token", "password", "passwd", "pwd", "pass", "secret",
    "key", "api_key", "apikey", "sig", "signature", "credential", "credentials", "session", "sessionid",
    "x-amz-signature", "x-amz-credential", "x-amz-security-token", "x-goog-signature", "x-goog-credential",
)
_SECRET_QUERY = re.compile(
    r"(?i)([?&;](?:" + "|".join(re.escape(k) for k in SECRET_QUERY_KEYS) + r")=)([^&;#\s'\"]+)"
)


def redact_uri(text: str) -> str:
    """``text`` with the secrets of every URL in it masked: the userinfo (``rtsp://user:secret@cam/s`` ->
    ``rtsp://user:***@cam/s``, the user name kept; a userinfo without a password, ``https://TOKEN@host``, is
    masked whole) and the values of secret query parameters (``?token=...``, ``&api_key=...``,
    ``X-Amz-Signature=...``: ``SECRET_QUERY_KEYS``). Works on a bare URI and on a message quoting URIs;
    text with neither is returned unchanged."""
    return _SECRET_QUERY.sub(lambda m: m.group(1) + REDACTED, _URL_AUTHORITY.sub(_redact_authority, str(text)))


def _parse_size(text: str, what: str) -> Tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not m:
        raise EdgeError(f"{what} {text!r} is not a size; expected WIDTHxHEIGHT such as 1280x720")
    return int(m.group(1)), int(m.group(2))


@dataclass(repr=False)
class SourceSpec:
    """A parsed source URI. ``params`` holds the query options; sizes are (width, height).

    ``uri`` and ``path`` may hold credentials (``rtsp://user:pw@host``): show ``describe()`` (or
    ``str(spec)``), never ``uri``."""

    kind: str
    uri: str
    path: str = ""
    index: int = 0
    params: Dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """The URI as shown in logs, errors and stats: credentials masked (``redact_uri``)."""
        return redact_uri(self.uri)

    def __str__(self) -> str:
        return self.describe()

    def __repr__(self) -> str:
        return f"SourceSpec(kind={self.kind!r}, uri={self.describe()!r}, index={self.index})"

    @property
    def live(self) -> bool:
        if self.kind == "test":
            return self.params.get("live", "0") in ("1", "true", "yes")
        return self.kind in ("v4l2", "csi", "rtsp")

    def size(self, key: str = "size") -> Optional[Tuple[int, int]]:
        return _parse_size(self.params[key], key) if key in self.params else None

    def number(self, key: str, default: float) -> float:
        try:
            return float(self.params.get(key, default))
        except ValueError as exc:
            raise EdgeError(f"source option {key}={self.params[key]!r} is not a number ({self})") from exc

    def path_for_stream(self) -> str:
        """The stream's URL as the stream opens it: credentials included (never log it), edge's own
        options (``STREAM_OPTIONS``: transport, latency, codec, size, out) dropped from the query."""
        parts = urlsplit(self.path)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in STREAM_OPTIONS]
        return urlunsplit(parts._replace(query=urlencode(query)))

    def camera_format(self) -> Optional[str]:
        """A V4L2 camera's asked format (``?format=mjpeg|h264|yuyv``, or ``?fourcc=MJPG``), or None."""
        text = self.params.get("format") or self.params.get("fourcc")
        if not text:
            return None
        return CAMERA_FORMAT_NAMES.get(text.strip().lower(), text.strip().lower())

    def validate(self) -> "SourceSpec":
        if self.kind not in SOURCE_KINDS:
            raise EdgeError(f"unknown source kind {self.kind!r}; expected one of {SOURCE_KINDS}")
        for key in ("size", "out"):
            if key in self.params:
                w, h = self.size(key)  # type: ignore[misc]
                if w <= 0 or h <= 0:
                    raise EdgeError(f"source option {key}={self.params[key]} must be positive ({self})")
        if self.number("fps", 30) <= 0:
            raise EdgeError(f"source option fps must be > 0 ({self})")
        if self.kind == "rtsp" and self.params.get("transport") not in (None, "tcp", "udp"):
            raise EdgeError(f"source option transport={self.params['transport']!r} ({self}): expected tcp or udp "
                            "(tcp for lossy links such as Wi-Fi)")
        if self.kind == "rtsp" and self.number("latency", 0) < 0:
            raise EdgeError(f"source option latency={self.params['latency']} ({self}) must be >= 0 (milliseconds)")
        fmt = self.camera_format() if self.kind == "v4l2" else None
        if fmt is not None and fmt not in CAMERA_FORMAT_NAMES.values():
            raise EdgeError(f"source option format={fmt!r} ({self}): expected mjpeg, h264 or yuyv")
        return self


def _has_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def parse_source(uri: str) -> SourceSpec:
    """Turn a ``--source`` string into a ``SourceSpec`` (no device is opened)."""
    text = str(uri).strip()
    if not text:
        raise EdgeError("empty --source; pass a file, a folder, test://, v4l2:///dev/video0, csi://0 or rtsp://")
    if re.fullmatch(r"\d+", text):
        return camera_spec(int(text))
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    if scheme == "test":
        rest = (parts.netloc + parts.path).strip("/")
        if rest == "smear":
            params["pattern"] = "smear"
        elif rest:
            params.setdefault("size", rest)
        return SourceSpec("test", text, params=params).validate()
    if scheme == "v4l2":
        dev = parts.path or parts.netloc
        if re.fullmatch(r"\d+", dev.strip("/")):
            dev = f"/dev/video{dev.strip('/')}"
        m = re.search(r"(\d+)$", dev)
        return SourceSpec("v4l2", text, path=dev, index=int(m.group(1)) if m else 0, params=params).validate()
    if scheme == "csi":
        sensor = (parts.netloc + parts.path).strip("/") or "0"
        if not sensor.isdigit():
            raise EdgeError(f"csi://{sensor}: the sensor id must be a number such as csi://0")
        return SourceSpec("csi", text, index=int(sensor), params=params).validate()
    if scheme in ("rtsp", "rtsps", "rtmp", "http", "https"):
        return SourceSpec("rtsp", text, path=text, params=params).validate()
    if scheme == "file":
        text = parts.path if not parts.netloc else parts.netloc + parts.path
    elif scheme and len(scheme) > 1:
        raise EdgeError(
            f"unknown source scheme {scheme}:// in {redact_uri(uri)!r}; expected test://, file://, v4l2://, csi:// or rtsp://"
        )
    path = text
    if _has_glob(path) or Path(path).is_dir() or Path(path).suffix.lower() in IMAGE_EXTENSIONS:
        return SourceSpec("images", uri, path=path, params=params).validate()
    return SourceSpec("file", uri, path=path, params=params).validate()


def camera_spec(index: "int | str") -> SourceSpec:
    """``--camera N`` -> V4L2 ``/dev/videoN``; ``--camera 'N?size=WxH&fps=F&format=mjpeg'`` picks a mode."""
    text = str(index).strip()
    number, _, query = text.partition("?")
    if not re.fullmatch(r"-?\d+", number):
        raise EdgeError(f"--camera {text!r}: expected a camera index such as 0, optionally with a mode: "
                        "0?size=1280x720&fps=30&format=mjpeg")
    n = int(number)
    if n < 0:
        raise EdgeError(f"--camera {n}: the camera index must be >= 0")
    params = dict(parse_qsl(query, keep_blank_values=True))
    uri = f"v4l2:///dev/video{n}" + (f"?{query}" if query else "")
    return SourceSpec("v4l2", uri, path=f"/dev/video{n}", index=n, params=params).validate()
