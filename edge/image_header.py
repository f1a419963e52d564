"""An image's size from its file header, read before anything is decoded, and the pixel limit.

A 1 MB PNG can hold a 20000 x 20000 image: decoded, that is 1.2 GB, and an unattended device
dies of it. ``read_header`` reads only the header (seeking past metadata, never decoding) of the
formats crack-edge decodes: JPEG, PNG, BMP, TIFF, WebP, GIF and PNM. Any other file is refused,
because its decoded size cannot be known before decoding it.

``check_decode_size`` refuses an image whose decode would hold more than ``max_pixels`` pixels,
or more memory than ``memory_limit(max_pixels)``: the file's bytes, the decoded image
(``DECODE_COPIES`` times: OpenCV 5 holds a second copy while decoding) and the decoder's own
working memory (a progressive JPEG keeps every DCT coefficient, about as much again as its
pixels). So 16-bit, float and alpha images, progressive JPEGs and uncompressed files are held to
their memory, not only their pixel count. It takes the reduction the decoder will use (1, 2, 4 or
8 for a JPEG decoded at reduced scale, ``edge.preprocess.jpeg_reduction``), so the limit counts
the pixels actually decoded: a 48 MP JPEG read at 1/8 is 0.75 MP, while a PNG bomb is refused.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import BinaryIO

from edge.errors import ImageDecodeError

DEFAULT_MAX_PIXELS = 50_000_000  # a 48 MP phone photo decodes; about 150 MB: fits a 2 GB device
BYTES_PER_PIXEL = 3  # the limit's memory: max_pixels 8-bit RGB pixels...
DECODE_COPIES = 2  # ...held twice while decoding (OpenCV 5; 4.x holds one)...
FILE_ALLOWANCE = 64 << 20  # ...plus the file's bytes, up to a large JPEG's
FORMATS_READ = "JPEG, PNG, BMP, TIFF, WebP, GIF or PNM"
_MAX_TIFF_ENTRIES = 4096


class ImageTooLarge(ImageDecodeError):
    """The image's decode would exceed the pixel limit."""


@dataclass(frozen=True)
class ImageHeader:
    format: str  # "jpeg", "png", "bmp", "tiff", "webp", "gif", "pnm"
    width: int
    height: int
    channels: int  # channels of the decoded image (an upper bound where the decoder may add alpha)
    bytes_per_sample: int  # 1 (8-bit), 2 (16-bit, 12-bit JPEG), 4 or 8 (float)
    working_bytes: int = 0  # the decoder's own memory beside the image (independent of scale)
    scan_offset: int = 0  # JPEG: where the main image's scan data starts

    def decoded_pixels(self, reduction: int = 1) -> int:
        """Pixels of the decoded image when decoded at 1/``reduction`` scale."""
        return math.ceil(self.width / reduction) * math.ceil(self.height / reduction)

    def decoded_bytes(self, reduction: int = 1) -> int:
        """Bytes of the decoded image at 1/``reduction`` scale."""
        return self.decoded_pixels(reduction) * self.channels * self.bytes_per_sample

    def decode_memory(self, file_bytes: int, reduction: int = 1) -> int:
        """The most memory decoding needs: the file, the image as the decoder holds it, and the
        decoder's working memory."""
        return file_bytes + DECODE_COPIES * self.decoded_bytes(reduction) + self.working_bytes


def memory_limit(max_pixels: int) -> int:
    """The decode memory that ``max_pixels`` allows (364 MB for the default 50 MP)."""
    return max_pixels * BYTES_PER_PIXEL * DECODE_COPIES + FILE_ALLOWANCE


