"""EXIF fields (edge/exif.py) and EXIF orientation in decoding (edge/preprocess.py): files written
here with a tiny EXIF writer (tests/exif_writer.py), hostile EXIF, and Pillow as a second writer
where the test environment has it."""

from __future__ import annotations

import io
import random
import struct

import cv2
import numpy as np
import pytest

from edge.exif import MAX_ENTRIES, ExifFields, read_exif
from edge.preprocess import decode_image, load_for_model, load_image
from photo_files import (ascii_entry, camera_exif, jpeg_with_exif, png_with_exif, rational_entry,
                         short_entry, tiff_block)

SYDNEY = dict(lat=("S", 33.865), lon=("E", 151.2094), alt=-12.5)


def exif_of(data: bytes) -> ExifFields:
    return read_exif(io.BytesIO(data))


def photo(height: int = 20, width: int = 40) -> np.ndarray:
    """Random BGR pixels: any turn or flip of them is a different image."""
    return np.random.default_rng(7).integers(0, 256, (height, width, 3), np.uint8)


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("container", ["jpeg", "png"])
def test_reads_capture_time_gps_altitude_and_orientation(container, order):
    block = camera_exif(orientation=6, when="2024:05:01 10:20:30", offset="+10:00", order=order,
                        **SYDNEY)
    data = (jpeg_with_exif if container == "jpeg" else png_with_exif)(photo(), block)
    fields = exif_of(data)
    assert fields.capture_time == "2024-05-01T10:20:30+10:00"
    assert fields.gps_lat == pytest.approx(-33.865, abs=1e-7)
    assert fields.gps_lon == pytest.approx(151.2094, abs=1e-7)
    assert fields.gps_alt == pytest.approx(-12.5)
    assert fields.orientation == 6


def test_a_photo_without_exif_has_empty_fields():
    plain = cv2.imencode(".jpg", photo())[1].tobytes()
    assert exif_of(plain) == ExifFields()
    assert exif_of(cv2.imencode(".png", photo())[1].tobytes()) == ExifFields()
    assert exif_of(b"GIF89a" + bytes(20)) == ExifFields()


def test_capture_time_falls_back_and_refuses_impossible_dates():
    digitized = tiff_block([], [ascii_entry(0x9004, "2023:01:02 03:04:05")])
    assert exif_of(jpeg_with_exif(photo(), digitized)).capture_time == "2023-01-02T03:04:05"
    ifd0_only = tiff_block([ascii_entry(0x0132, "2022:12:31 23:59:59")])
    assert exif_of(jpeg_with_exif(photo(), ifd0_only)).capture_time == "2022-12-31T23:59:59"
    for bad in ("0000:00:00 00:00:00", "2024:13:01 10:00:00", "yesterday", "    "):
        block = tiff_block([ascii_entry(0x0132, "2020:01:01 00:00:00")],
                           [ascii_entry(0x9003, bad)])
        assert exif_of(jpeg_with_exif(photo(), block)).capture_time == "2020-01-01T00:00:00", bad
    odd_offset = camera_exif(when="2024:05:01 10:20:30", offset="10h")
    assert exif_of(jpeg_with_exif(photo(), odd_offset)).capture_time == "2024-05-01T10:20:30"


def gps_fields(entries) -> ExifFields:
    return exif_of(jpeg_with_exif(photo(), tiff_block([short_entry(0x0112, 1)], None, entries)))


