"""Where and when a photo was taken, and which way up it is: the few EXIF fields crack-edge uses.

``read_exif(handle)`` returns ``ExifFields`` (capture time, GPS latitude/longitude/altitude,
orientation) from a JPEG (APP1 ``Exif``), PNG (``eXIf`` chunk before the image data), WebP
(``EXIF`` chunk) or TIFF (its own IFDs) open for binary reading; ``upright(image, orientation)``
turns decoded pixels the way the EXIF orientation says.

Why a parser of our own, with the standard library only: crack-edge needs six tags out of three
IFDs, and the device install stays numpy, OpenCV, the TFLite runtime, typer and rich. Pillow
(a 4 MB wheel of C decoders) would be a second image library beside OpenCV only for this; the
small pure-Python readers either are unmaintained (piexif, last release 2019) or read every tag
and MakerNote of a file, which is more code running on hostile input than we need. The format is
small (TIFF 6.0 section 2, EXIF 2.32 sections 4.6.3-4.6.6): a byte order, IFDs of 12-byte entries.

Hostile input never raises and never costs much: every read is bounded (at most ``MAX_ENTRIES``
entries per IFD, ``MAX_VALUE_BYTES`` per value, ``MAX_BLOCK_BYTES`` per EXIF block, each IFD read
once, so offsets that loop end), and each field is read on its own, so a damaged GPS IFD still
leaves the capture time and orientation. What cannot be read is left empty.

Field rules:
- ``capture_time``: DateTimeOriginal, else DateTimeDigitized, else DateTime, as ISO 8601
  ``YYYY-MM-DDTHH:MM:SS``, with the UTC offset (``+02:00``) when OffsetTimeOriginal gives one;
  without it, it is the camera's local clock. Impossible dates (``0000:00:00``) are left empty.
- ``gps_lat``/``gps_lon``: decimal degrees, south and west negative; left empty when either is
  missing, out of range, or exactly 0,0 (what cameras without a fix write).
- ``gps_alt``: metres above sea level (negative below), only with a position.
- ``orientation``: the EXIF value 1..8 as stored (1: upright), else empty.

How orientation is handled (the same for training, ``crack predict``, ``score`` and the report,
because all decode files in ``edge.preprocess``): pixels are turned upright after decoding, so a
phone photo taken in portrait is scored in portrait and tile boxes are in upright pixels.
OpenCV's ``IMREAD_UNCHANGED`` leaves JPEG, PNG and WebP as stored (``ORIENTED_BY_US``), while its
TIFF decoder applies the TIFF orientation tag itself, so TIFFs are not turned a second time.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

import cv2
import numpy as np

MAX_ENTRIES = 1024  # entries read per IFD (a hostile count of 65535 reads only these)
MAX_VALUE_BYTES = 256  # a tag value larger than this is not one we read (ours are under 64)
MAX_BLOCK_BYTES = 1 << 20  # an EXIF block in a PNG or WebP chunk larger than this is ignored
MAX_SEGMENTS = 4096  # JPEG segments, PNG or WebP chunks walked before giving up
ORIENTED_BY_US = frozenset({"jpeg", "png", "webp"})  # formats OpenCV decodes as stored

_ORIENTATION, _DATE_TIME, _EXIF_IFD, _GPS_IFD = 0x0112, 0x0132, 0x8769, 0x8825
_DATE_TIME_ORIGINAL, _DATE_TIME_DIGITIZED, _OFFSET_TIME_ORIGINAL = 0x9003, 0x9004, 0x9011
_GPS_LAT_REF, _GPS_LAT, _GPS_LON_REF, _GPS_LON, _GPS_ALT_REF, _GPS_ALT = 1, 2, 3, 4, 5, 6
# TIFF field type -> (struct code, bytes per value)
_TYPES = {1: ("B", 1), 2: ("s", 1), 3: ("H", 2), 4: ("I", 4), 5: ("II", 8), 6: ("b", 1),
          7: ("B", 1), 8: ("h", 2), 9: ("i", 4), 10: ("ii", 8), 11: ("f", 4), 12: ("d", 8)}
_DATE = re.compile(r"(\d{4})[:-](\d{2})[:-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_OFFSET = re.compile(r"[+-]\d{2}:\d{2}")


@dataclass(frozen=True)
class ExifFields:
    capture_time: str = ""
    gps_lat: float | None = None
    gps_lon: float | None = None
    gps_alt: float | None = None
    orientation: int | None = None


def read_exif(handle: BinaryIO) -> ExifFields:
    """The EXIF fields of an image file open for binary reading (seekable). Never raises: a
    photo's metadata is extra, and no file may stop a run because of it."""
    try:
        handle.seek(0)
        start = handle.read(16)
        if start[:4] in (b"II*\x00", b"MM\x00*"):
            return _fields(_Tiff(_file_reader(handle)))
        if start.startswith(b"\xff\xd8"):
            block = _jpeg_block(handle)
        elif start.startswith(b"\x89PNG\r\n\x1a\n"):
            block = _chunk_block(handle, 8, ">I4s", b"eXIf", stop=(b"IDAT", b"IEND"))
        elif start[:4] == b"RIFF" and start[8:12] == b"WEBP":
            block = _chunk_block(handle, 12, "<4sI", b"EXIF", stop=())
        else:
            return ExifFields()
        if block.startswith(b"Exif\x00\x00"):
            block = block[6:]
        return _fields(_Tiff(lambda offset, size: block[offset:offset + size])) if block \
            else ExifFields()
    except Exception:  # hostile bytes (or a bug here) cost the fields, never the photo's row
        return ExifFields()


