"""edge.data.images: header sizes agree with real decodes; broken files raise DataError naming the file."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.data.images import image_size, list_images, read_image
from edge.errors import DataError


def _image(h=30, w=50, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(h, w, channels) if channels else (h, w), dtype=np.uint8)


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".bmp", ".gif", ".webp", ".tif"])
def test_header_size_matches_decode(tmp_path, suffix):
    path = tmp_path / f"img{suffix}"
    if not cv2.imwrite(str(path), _image(30, 50)):
        pytest.skip(f"this OpenCV build cannot write {suffix}")
    assert image_size(path) == (50, 30)
    image = read_image(path)
    assert image.shape == (30, 50, 3) and image.dtype == np.uint8


def test_grayscale_alpha_and_16bit_become_bgr_uint8(tmp_path):
    cv2.imwrite(str(tmp_path / "gray.png"), _image(20, 40, channels=0))
    cv2.imwrite(str(tmp_path / "rgba.png"), _image(20, 40, channels=4))
    cv2.imwrite(str(tmp_path / "deep.png"), (_image(20, 40).astype(np.uint16) * 257))
    for name in ("gray.png", "rgba.png", "deep.png"):
        image = read_image(tmp_path / name)
        assert image.shape == (20, 40, 3) and image.dtype == np.uint8, name
        assert image_size(tmp_path / name) == (40, 20)


def test_non_ascii_path(tmp_path):
    path = tmp_path / "célula_血.jpg"
    assert cv2.imencode(".jpg", _image())[1].tofile(str(path)) is None
    assert image_size(path) == (50, 30)
    assert read_image(path).shape == (30, 50, 3)


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp"])
def test_exif_orientation_size_agrees_with_decoder(tmp_path, suffix):
    pil = pytest.importorskip("PIL.Image", reason="Pillow writes the EXIF test images")
    image = pil.fromarray(_image(30, 50))  # 50 wide, 30 high
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / f"rotated{suffix}"
    image.save(path, exif=exif.tobytes())
    decoded = read_image(path)
    assert image_size(path) == (decoded.shape[1], decoded.shape[0])


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.jpg does not exist"):
        image_size(tmp_path / "nope.jpg")
    with pytest.raises(DataError, match="nope.jpg does not exist"):
        read_image(tmp_path / "nope.jpg")


def test_empty_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="empty.jpg is empty"):
        image_size(tmp_path / "empty.jpg")
    with pytest.raises(DataError, match="empty.jpg is empty"):
        read_image(tmp_path / "empty.jpg")


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("these are not pixels\n" * 20)
    with pytest.raises(DataError, match="notes.jpg could not be decoded"):
        image_size(path)  # unknown header: falls back to a real decode
    with pytest.raises(DataError, match="notes.jpg could not be decoded"):
        read_image(path)


def test_directory_is_not_an_image(tmp_path):
    (tmp_path / "dir.jpg").mkdir()
    with pytest.raises(DataError, match="directory"):
        image_size(tmp_path / "dir.jpg")


def test_corrupt_jpeg_header(tmp_path):
    data = cv2.imencode(".jpg", _image())[1].tobytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[:40])  # ends inside the header, before the start-of-frame
    with pytest.raises(DataError, match="cut.jpg has a corrupt JPEG header"):
        image_size(path)


def test_corrupt_png_header(tmp_path):
    path = tmp_path / "bad.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dXXXX" + b"\x00" * 20)
    with pytest.raises(DataError, match="bad.png has a corrupt PNG header"):
        image_size(path)


def test_truncated_jpeg_passes_header_fails_decode(tmp_path):
    data = cv2.imencode(".jpg", _image(60, 80))[1].tobytes()
    path = tmp_path / "half.jpg"
    path.write_bytes(data[: len(data) // 2])
    assert image_size(path) == (80, 60)  # the cheap check cannot see it
    with pytest.raises(DataError, match="half.jpg"):
        read_image(path)


def test_truncated_png_fails_decode(tmp_path):
    data = cv2.imencode(".png", _image(60, 80))[1].tobytes()
    path = tmp_path / "half.png"
    path.write_bytes(data[: len(data) // 2])
    assert image_size(path) == (80, 60)
    with pytest.raises(DataError, match="half.png could not be decoded"):
        read_image(path)


def test_list_images_recursive_sorted(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for rel in ("z.jpg", "a/y.PNG", "a/b/x.jpeg"):
        cv2.imwrite(str(tmp_path / rel), _image())
    (tmp_path / "a" / "labels.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    found = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert found == ["a/b/x.jpeg", "a/y.PNG", "z.jpg"]