def check_decode_size(header: ImageHeader, max_pixels: int, reduction: int = 1,
                      file_bytes: int = 0) -> None:
    """Raise ImageTooLarge if decoding at 1/``reduction`` scale would go over the limit."""
    pixels = header.decoded_pixels(reduction)
    size = f"{header.width}x{header.height}"
    if pixels > max_pixels:
        scaled = f" ({pixel_count(pixels)} decoded at 1/{reduction})" if reduction > 1 else ""
        raise ImageTooLarge(f"image too large: {size} is {pixel_count(header.decoded_pixels())}"
                            f"{scaled}, over the --max-pixels limit of {pixel_count(max_pixels)}")
    needed, allowed = header.decode_memory(file_bytes, reduction), memory_limit(max_pixels)
    if needed > allowed:
        scale = f" at 1/{reduction} scale" if reduction > 1 else ""
        raise ImageTooLarge(f"image too large: decoding this {size} {header.format.upper()}{scale} "
                            f"({file_bytes / 1e6:.1f} MB file) needs {needed / 1e6:.0f} MB, over "
                            f"the {allowed / 1e6:.0f} MB that --max-pixels "
                            f"{pixel_count(max_pixels)} allows")


def pixel_count(pixels: int) -> str:
    return f"{pixels / 1e6:.1f} MP" if pixels >= 100_000 else f"{pixels} pixels"


def read_header(handle: BinaryIO) -> ImageHeader:
    """The header of an image file open for binary reading (seekable). Raises ImageDecodeError
    for an empty file, an unknown format or a header that makes no sense."""
    handle.seek(0)
    start = handle.read(16)
    if not start:
        raise ImageDecodeError("empty file")
    for signature, reader in _READERS:
        if start.startswith(signature):
            try:
                header = reader(handle)
            except (struct.error, ValueError, IndexError) as exc:
                raise ImageDecodeError(f"damaged {reader.__name__[6:].upper()} header "
                                       f"({exc})") from None
            if header.width <= 0 or header.height <= 0:
                raise ImageDecodeError(f"damaged {header.format.upper()} header (size "
                                       f"{header.width}x{header.height})")
            return header
    if start[:4] == b"RIFF" and start[8:12] == b"WEBP":
        return _read_webp(handle)
    raise ImageDecodeError(f"not a decodable image (not {FORMATS_READ})")


def _exactly(handle: BinaryIO, count: int) -> bytes:
    data = handle.read(count)
    if len(data) != count:
        raise ValueError("file ends inside the header")
    return data


# --- JPEG ----------------------------------------------------------------------------------------

_SOF_MARKERS = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_PROGRESSIVE = {0xC2, 0xC6, 0xCA, 0xCE}


def _read_jpeg(handle: BinaryIO) -> ImageHeader:
    handle.seek(2)
    while True:
        byte = _exactly(handle, 1)
        if byte != b"\xff":
            raise ValueError(f"no marker at byte {handle.tell() - 1}")
        marker = _exactly(handle, 1)[0]
        while marker == 0xFF:  # fill bytes
            marker = _exactly(handle, 1)[0]
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            continue
        if marker in (0xD9, 0xDA):
            raise ValueError("no frame header before the image data")
        (length,) = struct.unpack(">H", _exactly(handle, 2))
        if length < 2:
            raise ValueError("segment length below 2")
        if marker not in _SOF_MARKERS:
            handle.seek(length - 2, 1)
            continue
        segment = _exactly(handle, length - 2)
        precision, height, width, count = struct.unpack(">BHHB", segment[:6])
        sampling = [(segment[7 + 3 * i] >> 4, segment[7 + 3 * i] & 15) for i in range(count)]
        working = 0
        if marker in _PROGRESSIVE and sampling:  # libjpeg keeps every coefficient (2 bytes each)
            h_max = max(h for h, _ in sampling) or 1
            v_max = max(v for _, v in sampling) or 1
            working = sum(math.ceil(width * h / h_max / 8) * math.ceil(height * v / v_max / 8)
                          * 64 * 2 for h, v in sampling)
        return ImageHeader("jpeg", width, height, 1 if count == 1 else 3,
                           1 if precision <= 8 else 2, working_bytes=working,
                           scan_offset=_scan_offset(handle))