def upright(image: np.ndarray, orientation: int | None) -> np.ndarray:
    """``image`` (as stored) turned as EXIF ``orientation`` says; 1 or None: unchanged.
    Flips work in place; the turns of 5-8 need a new array."""
    if orientation in (2, 3, 4):
        return cv2.flip(image, {2: 1, 3: -1, 4: 0}[orientation], dst=image)
    if orientation in (5, 6, 7, 8):
        turned = cv2.transpose(image)
        if orientation != 5:
            turned = cv2.flip(turned, {6: 1, 7: -1, 8: 0}[orientation], dst=turned)
        return turned
    return image


def turns_sideways(orientation: int | None) -> bool:
    """Orientations 5-8 swap width and height (and need a copy of the image to turn it)."""
    return orientation in (5, 6, 7, 8)


# --- finding the EXIF block ------------------------------------------------------------------------

def _jpeg_block(handle: BinaryIO) -> bytes:
    """The first APP1 segment starting with ``Exif\\0\\0`` before the image data, or b""."""
    handle.seek(2)
    for _ in range(MAX_SEGMENTS):
        marker = handle.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            return b""
        kind = marker[1]
        if kind == 0xFF:  # a fill byte: the marker follows
            handle.seek(-1, 1)
            continue
        if kind in (0x01, 0xD8) or 0xD0 <= kind <= 0xD7:
            continue
        if kind in (0xD9, 0xDA):  # end of image, start of scan: no EXIF before the pixels
            return b""
        raw = handle.read(2)
        if len(raw) < 2:
            return b""
        (length,) = struct.unpack(">H", raw)
        if length < 2:
            return b""
        if kind == 0xE1:
            segment = handle.read(length - 2)
            if segment.startswith(b"Exif\x00\x00"):
                return segment
        else:
            handle.seek(length - 2, 1)
    return b""


def _chunk_block(handle: BinaryIO, first: int, layout: str, wanted: bytes,
                 stop: tuple[bytes, ...]) -> bytes:
    """The payload of the first ``wanted`` chunk of a PNG (length, type) or RIFF (type, length)."""
    handle.seek(first)
    big_endian = layout.startswith(">")
    for _ in range(MAX_SEGMENTS):
        head = handle.read(8)
        if len(head) < 8:
            return b""
        if big_endian:
            length, kind = struct.unpack(layout, head)
        else:
            kind, length = struct.unpack(layout, head)
        if kind in stop:
            return b""
        if kind == wanted:
            return handle.read(length) if length <= MAX_BLOCK_BYTES else b""
        # PNG: data, then a 4-byte CRC; RIFF: data padded to an even length
        handle.seek(length + 4 if big_endian else length + (length & 1), 1)
    return b""


def _file_reader(handle: BinaryIO):
    def read_at(offset: int, size: int) -> bytes:
        handle.seek(offset)
        return handle.read(size)
    return read_at


# --- the TIFF structure inside ---------------------------------------------------------------------

