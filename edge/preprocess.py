"""Where images are decoded and preprocessed for the model: the one implementation that
training, conversion and the edge runner all call (see ``edge.contract`` for the contract).

- ``ImageFile``: an image file opened for decoding; its header is read and checked against the
  pixel limit (``edge.image_header``) before a single pixel is decoded.
- ``decode_image`` / ``load_image``: bytes or a file -> 8-bit RGB, at full resolution.
- ``load_for_model``: a file -> the model's input (a large JPEG decoded at reduced scale).
- ``frame_to_rgb``: an OpenCV BGR camera/video frame -> RGB.
- ``resize_for_model``: RGB of any size -> ``size`` x ``size`` x 3 uint8, raw 0..255 pixels.

What a file may hold, on purpose:
- a JPEG is judged by libjpeg itself: any warning that the data is corrupt or ends early makes
  it an error (``damaged JPEG: ...``), never a score of a half-grey picture; bytes after the
  end-of-image marker (padding, appended metadata, motion photos) are ignored, as libjpeg does.
  The limit of that verdict, measured on 80 real photos (CrackForest, surface_crack) damaged at
  3 places each: cut, deleted or repeated bytes 240 of 240 caught, 200 zeroed bytes 233 of 240,
  200 random bytes 195 of 240, one changed byte 45 of 240. A change that leaves a valid Huffman
  stream (most single-byte changes) is invisible to any JPEG decoder. A reduced-scale decode
  (below) still reads every coefficient and gives the same verdicts (120 of 120 damaged
  CrackForest photos alike at full and 1/8 scale). Decodes run side by side, each watching
  stderr; a photo whose watch saw a damage warning (its own, or a neighbour's) is decoded again,
  alone, for a verdict of its own (``edge.stderr_capture``);
- 16-bit images are scaled by the bit depth their data uses: the smallest of 8, 10, 12, 14 or 16
  bits that holds the brightest value (a 12-bit sensor's 0..4095 becomes 0..255, not near black);
- float images must be finite (a NaN or infinite pixel is an error); values up to 1.0 are taken
  as 0..1, larger ones as 0..255, and anything outside is clipped;
- grey, grey+alpha, RGBA and palette images become RGB (alpha is dropped);
- the EXIF orientation is applied: pixels come out upright, as the photo was taken (edge/exif.py).

Large JPEGs are decoded at reduced scale when only a smaller image is wanted: libjpeg decodes at
1/2, 1/4 or 1/8 scale during decompression (its scaled inverse DCT), several times faster than a
full decode and with a fraction of the memory. ``jpeg_reduction`` picks the largest reduction that
still leaves the pixels the model needs: the model input on the image's shorter side
(``load_for_model``, so training, `crack predict`, conversion and `score` see the same pixels), or
on the smallest tile's shorter side with ``--tiles`` (``edge.score``). The pixel limit counts the
pixels actually decoded, so a 48 MP JPEG decoded at 1/8 fits a small ``--max-pixels``.
A 480x320 photo at 224 px is never reduced (320 < 2 x 224); a 4032x3024 one is read at 1/8.
Tile boxes stay in full-resolution pixels; a tile is cut from the reduced image at 1/reduction
(for a mirrored or turned photo whose size is not a multiple of the reduction, up to one reduced
pixel off, as libjpeg's partial last block lands on the other side).
The pixels differ a little from a full decode's, so the model contract records which way a model
was trained (``decode``: ``reduced-jpeg``, or ``full`` for models trained before) and every
caller passes it on: a model is served the way it was trained.
"""

from __future__ import annotations

import errno
import io
import os
import re
import stat
from pathlib import Path

import cv2
import numpy as np