def _scan_offset(handle: BinaryIO) -> int:
    """Where the first scan's data starts (after the SOS segment), 0 if not found."""
    while True:
        marker = handle.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            return 0
        length = handle.read(2)
        if len(length) < 2:
            return 0
        (size,) = struct.unpack(">H", length)
        handle.seek(size - 2, 1)
        if marker[1] == 0xDA:
            return handle.tell()


# --- PNG -----------------------------------------------------------------------------------------

def _read_png(handle: BinaryIO) -> ImageHeader:
    handle.seek(8)
    length, kind = struct.unpack(">I4s", _exactly(handle, 8))
    if kind != b"IHDR" or length != 13:
        raise ValueError("no IHDR chunk first")
    width, height, depth, colour = struct.unpack(">IIBB", _exactly(handle, 10))
    handle.seek(3 + 4, 1)  # compression, filter, interlace; CRC
    transparency = False
    for _ in range(64):  # a tRNS chunk (transparency, so an alpha channel) comes before the data
        chunk = handle.read(8)
        if len(chunk) < 8:
            break
        length, kind = struct.unpack(">I4s", chunk)
        if kind in (b"IDAT", b"IEND"):
            break
        transparency = transparency or kind == b"tRNS"
        handle.seek(length + 4, 1)
    channels = {0: 1, 2: 3, 3: 3, 4: 4, 6: 4}.get(colour)
    if channels is None:
        raise ValueError(f"colour type {colour}")
    if transparency and colour in (0, 2, 3):
        channels = 4
    return ImageHeader("png", width, height, channels, 2 if depth == 16 else 1)


# --- BMP, GIF, PNM -------------------------------------------------------------------------------

def _read_bmp(handle: BinaryIO) -> ImageHeader:
    handle.seek(14)
    (size,) = struct.unpack("<I", _exactly(handle, 4))
    if size == 12:
        width, height, _, bits = struct.unpack("<HHHH", _exactly(handle, 8))
    else:
        width, height, _, bits = struct.unpack("<iiHH", _exactly(handle, 12))
    return ImageHeader("bmp", width, abs(height), 4 if bits == 32 else 3, 1)


def _read_gif(handle: BinaryIO) -> ImageHeader:
    handle.seek(6)
    width, height, flags = struct.unpack("<HHB", _exactly(handle, 5))
    handle.seek(2, 1)
    if flags & 0x80:
        handle.seek(3 << ((flags & 7) + 1), 1)
    for _ in range(1024):  # extensions, then the first image, which may be larger than the screen
        kind = handle.read(1)
        if kind == b"\x21":
            handle.seek(1, 1)
            while (block := handle.read(1)) and block[0]:
                handle.seek(block[0], 1)
        elif kind == b"\x2c":
            left, top, w, h = struct.unpack("<HHHH", _exactly(handle, 8))
            width, height = max(width, left + w), max(height, top + h)
            break
        else:
            break
    pixels = width * height
    return ImageHeader("gif", width, height, 4, 1, working_bytes=pixels * 4)


def _read_pnm(handle: BinaryIO) -> ImageHeader:
    handle.seek(0)
    text = handle.read(1024)
    kind = text[1:2]
    tokens: list[bytes] = []
    for line in text[2:].splitlines():
        tokens.extend(line.split(b"#")[0].split())
        if len(tokens) >= (2 if kind in (b"1", b"4") else 3):
            break
    width, height = int(tokens[0]), int(tokens[1])
    maximum = 1 if kind in (b"1", b"4") else int(tokens[2])
    return ImageHeader("pnm", width, height, 3 if kind in (b"3", b"6") else 1,
                       2 if maximum > 255 else 1)


# --- TIFF ----------------------------------------------------------------------------------------