def test_gps_signs_and_the_positions_that_are_left_empty():
    west = gps_fields([ascii_entry(1, "N"), rational_entry(2, [(51, 1), (30, 1), (0, 1)]),
                       ascii_entry(3, "W"), rational_entry(4, [(0, 1), (7, 1), (30, 1)])])
    assert (west.gps_lat, west.gps_lon) == (51.5, pytest.approx(-0.125))
    assert west.gps_alt is None
    no_fix = gps_fields([ascii_entry(1, "N"), rational_entry(2, [(0, 1), (0, 1), (0, 1)]),
                         ascii_entry(3, "E"), rational_entry(4, [(0, 1), (0, 1), (0, 1)])])
    zero_denominator = gps_fields([ascii_entry(1, "N"), rational_entry(2, [(51, 0)]),
                                   ascii_entry(3, "E"), rational_entry(4, [(3, 1)])])
    beyond_the_pole = gps_fields([ascii_entry(1, "N"), rational_entry(2, [(95, 1)]),
                                  ascii_entry(3, "E"), rational_entry(4, [(3, 1)])])
    latitude_only = gps_fields([ascii_entry(1, "N"), rational_entry(2, [(51, 1)])])
    for fields in (no_fix, zero_denominator, beyond_the_pole, latitude_only):
        assert (fields.gps_lat, fields.gps_lon, fields.gps_alt) == (None, None, None)
        assert fields.orientation == 1


# --- hostile EXIF -----------------------------------------------------------------------------------

def test_every_truncation_of_a_photo_with_exif_reads_without_raising():
    data = jpeg_with_exif(photo(), camera_exif(orientation=3, **SYDNEY))
    whole = exif_of(data)
    seen = [exif_of(data[:length]) for length in range(len(data))]
    assert all(isinstance(fields, ExifFields) for fields in seen)
    assert seen[0] == ExifFields() and whole.orientation == 3 and whole.gps_lat is not None
    header_end = data.index(b"\xff\xdb")  # the EXIF segment ends before the quantisation tables
    assert all(fields == whole for fields in seen[header_end:])


def test_ifd_offsets_that_loop_end():
    order = "<"
    # IFD0 at 8 whose Exif and GPS pointers point back at IFD0 itself
    entries = [short_entry(0x0112, 8), (0x8769, 4, 1, struct.pack("<I", 8)),
               (0x8825, 4, 1, struct.pack("<I", 8))]
    head = b"II*\x00" + struct.pack(order + "I", 8)
    count = struct.pack("<H", len(entries))
    body = b"".join(struct.pack("<HHI", t, k, c) + p for t, k, c, p in entries)
    block = head + count + body + struct.pack("<I", 8)  # and the next-IFD offset loops too
    assert exif_of(jpeg_with_exif(photo(), block)) == ExifFields(orientation=8)