from edge.contract import DECODE_FULL, DECODE_REDUCED_JPEG
from edge.errors import ImageDecodeError
from edge.exif import ORIENTED_BY_US, read_exif, turns_sideways, upright
from edge.image_header import DEFAULT_MAX_PIXELS, ImageHeader, check_decode_size, read_header
from edge.stderr_capture import call_capturing_stderr, call_watching_stderr, pass_on

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
_JPEG_END = b"\xff\xd9"
# libjpeg warnings that mean the pixels are not what the camera recorded (a bad ICC profile or an
# unknown JFIF version does not change them), found anywhere in what stderr caught: another
# thread's unfinished line may stand before one
_JPEG_DAMAGE = re.compile(r"(?:Corrupt JPEG data(?!: bad ICC marker)|Premature end of JPEG file|"
                          r"Invalid SOS parameters|Inconsistent progression sequence)[^\n]*\n?")
_BIT_DEPTHS = (8, 10, 12, 14, 16)
JPEG_REDUCTIONS = (8, 4, 2)  # the scales libjpeg decodes at, largest reduction first
# OpenCV flags for a reduced decode. IMREAD_IGNORE_ORIENTATION: OpenCV would turn the pixels by the
# EXIF orientation itself, and ``upright`` turns them (once) on every path.
_REDUCED_COLOUR = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                   8: cv2.IMREAD_REDUCED_COLOR_8}
_REDUCED_GREY = {2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
                 8: cv2.IMREAD_REDUCED_GRAYSCALE_8}


def jpeg_reduction(header: ImageHeader, side: int, needed: int) -> int:
    """The largest reduction (8, 4 or 2; else 1, a full decode) at which ``side`` pixels of this
    image (its shorter side, or the shorter side of its smallest tile) still decode to at least
    ``needed`` pixels (the model's input size). Only 8-bit JPEGs decode at reduced scale."""
    if not _reducible(header):
        return 1
    return next((reduction for reduction in JPEG_REDUCTIONS if side >= reduction * needed), 1)


def _reducible(header: ImageHeader) -> bool:
    return header.format == "jpeg" and header.bytes_per_sample == 1