def _read_tiff(handle: BinaryIO) -> ImageHeader:
    handle.seek(0)
    order = "<" if _exactly(handle, 2) == b"II" else ">"
    (version,) = struct.unpack(order + "H", _exactly(handle, 2))
    big = version == 43
    if big:
        handle.seek(8)
        (offset,) = struct.unpack(order + "Q", _exactly(handle, 8))
        count_format, entry_size, value_size = "Q", 20, 8
    else:
        (offset,) = struct.unpack(order + "I", _exactly(handle, 4))
        count_format, entry_size, value_size = "H", 12, 4
    handle.seek(offset)
    (count,) = struct.unpack(order + count_format, _exactly(handle, struct.calcsize(count_format)))
    if count > _MAX_TIFF_ENTRIES:
        raise ValueError(f"{count} tags")
    entries = _exactly(handle, count * entry_size)
    tags: dict[int, int] = {}
    for i in range(count):
        entry = entries[i * entry_size:(i + 1) * entry_size]
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if kind not in (3, 4, 16):  # SHORT, LONG, LONG8: the first value is all we need
            continue
        size = {3: 2, 4: 4, 16: 8}[kind]
        number = struct.unpack(order + ("Q" if big else "I"), entry[4:4 + value_size])[0]
        value = entry[4 + value_size:]
        if number * size > value_size:  # stored elsewhere: read its first value
            (where,) = struct.unpack(order + ("Q" if big else "I"), value[:value_size])
            back = handle.tell()
            handle.seek(where)
            value = _exactly(handle, size)
            handle.seek(back)
        tags[tag] = struct.unpack(order + {2: "H", 4: "I", 8: "Q"}[size], value[:size])[0]
    width, height = tags.get(256, 0), tags.get(257, 0)
    samples = tags.get(277, 1)
    bits = tags.get(258, 1)
    sample_bytes = max(1, math.ceil(bits / 8))
    channels = 3 if tags.get(262) == 3 else min(max(samples, 1), 4)  # a palette becomes RGB
    if 322 in tags and 323 in tags:  # the decoder reads a tile or a strip at a time
        block = tags[322] * tags[323]
    else:
        block = width * min(tags.get(278, height), height)
    working = min(block, width * height) * max(samples, 1) * sample_bytes
    return ImageHeader("tiff", width, height, channels, sample_bytes, working_bytes=working)


# --- WebP ----------------------------------------------------------------------------------------

def _read_webp(handle: BinaryIO) -> ImageHeader:
    handle.seek(12)
    try:
        kind = _exactly(handle, 4)
        handle.seek(20)
        if kind == b"VP8X":
            flags = _exactly(handle, 4)[0]
            raw = _exactly(handle, 6)
            width = int.from_bytes(raw[:3], "little") + 1
            height = int.from_bytes(raw[3:], "little") + 1
            alpha = bool(flags & 0x10)
        elif kind == b"VP8L":
            raw = _exactly(handle, 5)
            if raw[0] != 0x2F:
                raise ValueError("no VP8L signature")
            (bits,) = struct.unpack("<I", raw[1:])
            width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            alpha = bool(bits >> 28 & 1)
        elif kind == b"VP8 ":
            raw = _exactly(handle, 10)
            if raw[3:6] != b"\x9d\x01\x2a":
                raise ValueError("no VP8 start code")
            width, height = struct.unpack("<HH", raw[6:10])
            width, height, alpha = width & 0x3FFF, height & 0x3FFF, False
        else:
            raise ValueError(f"unknown chunk {kind!r}")
    except (struct.error, ValueError) as exc:
        raise ImageDecodeError(f"damaged WEBP header ({exc})") from None
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"damaged WEBP header (size {width}x{height})")
    return ImageHeader("webp", width, height, 4 if alpha else 3, 1)


_READERS = (
    (b"\xff\xd8\xff", _read_jpeg),
    (b"\x89PNG\r\n\x1a\n", _read_png),
    (b"BM", _read_bmp),
    (b"II*\x00", _read_tiff), (b"MM\x00*", _read_tiff),
    (b"II+\x00", _read_tiff), (b"MM\x00+", _read_tiff),
    (b"GIF87a", _read_gif), (b"GIF89a", _read_gif),
    *((b"P" + bytes([c]), _read_pnm) for c in b"123456"),
)
