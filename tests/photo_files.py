"""Photos and results files for the EXIF, report and GeoJSON tests.

A tiny EXIF writer: TIFF-structured EXIF blocks put into JPEG (APP1) and PNG (eXIf) files made by
OpenCV, so the tests need no Pillow and can also write what no camera should. And
``results_file``: a results file of given rows, as `crack-edge score` writes it."""

from __future__ import annotations

import struct
import zlib

from pathlib import Path

import cv2
import numpy as np

from edge.results_file import Row, RunIdentity, open_results

Entry = tuple[int, int, int, bytes]  # tag, TIFF type, count, packed values


def ascii_entry(tag: int, text: str) -> Entry:
    data = text.encode("ascii") + b"\x00"
    return tag, 2, len(data), data


def short_entry(tag: int, value: int, order: str = "<") -> Entry:
    return tag, 3, 1, struct.pack(order + "H", value)


def byte_entry(tag: int, value: int) -> Entry:
    return tag, 1, 1, bytes([value])


def rational_entry(tag: int, pairs: list[tuple[int, int]], order: str = "<") -> Entry:
    return tag, 5, len(pairs), b"".join(struct.pack(order + "II", n, d) for n, d in pairs)


def _ifd(entries: list[Entry], start: int, order: str) -> bytes:
    """An IFD at offset ``start``: its entries, a zero next-IFD offset, then the values that do
    not fit in an entry."""
    data_at = start + 2 + 12 * len(entries) + 4
    head, data = struct.pack(order + "H", len(entries)), b""
    for tag, kind, count, payload in sorted(entries):
        if len(payload) <= 4:
            field = payload.ljust(4, b"\x00")
        else:
            field = struct.pack(order + "I", data_at + len(data))
            data += payload + b"\x00" * (len(payload) & 1)
        head += struct.pack(order + "HHI", tag, kind, count) + field
    return head + b"\x00\x00\x00\x00" + data


def tiff_block(ifd0: list[Entry], exif: list[Entry] | None = None,
               gps: list[Entry] | None = None, order: str = "<") -> bytes:
    """A TIFF structure (the payload of an EXIF block) with IFD0 and optional Exif and GPS IFDs."""
    pointers = [(0x8769, exif), (0x8825, gps)]
    entries = list(ifd0) + [(tag, 4, 1, b"\x00" * 4) for tag, sub in pointers if sub is not None]
    first = _ifd(entries, 8, order)
    blocks, offset = [], 8 + len(first)
    resolved = list(ifd0)
    for tag, sub in pointers:
        if sub is not None:
            resolved.append((tag, 4, 1, struct.pack(order + "I", offset)))
            block = _ifd(sub, offset, order)
            blocks.append(block)
            offset += len(block)
    head = (b"II*\x00" if order == "<" else b"MM\x00*") + struct.pack(order + "I", 8)
    return head + _ifd(resolved, 8, order) + b"".join(blocks)


def camera_exif(orientation: int = 1, when: str = "2024:05:01 10:20:30", offset: str | None = None,
                lat: tuple[str, float] | None = None, lon: tuple[str, float] | None = None,
                alt: float | None = None, order: str = "<") -> bytes:
    """The EXIF block a phone writes: orientation, DateTimeOriginal, GPS (degrees as d/m/s)."""
    ifd0 = [short_entry(0x0112, orientation, order)]
    exif = [ascii_entry(0x9003, when)]
    if offset:
        exif.append(ascii_entry(0x9011, offset))
    gps = None
    if lat and lon:
        gps = []
        for ref_tag, value_tag, (ref, value) in ((1, 2, lat), (3, 4, lon)):
            degrees, rest = int(value), (value - int(value)) * 60
            minutes, seconds = int(rest), (rest - int(rest)) * 60
            gps += [ascii_entry(ref_tag, ref),
                    rational_entry(value_tag, [(degrees, 1), (minutes, 1),
                                               (round(seconds * 10000), 10000)], order)]
        if alt is not None:
            gps += [byte_entry(5, 1 if alt < 0 else 0),
                    rational_entry(6, [(round(abs(alt) * 100), 100)], order)]
    return tiff_block(ifd0, exif, gps, order)


def jpeg_with_exif(image_bgr: np.ndarray, block: bytes, quality: int = 95) -> bytes:
    """A JPEG of ``image_bgr`` with ``block`` as its APP1 Exif segment right after SOI."""
    jpeg = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()
    payload = b"Exif\x00\x00" + block
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def png_with_exif(image_bgr: np.ndarray, block: bytes) -> bytes:
    """A PNG of ``image_bgr`` with ``block`` in an eXIf chunk right after IHDR."""
    png = cv2.imencode(".png", image_bgr)[1].tobytes()
    chunk = struct.pack(">I", len(block)) + b"eXIf" + block + struct.pack(
        ">I", zlib.crc32(b"eXIf" + block))
    return png[:33] + chunk + png[33:]


def results_file(path: Path, rows: list[Row], threshold: float = 0.5, tiles: str = "whole") -> Path:
    """``rows`` written to ``path`` (CSV or JSONL by its suffix) under a made-up model."""
    identity = RunIdentity(model="model_int8.tflite", model_sha256="ab" * 32, threshold=threshold,
                           tiles=tiles, labels=("no_crack", "crack"), input_size=32)
    fmt = "jsonl" if path.suffix == ".jsonl" else "csv"
    with open_results(path, fmt, identity, overwrite=True).writer as writer:
        writer.write(rows)
    return path
