"""Image files: a cheap header check for the size, and the real decode.

``image_size(path)`` reads only the file header (JPEG, PNG, BMP, GIF, WebP; anything else falls back to a
full decode), so a loader can check every image of a large split for existence and a readable header
without decoding pixels. ``read_image(path)`` decodes with OpenCV and is the check that the pixels are
really there (a truncated JPEG passes the header check and fails here).

Both honour the EXIF orientation the way OpenCV's decoder does (JPEG: parsed from the header; PNG/WebP
with EXIF: decoded to be sure), so ``image_size(p) == (w, h)`` of ``read_image(p)`` for every readable file.

No torch here: this module is on the runtime path.
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np

from edge.errors import DataError, import_optional

log = logging.getLogger(__name__)

PathLike = Union[str, Path]

#: File suffixes (lower case) treated as images when a folder is listed.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

# JPEG start-of-frame markers carry the size: SOF0..SOF15 minus DHT (C4), JPG (C8) and DAC (CC).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# EXIF orientations 5..8 rotate by 90 degrees: width and height swap.
_SWAPPING_ORIENTATIONS = frozenset((5, 6, 7, 8))


def _cv2():
    return import_optional("cv2", "opencv-python", "reading images",
                           "install it with `pip install opencv-python` (on a Jetson: `sudo apt install python3-opencv`)")


def read_image(path: PathLike) -> np.ndarray:
    """Decode an image file to a BGR uint8 array of shape [H, W, 3].

    Grayscale, palette, 16-bit and alpha images are converted to 3-channel 8-bit BGR; the JPEG EXIF
    orientation is applied (as ``cv2.imread`` does). Works with non-ASCII paths.

    Raises:
        DataError: the file is missing, unreadable, or not a decodable image; the message names it.
    """
    cv2 = _cv2()
    p = Path(path)
    try:
        data = np.fromfile(str(p), dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"image file {p} does not exist; check the path or the dataset root") from None
    except OSError as exc:
        raise DataError(f"image file {p} cannot be read ({exc}); check its permissions") from None
    if data.size == 0:
        raise DataError(f"image file {p} is empty (0 bytes); re-download or remove it")
    if data[:3].tobytes() == b"\xff\xd8\xff" and data[-4096:].tobytes().rfind(b"\xff\xd9") < 0:
        # some OpenCV builds return a half-grey image for a truncated JPEG instead of failing
        raise DataError(
            f"image file {p} is a truncated JPEG (no end-of-image marker in its last bytes); "
            "re-download or remove it"
        )
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(
            f"image file {p} could not be decoded by OpenCV ({data.size} bytes); "
            "expected a JPEG/PNG/BMP/... image: the file is corrupt or not an image, replace or remove it"
        )
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:  # pragma: no cover - IMREAD_COLOR
        raise DataError(f"image file {p} decoded to {image.dtype} {image.shape}, expected uint8 HxWx3")
    return image


def image_size(path: PathLike) -> Tuple[int, int]:
    """Return ``(width, height)`` of an image from its header, without decoding the pixels.

    Cheap for JPEG, PNG, BMP, GIF and WebP; any other format is decoded in full. The size is the one
    ``read_image`` will return (JPEG EXIF orientation applied).

    Raises:
        DataError: the file is missing, empty, or its header is not a readable image header.
    """
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(32)
            if not head:
                raise DataError(f"image file {p} is empty (0 bytes); re-download or remove it")
            f.seek(0)
            size = _header_size(f, head, p)
    except FileNotFoundError:
        raise DataError(f"image file {p} does not exist; check the path or the dataset root") from None
    except IsADirectoryError:
        raise DataError(f"image path {p} is a directory, expected an image file") from None
    except PermissionError as exc:
        raise DataError(f"image file {p} cannot be read ({exc}); check its permissions") from None
    if size is None:
        image = read_image(p)
        size = (int(image.shape[1]), int(image.shape[0]))
    w, h = size
    if w <= 0 or h <= 0:
        raise DataError(
            f"image file {p} has a header with size {w}x{h}; expected a positive size: corrupt file"
        )
    return size


def _header_size(f, head: bytes, p: Path) -> Optional[Tuple[int, int]]:
    """Size from the header of an open file, or None for a format without a header parser here."""
    if head[:3] == b"\xff\xd8\xff":
        return _jpeg_size(f, p)
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        if len(head) < 24 or head[12:16] != b"IHDR":
            raise _corrupt(p, "PNG", "no IHDR chunk")
        w, h = struct.unpack(">II", head[16:24])
        if _png_has_exif(f):
            return None  # OpenCV may apply its orientation: let the decoder say the size
        return int(w), int(h)
    if head[:6] in (b"GIF87a", b"GIF89a"):
        if len(head) < 10:
            raise _corrupt(p, "GIF", "truncated header")
        w, h = struct.unpack("<HH", head[6:10])
        return int(w), int(h)
    if head[:2] == b"BM":
        if len(head) < 26:
            raise _corrupt(p, "BMP", "truncated header")
        header_size = struct.unpack("<I", head[14:18])[0]
        if header_size == 12:  # OS/2 BITMAPCOREHEADER
            w, h = struct.unpack("<HH", head[18:22])
        else:
            w, h = struct.unpack("<ii", head[18:26])
        return int(w), abs(int(h))  # negative height: top-down bitmap
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _webp_size(f, p)
    return None


def _corrupt(p: Path, kind: str, why: str) -> DataError:
    return DataError(f"image file {p} has a corrupt {kind} header ({why}); replace or remove the file")


def _read_exact(f, n: int, p: Path) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise _corrupt(p, "JPEG", "file ends inside the header")
    return data


def _jpeg_size(f, p: Path) -> Tuple[int, int]:
    """Walk the JPEG marker segments up to the first start-of-frame; apply the EXIF orientation."""
    f.seek(2)
    orientation = 1
    while True:
        byte = f.read(1)
        while byte == b"\xff":  # fill bytes before a marker
            byte = f.read(1)
        if not byte:
            raise _corrupt(p, "JPEG", "no start-of-frame marker before the end of the file")
        marker = byte[0]
        if marker == 0xD9 or marker == 0xDA:  # end of image / start of scan before any SOF
            raise _corrupt(p, "JPEG", "no start-of-frame marker before the image data")
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            continue
        (length,) = struct.unpack(">H", _read_exact(f, 2, p))
        if length < 2:
            raise _corrupt(p, "JPEG", f"segment length {length}")
        payload = _read_exact(f, length - 2, p)
        if marker in _SOF_MARKERS:
            if len(payload) < 5:
                raise _corrupt(p, "JPEG", "short start-of-frame segment")
            h, w = struct.unpack(">HH", payload[1:5])
            if orientation in _SWAPPING_ORIENTATIONS:
                w, h = h, w
            return int(w), int(h)
        if marker == 0xE1 and payload[:6] == b"Exif\x00\x00":
            orientation = _exif_orientation(payload[6:])


def _exif_orientation(tiff: bytes) -> int:
    """The EXIF Orientation tag (0x0112) of IFD0 in a TIFF block, or 1 when absent or unreadable."""
    try:
        if tiff[:2] == b"II":
            endian = "<"
        elif tiff[:2] == b"MM":
            endian = ">"
        else:
            return 1
        (ifd,) = struct.unpack(endian + "I", tiff[4:8])
        (count,) = struct.unpack(endian + "H", tiff[ifd : ifd + 2])
        for i in range(count):
            entry = tiff[ifd + 2 + 12 * i : ifd + 14 + 12 * i]
            tag, typ = struct.unpack(endian + "HH", entry[:4])
            if tag == 0x0112 and typ == 3:  # SHORT
                (value,) = struct.unpack(endian + "H", entry[8:10])
                return int(value) if 1 <= value <= 8 else 1
    except struct.error:
        return 1
    return 1


def _png_has_exif(f) -> bool:
    """Whether a PNG has an eXIf chunk before its image data (the file is positioned anywhere)."""
    f.seek(8)
    while True:
        header = f.read(8)
        if len(header) < 8:
            return False
        length, kind = struct.unpack(">I4s", header)
        if kind == b"eXIf":
            return True
        if kind in (b"IDAT", b"IEND"):
            return False
        f.seek(length + 4, 1)  # data + CRC


def _webp_size(f, p: Path) -> Optional[Tuple[int, int]]:
    f.seek(12)
    chunk = f.read(18)
    if len(chunk) < 18:
        raise _corrupt(p, "WebP", "truncated header")
    kind, data = chunk[:4], chunk[8:]
    if kind == b"VP8 ":
        if data[3:6] != b"\x9d\x01\x2a":
            raise _corrupt(p, "WebP", "bad VP8 frame tag")
        w, h = struct.unpack("<HH", data[6:10])
        return int(w & 0x3FFF), int(h & 0x3FFF)
    if kind == b"VP8L":
        if data[0] != 0x2F:
            raise _corrupt(p, "WebP", "bad VP8L signature")
        bits = int.from_bytes(data[1:5], "little")
        return int((bits & 0x3FFF) + 1), int(((bits >> 14) & 0x3FFF) + 1)
    if kind == b"VP8X":
        if data[0] & 0x08:  # EXIF present: OpenCV may apply its orientation, let the decoder say the size
            return None
        w = int.from_bytes(data[4:7], "little") + 1
        h = int.from_bytes(data[7:10], "little") + 1
        return w, h
    raise _corrupt(p, "WebP", f"unknown chunk {kind!r}")


def list_images(folder: PathLike) -> List[Path]:
    """All image files (by suffix, see IMAGE_EXTENSIONS) under ``folder``, recursively, sorted."""
    root = Path(folder)
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