class _Tiff:
    """Tags of a TIFF structure read through ``read_at(offset, size)``; every read bounded."""

    def __init__(self, read_at) -> None:
        self.read_at = read_at
        self.order = ""
        self.first_ifd: int | None = None
        self.visited: set[int] = set()
        head = read_at(0, 8)
        if len(head) == 8 and head[:4] in (b"II*\x00", b"MM\x00*"):
            self.order = "<" if head[:2] == b"II" else ">"
            self.first_ifd = struct.unpack(self.order + "I", head[4:])[0]

    def ifd(self, offset: int | None) -> dict[int, object]:
        """{tag: values} of the IFD at ``offset``; {} for one already read, or nothing there."""
        if offset is None or offset in self.visited:
            return {}
        self.visited.add(offset)
        raw = self.read_at(offset, 2)
        if len(raw) < 2:
            return {}
        count = min(struct.unpack(self.order + "H", raw)[0], MAX_ENTRIES)
        entries = self.read_at(offset + 2, count * 12)
        tags: dict[int, object] = {}
        for start in range(0, len(entries) - 11, 12):
            tag, kind, number = struct.unpack(self.order + "HHI", entries[start:start + 8])
            if tag in tags or kind not in _TYPES:
                continue
            values = self._values(kind, number, entries[start + 8:start + 12])
            if values is not None:
                tags[tag] = values
        return tags

    def _values(self, kind: int, number: int, field: bytes):
        code, size = _TYPES[kind]
        length = number * size
        if number == 0 or length > MAX_VALUE_BYTES:
            return None
        if length <= 4:
            data = field[:length]
        else:
            data = self.read_at(struct.unpack(self.order + "I", field)[0], length)
            if len(data) < length:
                return None
        if kind == 2:
            return data.split(b"\x00", 1)[0].decode("ascii", errors="replace").strip()
        values = struct.unpack(self.order + code * number, data)
        if kind in (5, 10):  # numerator, denominator pairs
            return [values[i] / values[i + 1] if values[i + 1] else math.nan
                    for i in range(0, len(values), 2)]
        return list(values)

    def pointer(self, tags: dict[int, object], tag: int) -> int | None:
        value = tags.get(tag)
        return value[0] if isinstance(value, list) and isinstance(value[0], int) else None


def _fields(tiff: _Tiff) -> ExifFields:
    """Each field on its own: a damaged part leaves the others."""
    ifd0 = tiff.ifd(tiff.first_ifd)
    found: dict[str, object] = {}
    for read in (_orientation, _capture_time, _gps):
        try:
            found.update(read(tiff, ifd0))
        except Exception:  # see read_exif
            continue
    return ExifFields(**found)


def _orientation(tiff: _Tiff, ifd0: dict) -> dict[str, object]:
    value = ifd0.get(_ORIENTATION)
    if isinstance(value, list) and value[0] in range(1, 9):
        return {"orientation": int(value[0])}
    return {}


def _capture_time(tiff: _Tiff, ifd0: dict) -> dict[str, object]:
    exif = tiff.ifd(tiff.pointer(ifd0, _EXIF_IFD))
    for tag, where in ((_DATE_TIME_ORIGINAL, exif), (_DATE_TIME_DIGITIZED, exif),
                       (_DATE_TIME, ifd0)):
        stamp = _iso_time(where.get(tag))
        if stamp:
            offset = exif.get(_OFFSET_TIME_ORIGINAL) if tag == _DATE_TIME_ORIGINAL else None
            if isinstance(offset, str) and _OFFSET.fullmatch(offset):
                stamp += offset
            return {"capture_time": stamp}
    return {}


def _iso_time(value: object) -> str:
    if not isinstance(value, str):
        return ""
    match = _DATE.match(value)
    if not match:
        return ""
    try:
        return datetime(*map(int, match.groups())).isoformat()
    except ValueError:  # 0000:00:00, month 13, ...
        return ""


def _gps(tiff: _Tiff, ifd0: dict) -> dict[str, object]:
    gps = tiff.ifd(tiff.pointer(ifd0, _GPS_IFD))
    lat = _degrees(gps.get(_GPS_LAT), gps.get(_GPS_LAT_REF), "S", 90.0)
    lon = _degrees(gps.get(_GPS_LON), gps.get(_GPS_LON_REF), "W", 180.0)
    if lat is None or lon is None or (lat == 0.0 and lon == 0.0):
        return {}
    found: dict[str, object] = {"gps_lat": lat, "gps_lon": lon}
    altitude = gps.get(_GPS_ALT)
    if isinstance(altitude, list) and isinstance(altitude[0], float) and math.isfinite(altitude[0]):
        below = gps.get(_GPS_ALT_REF)
        below = isinstance(below, list) and below[0] == 1
        found["gps_alt"] = -altitude[0] if below else altitude[0]
    return found


def _degrees(value: object, ref: object, negative: str, limit: float) -> float | None:
    """Degrees, minutes, seconds (rationals) -> signed decimal degrees, or None."""
    if not isinstance(value, list) or not all(isinstance(v, float) for v in value):
        return None
    parts = (value + [0.0, 0.0])[:3]
    if not all(math.isfinite(v) and v >= 0 for v in parts):
        return None
    degrees = parts[0] + parts[1] / 60 + parts[2] / 3600
    if degrees > limit:
        return None
    if isinstance(ref, str) and ref[:1].upper() == negative:
        degrees = -degrees
    return degrees