def is_image_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def read_file_bytes(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ImageDecodeError(_cannot_read(path, exc)) from None


def _cannot_read(path: str | Path, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError) and os.path.islink(path):
        return "broken symbolic link (its target is missing)"
    if exc.errno == errno.ELOOP:
        return "symbolic link loop"
    return f"cannot read file: {exc.strerror or exc}"


class ImageFile:
    """An image file open for decoding, its header read and checked; nothing decoded yet.

        with ImageFile(path, max_pixels) as image:   # ImageDecodeError: unreadable, too large
            rgb = image.decode()                    # or image.decode(reduction), ImageTooLarge

    Opening refuses what no decode could fit (an 8-bit JPEG at 1/8 scale, anything else whole);
    each decode checks the limit at its own scale. ``cost(reduction)`` is the most memory a decode
    will hold at once (``ImageHeader.decode_memory`` and an 8-bit copy), for a shared budget."""

    def __init__(self, path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.path, self.max_pixels = path, max_pixels
        try:  # non-blocking: opening a FIFO must not wait for a writer
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise ImageDecodeError(_cannot_read(path, exc)) from None
        self._file = os.fdopen(fd, "rb")
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ImageDecodeError(f"not a regular file ({_file_kind(info.st_mode)})")
            self.size = info.st_size
            self.header = read_header(self._file)
            self.check(JPEG_REDUCTIONS[0] if _reducible(self.header) else 1)
            self.exif = read_exif(self._file)  # capture time, GPS, orientation; never raises
        except OSError as exc:
            self.close()
            raise ImageDecodeError(_cannot_read(path, exc)) from None
        except BaseException:
            self.close()
            raise

    @property
    def upright_size(self) -> tuple[int, int]:
        """(height, width) of the decoded image, turned upright, at full resolution."""
        header = self.header
        if turns_sideways(self.exif.orientation):
            return header.width, header.height
        return header.height, header.width

    def reduction_for(self, side: int, needed: int, decode: str = DECODE_REDUCED_JPEG) -> int:
        """``jpeg_reduction`` of this image (``side`` is a length in its full-resolution pixels);
        1 when the model's contract says ``decode`` ``full``."""
        return 1 if decode == DECODE_FULL else jpeg_reduction(self.header, side, needed)

    def check(self, reduction: int = 1) -> None:
        """Raise ImageTooLarge if decoding at 1/``reduction`` scale would go over the limit."""
        check_decode_size(self.header, self.max_pixels, reduction, self.size)

    def cost(self, reduction: int = 1) -> int:
        header = self.header
        pixels = header.decoded_pixels(reduction)
        copy = 0 if header.bytes_per_sample == 1 and header.channels == 3 else \
            pixels * 3  # the 8-bit RGB version
        turn = pixels * header.channels * header.bytes_per_sample \
            if header.format in ORIENTED_BY_US and turns_sideways(self.exif.orientation) else 0
        return header.decode_memory(self.size, reduction) + copy + turn

    def read(self) -> bytes:
        try:
            self._file.seek(0)
            data = self._file.read()
        except OSError as exc:
            raise ImageDecodeError(_cannot_read(self.path, exc)) from None
        if not data:
            raise ImageDecodeError("empty file")
        return data

    def decode_stored(self, reduction: int = 1) -> np.ndarray:
        """The image as OpenCV decodes it, turned upright: BGR, BGRA or grey; 8 or 16 bits or
        float; at 1/``reduction`` scale (a JPEG only: see ``jpeg_reduction``)."""
        if reduction != 1 and (reduction not in JPEG_REDUCTIONS or not _reducible(self.header)):
            raise ValueError(f"a {self.header.format} image cannot be decoded at 1/{reduction}")
        self.check(reduction)
        return _decode_stored(self.read(), self.header, self.exif.orientation, reduction)

    def decode(self, reduction: int = 1) -> np.ndarray:
        """8-bit RGB, at 1/``reduction`` scale."""
        return _to_rgb8(self.decode_stored(reduction), owned=True)

    def decode_for_model(self, size: int, decode: str = DECODE_REDUCED_JPEG) -> np.ndarray:
        """The model's input: size x size x 3 uint8 RGB, raw 0..255: the same pixels as
        ``resize_for_model(self.decode(reduction), size)``, where ``reduction`` leaves at least
        ``size`` pixels on the shorter side (1 for all but large JPEGs, and for ``decode``
        ``full``, the contract's field). For 8-bit images (almost every photo) the colour
        conversion runs after the resize, on far fewer pixels: both are per pixel or per channel,
        so the order does not change the result."""
        image = self.decode_stored(self.reduction_for(min(self.upright_size), size, decode))
        if image.dtype != np.uint8:
            return resize_for_model(_to_rgb8(image, owned=True), size)
        return _to_rgb8(resize_for_model(image, size), owned=True)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "ImageFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a plain file"


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode encoded image bytes to an 8-bit RGB array of shape (H, W, 3).

    Raises ImageDecodeError for empty, truncated, damaged, too large or undecodable data.
    """
    header = read_header(io.BytesIO(data))
    check_decode_size(header, max_pixels, file_bytes=len(data))
    orientation = read_exif(io.BytesIO(data)).orientation
    return _to_rgb8(_decode_stored(data, header, orientation), owned=True)


def load_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read and decode an image file to 8-bit RGB."""
    with ImageFile(path, max_pixels) as image:
        return image.decode()


def load_for_model(path: str | Path, size: int, max_pixels: int = DEFAULT_MAX_PIXELS,
                   decode: str = DECODE_REDUCED_JPEG) -> np.ndarray:
    """File -> the model's input: size x size x 3 uint8 RGB, raw 0..255; ``decode`` is the
    model contract's (``reduced-jpeg``, how crackkit trains, or ``full``)."""
    with ImageFile(path, max_pixels) as image:
        return image.decode_for_model(size, decode)


def _decode_stored(data: bytes, header: ImageHeader, orientation: int | None,
                   reduction: int = 1) -> np.ndarray:
    buffer = np.frombuffer(data, dtype=np.uint8)
    flags = cv2.IMREAD_UNCHANGED
    if reduction > 1:
        flags = (_REDUCED_GREY if header.channels == 1 else _REDUCED_COLOUR)[reduction] \
            | cv2.IMREAD_IGNORE_ORIENTATION

    def decode() -> np.ndarray | None:
        return cv2.imdecode(buffer, flags)

    try:
        if header.format == "jpeg":
            # decodes run side by side, each watching stderr; a damage warning in a decode's
            # window may be another's, so that photo is decoded again, alone, for its own verdict
            image, window = call_watching_stderr(decode, strip=_without_damage)
            if _JPEG_DAMAGE.search(window):
                image, messages = call_capturing_stderr(decode)
                _judge_jpeg(image, messages, data, header)
            else:
                _judge_jpeg(image, "", data, header)
        else:
            image = decode()
    except cv2.error as exc:
        lines = str(exc).strip().splitlines()
        raise ImageDecodeError(f"cannot decode: {lines[-1] if lines else 'OpenCV error'}") from None
    if image is None or image.size == 0:
        raise ImageDecodeError("not a decodable image")
    # IMREAD_UNCHANGED keeps JPEG, PNG and WebP as stored; OpenCV's TIFF decoder turns TIFFs itself
    return upright(image, orientation) if header.format in ORIENTED_BY_US else image


def _judge_jpeg(image: np.ndarray | None, messages: str, data: bytes, header: ImageHeader) -> None:
    """Raise for a JPEG that libjpeg says is damaged or that it could not decode."""
    damage = [found.group(0).strip() for found in _JPEG_DAMAGE.finditer(messages)]
    pass_on(_without_damage(messages))  # a harmless libjpeg warning, or another thread's output
    ended = data.find(_JPEG_END, header.scan_offset or 2) >= 0
    if any(text.startswith("Premature end of JPEG file") for text in damage) or (
            image is None and not ended):
        raise ImageDecodeError("truncated JPEG (the data ends before the end-of-image marker)")
    if damage:
        raise ImageDecodeError(f"damaged JPEG: {damage[0]}")
    if image is None:
        raise ImageDecodeError("damaged JPEG: the decoder could not read it")


def _without_damage(text: str) -> str:
    return _JPEG_DAMAGE.sub("", text)


def frame_to_rgb(frame_bgr: np.ndarray) -> np.ndarray:
    """OpenCV frames (VideoCapture, imread) are BGR; the model takes RGB."""
    return _to_rgb8(frame_bgr, owned=False)


def resize_for_model(rgb: np.ndarray, size: int) -> np.ndarray:
    """Squash an RGB image to size x size with INTER_AREA (keeps thin cracks when shrinking)."""
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return np.ascontiguousarray(rgb, dtype=np.uint8)
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)


def bits_used(image: np.ndarray) -> int:
    """The bit depth a 16-bit image's data uses (see the module docstring)."""
    peak = int(image.max()) if image.size else 0
    return next(bits for bits in _BIT_DEPTHS if peak < (1 << bits) or bits == 16)


def _to_8_bit(image: np.ndarray, owned: bool) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return cv2.convertScaleAbs(image, alpha=255.0 / ((1 << bits_used(image)) - 1))
    if image.dtype in (np.float32, np.float64):
        if not cv2.checkRange(image, quiet=True)[0]:
            raise ImageDecodeError("image has NaN or infinite pixels")
        top = 1.0 if image.max() <= 1.0 else 255.0
        image = np.clip(image, 0.0, top, out=image if owned else None)
        return cv2.convertScaleAbs(image, alpha=255.0 / top)
    raise ImageDecodeError(f"unsupported pixel type {image.dtype}")


def _to_rgb8(image: np.ndarray, owned: bool) -> np.ndarray:
    """8-bit RGB from what OpenCV decodes; converts in place when the array is ``owned``."""
    deep = image.dtype != np.uint8
    image = _to_8_bit(image, owned)
    owned = owned or deep
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if channels == 3:
        if owned and image.flags.c_contiguous:
            return cv2.cvtColor(image, cv2.COLOR_BGR2RGB, dst=image)
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    raise ImageDecodeError(f"unsupported channel count {channels}")
