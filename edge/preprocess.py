"""Where images are decoded and preprocessed for the model: the one implementation that
training, conversion and the edge runner all call (see ``edge.contract`` for the contract).

- ``decode_image``: bytes or a file -> 8-bit RGB (grayscale, RGBA and 16-bit are converted).
- ``frame_to_rgb``: an OpenCV BGR camera/video frame -> RGB.
- ``resize_for_model``: RGB of any size -> ``size`` x ``size`` x 3 uint8, raw 0..255 pixels.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edge.errors import ImageDecodeError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
_JPEG_START = b"\xff\xd8"
_JPEG_END = b"\xff\xd9"


def is_image_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def read_file_bytes(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ImageDecodeError(f"cannot read file: {exc.strerror or exc}") from None


def decode_image(data: bytes) -> np.ndarray:
    """Decode encoded image bytes to an 8-bit RGB array of shape (H, W, 3).

    Raises ImageDecodeError for empty, truncated or undecodable data.
    """
    return _to_rgb8(_decode_as_stored(data))


def _decode_as_stored(data: bytes) -> np.ndarray:
    """OpenCV's decode, unconverted: BGR, BGRA or grey, 8 or 16 bits."""
    if not data:
        raise ImageDecodeError("empty file")
    if data.startswith(_JPEG_START) and _JPEG_END not in data[-64:]:
        # libjpeg "decodes" a truncated JPEG into a grey-filled image with only a warning.
        raise ImageDecodeError("truncated JPEG (no end-of-image marker)")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise ImageDecodeError("not a decodable image")
    return image


def load_image(path: str | Path) -> np.ndarray:
    """Read and decode an image file to 8-bit RGB."""
    return decode_image(read_file_bytes(path))


def frame_to_rgb(frame_bgr: np.ndarray) -> np.ndarray:
    """OpenCV frames (VideoCapture, imread) are BGR; the model takes RGB."""
    return _to_rgb8(frame_bgr)


def resize_for_model(rgb: np.ndarray, size: int) -> np.ndarray:
    """Squash an RGB image to size x size with INTER_AREA (keeps thin cracks when shrinking)."""
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return np.ascontiguousarray(rgb, dtype=np.uint8)
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)


def load_for_model(path: str | Path, size: int) -> np.ndarray:
    """File -> the model's input: size x size x 3 uint8 RGB, raw 0..255.

    The same pixels as ``resize_for_model(load_image(path), size)``. For 8-bit images (almost
    every photo) the colour conversion runs after the resize, on far fewer pixels: both are
    per-pixel or per-channel, so the order does not change the result."""
    image = _decode_as_stored(read_file_bytes(path))
    if image.dtype != np.uint8:
        return resize_for_model(_to_rgb8(image), size)
    return _to_rgb8(resize_for_model(image, size))


def _to_rgb8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype in (np.float32, np.float64):
        image = np.clip(image * (255.0 if image.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageDecodeError(f"unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if channels == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    raise ImageDecodeError(f"unsupported channel count {channels}")