class CountingFile(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        chunk = super().read(size)
        self.bytes_read += len(chunk)
        return chunk


def test_huge_counts_cost_bounded_reads_and_keep_what_was_read():
    order = "<"
    entries = (struct.pack("<HHI", 0x0112, 3, 1) + struct.pack("<HH", 5, 0)
               + struct.pack("<HHI", 0x0132, 2, 0xFFFFFFFF) + struct.pack("<I", 40))
    block = b"II*\x00" + struct.pack(order + "I", 8) + struct.pack("<H", 0xFFFF) + entries
    tiff = block + bytes(2_000_000)  # room for every claimed entry: only MAX_ENTRIES are read
    handle = CountingFile(tiff)
    assert read_exif(handle) == ExifFields(orientation=5)
    assert MAX_ENTRIES == 1024 and handle.bytes_read < 16_000  # not the 786 kB of 65535 entries
    # a PNG claiming a 3 GB eXIf chunk
    png = cv2.imencode(".png", photo())[1].tobytes()
    claim = struct.pack(">I", 3_000_000_000) + b"eXIf"
    assert exif_of(png[:33] + claim + png[33:]) == ExifFields()


def test_random_damage_never_raises():
    data = bytearray(jpeg_with_exif(photo(), camera_exif(orientation=6, offset="+01:00", **SYDNEY)))
    end = data.index(b"\xff\xdb")
    rng = random.Random(17)
    kinds = set()
    for _ in range(3000):
        damaged = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            damaged[rng.randrange(2, end)] = rng.randrange(256)
        fields = exif_of(bytes(damaged))
        assert isinstance(fields, ExifFields)
        assert fields.orientation in (None, *range(1, 9))
        assert fields.gps_lat is None or -90 <= fields.gps_lat <= 90
        assert fields.gps_lon is None or -180 <= fields.gps_lon <= 180
        kinds.add((fields.orientation is None, fields.gps_lat is None, fields.capture_time == ""))
    assert len(kinds) >= 4  # the damage reached different fields, leaving the others


# --- orientation: decoded upright, the same way everywhere ------------------------------------------

@pytest.mark.parametrize("container", ["jpeg", "png"])
def test_every_orientation_decodes_upright_as_opencvs_own_exif_handling(container, tmp_path):
    writer = jpeg_with_exif if container == "jpeg" else png_with_exif
    for orientation in range(1, 9):
        data = writer(photo(), camera_exif(orientation=orientation))
        reference = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
        path = tmp_path / f"o{orientation}.{container}"
        path.write_bytes(data)
        assert load_image(path).shape == ((40, 20, 3) if orientation >= 5 else (20, 40, 3))
        assert np.array_equal(load_image(path), reference), orientation
        assert np.array_equal(decode_image(data), reference), orientation


def test_a_portrait_phone_photo_reaches_the_model_upright(tmp_path):
    """Large enough for a reduced-scale JPEG decode: the turn must happen exactly once on every
    decoding path (OpenCV turns reduced decodes itself unless told not to)."""
    stored = np.full((384, 512, 3), 128, np.uint8)
    stored[:, 448:] = 0  # a dark band on the right of the stored (landscape) pixels
    path = tmp_path / "portrait.jpg"
    path.write_bytes(jpeg_with_exif(stored, camera_exif(orientation=6)))  # turn 90 clockwise
    upright = load_image(path)
    assert upright.shape == (512, 384, 3)
    assert upright[456:, :, 0].mean() < 10 and upright[:440, :, 0].mean() > 120  # band at the bottom
    model_input = load_for_model(path, 32)
    assert model_input[29:, :, 0].mean() < 10 and model_input[:27, :, 0].mean() > 120


def test_tiff_orientation_is_applied_once(tmp_path):
    image_module = pytest.importorskip("PIL.Image")
    rgb = photo()[..., ::-1]
    for orientation in (3, 6):
        exif = image_module.Exif()
        exif[0x0112] = orientation
        buffer = io.BytesIO()
        image_module.fromarray(np.ascontiguousarray(rgb)).save(buffer, "TIFF", exif=exif.tobytes())
        path = tmp_path / f"o{orientation}.tif"
        path.write_bytes(buffer.getvalue())
        turned = np.rot90(rgb, 2) if orientation == 3 else np.rot90(rgb, -1)
        assert read_exif(io.BytesIO(buffer.getvalue())).orientation == orientation
        assert np.array_equal(load_image(path), turned)


def test_pillow_written_exif_reads_the_same_in_every_container():
    image_module = pytest.importorskip("PIL.Image")
    exif = image_module.Exif()
    exif[0x0112] = 8
    exif.get_ifd(0x8769)[0x9003] = "2021:07:08 09:10:11"
    gps = exif.get_ifd(0x8825)
    gps.update({1: "N", 2: (48.0, 51.0, 29.6), 3: "E", 4: (2.0, 17.0, 40.2), 5: b"\x00", 6: 35.0})
    expected = ExifFields("2021-07-08T09:10:11", pytest.approx(48.858222, abs=1e-6),
                          pytest.approx(2.294500, abs=1e-6), 35.0, 8)
    for container in ("JPEG", "PNG", "WEBP", "TIFF"):
        buffer = io.BytesIO()
        image_module.fromarray(photo()).save(buffer, container, exif=exif.tobytes())
        assert read_exif(io.BytesIO(buffer.getvalue())) == expected, container
