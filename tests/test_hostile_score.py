"""`crack-edge score` and `bench` under hostile input (issue 12): generated cases of files, names,
links, outputs and options, each with its exact outcome (a row, an error row, an exit code, a
file left untouched). Most run the engine in-process (fast); the ones about exit codes, locks
between processes, a full disk and SIGTERM run the real command.

The model is the session's 32 px "darkness" model (tests/conftest.py): dark images score high.
"""

from __future__ import annotations

import fcntl
import json
import os
import resource
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import PROJECT

from edge.bench import BenchOptions, run_bench
from edge.errors import ImageDecodeError, RuntimeFailure, UserError
from edge.file_inputs import find_inputs
from edge.preprocess import ImageFile, decode_image
from edge.results_file import COLUMNS, read_results
from edge.score import ScoreOptions, decode_ahead, run_score
from edge.tiling import TileGrid

EDGE = [sys.executable, "-m", "edge"]


# --- helpers ---------------------------------------------------------------------------------

def score(model: Path, inputs, out: Path, fmt: str = "csv", **options):
    """(summary, {path: Row}) of an in-process run."""
    options.setdefault("format", fmt)
    summary = run_score(ScoreOptions(model=model, inputs=tuple(str(i) for i in inputs), out=out,
                                     show_progress=False, **options),
                        say=lambda line: None)
    return summary, {row.path: row for row in read_results(out, fmt).rows}


def edge(*args, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*EDGE, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=PROJECT, **kwargs)


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def texture(height: int = 96, width: int = 128, seed: int = 7, level: int | None = None) -> np.ndarray:
    """Smoothed noise (a photo's entropy, so damage lands in real Huffman data)."""
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = cv2.GaussianBlur(image, (5, 5), 0)
    if level is not None:
        image = np.clip(image.astype(int) - int(image.mean()) + level, 0, 255).astype(np.uint8)
    return image


def jpeg_bytes(image: np.ndarray | None = None, **flags: int) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, 90]
    for name, value in flags.items():
        params += [getattr(cv2, f"IMWRITE_JPEG_{name}"), value]
    return cv2.imencode(".jpg", texture() if image is None else image, params)[1].tobytes()


def encoded(suffix: str, image: np.ndarray, params: list[int] | None = None) -> bytes:
    ok, data = cv2.imencode(suffix, image, params or [])
    assert ok, suffix
    return data.tobytes()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int, colour: int = 2, depth: int = 8) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
            + png_chunk(b"IDAT", zlib.compress(bytes(64))) + png_chunk(b"IEND", b""))


def jpeg_with_size(width: int, height: int, marker: int = 0xC0) -> bytes:
    """A JPEG header declaring a size (SOF0 baseline, SOF2 progressive), and no image data."""
    sof = struct.pack(">BHHB", 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8\xff" + bytes([marker]) + struct.pack(">H", len(sof) + 2) + sof + b"\xff\xd9"


def tiff_with_size(width: int, height: int) -> bytes:
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (277, 3, 1, 3)]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII", tag, kind, count, value) for tag, kind, count, value in entries)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0)


def bmp_with_size(width: int, height: int, bits: int = 24) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, bits, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54 + len(info), 0, 0, 54) + info + bytes(64)


def webp_with_size(width: int, height: int) -> bytes:
    vp8x = bytes([0, 0, 0, 0]) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    chunk = b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def gif_with_size(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0) + b"\x2c" + struct.pack(
        "<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00\x3b"


def pil_bytes(mode: str, fmt: str, level: int = 60, **save) -> bytes:
    image_module = pytest.importorskip("PIL.Image")
    import io

    image = image_module.new("RGB", (64, 48), (level, level, level)).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


def deep16(value: int) -> np.ndarray:
    return np.full((40, 40, 3), value, np.uint16)


def floats(value: float, poison: float | None = None) -> np.ndarray:
    image = np.full((40, 40, 3), value, np.float32)
    if poison is not None:
        image[3, 5, 1] = poison
    return image


def damaged(data: bytes, how: str) -> bytes:
    middle = len(data) // 2
    return {"marker": data[:middle] + b"\xff\xc4" + data[middle + 2:],
            "deleted": data[:middle] + data[middle + 500:],
            "duplicated": data[:middle] + data[middle - 500:],
            "restart markers": data[:middle] + b"\xff\xd0" * 8 + data[middle + 16:]}[how]


# --- files: every kind of content a folder from a camera, a share or a zip can hold ------------

SCORE = "score"
INTACT = "same as the intact photo"
FILE_CASES = {
    # JPEG: the decoder's verdict, not the last 64 bytes
    "jpeg intact": (".jpg", lambda: jpeg_bytes(), INTACT),
    "jpeg + 4 KB of zero padding": (".jpg", lambda: jpeg_bytes() + bytes(4096), INTACT),
    "jpeg + appended text metadata": (".jpg", lambda: jpeg_bytes() + b"<x:xmpmeta/>" * 300, INTACT),
    "jpeg + an appended video (motion photo)": (".jpg", lambda: jpeg_bytes() + b"\x00\x00\x00\x18ftypmp42" + bytes(2000), INTACT),
    "jpeg + a second JPEG appended": (".jpg", lambda: jpeg_bytes() + jpeg_bytes(texture(seed=3)), INTACT),
    "jpeg with 40 APP segments of 60 KB metadata": (".jpg", lambda: b"\xff\xd8" + (b"\xff\xe2\xea\x62" + bytes(60000)) * 40 + jpeg_bytes()[2:], INTACT),
    **{f"jpeg truncated at {int(f * 100)}%": (".jpg", lambda f=f: jpeg_bytes()[:int(len(jpeg_bytes()) * f)], "truncated JPEG")
       for f in (0.1, 0.25, 0.5, 0.75, 0.99)},
    "jpeg without its end marker": (".jpg", lambda: jpeg_bytes()[:-2], "truncated JPEG"),
    **{f"{kind} jpeg, {how} in the middle": (".jpg", lambda k=flags, h=how: damaged(jpeg_bytes(**k), h), "damaged JPEG: Corrupt JPEG data")
       for kind, flags in (("baseline", {}), ("progressive", {"PROGRESSIVE": 1}), ("restart-marker", {"RST_INTERVAL": 4}))
       for how in ("marker", "deleted", "duplicated", "restart markers")},
    "jpeg of nothing but its start marker": (".jpg", lambda: b"\xff\xd8\xff", "damaged JPEG header"),
    "jpeg header without image data": (".jpg", lambda: jpeg_bytes()[:600], "truncated JPEG"),
    "jpeg declaring 65500x65500": (".jpg", lambda: jpeg_with_size(65500, 65500), "image too large: 65500x65500"),
    "jpeg declaring a height of 0": (".jpg", lambda: jpeg_with_size(100, 0), "damaged JPEG header (size 100x0)"),
    "baseline jpeg declaring 7000x7000 (49 MP, fits)": (".jpg", lambda: jpeg_with_size(7000, 7000), "damaged JPEG: the decoder could not read it"),
    "progressive jpeg declaring 12000x12000 (its coefficients do not fit, even at 1/8 scale)": (".jpg", lambda: jpeg_with_size(12000, 12000, 0xC2), "image too large: decoding this 12000x12000 JPEG at 1/8 scale"),
    "grey jpeg": (".jpg", lambda: jpeg_bytes(texture()[:, :, 0]), SCORE),
    "CMYK jpeg": (".jpg", lambda: pil_bytes("CMYK", "JPEG"), SCORE),
    # PNG and 16-bit data
    "png rgb": (".png", lambda: encoded(".png", texture()), SCORE),
    "png grey": (".png", lambda: pil_bytes("L", "PNG"), SCORE),
    "png grey + alpha": (".png", lambda: pil_bytes("LA", "PNG"), SCORE),
    "png rgba": (".png", lambda: pil_bytes("RGBA", "PNG"), SCORE),
    "png palette": (".png", lambda: pil_bytes("P", "PNG"), SCORE),
    "png 1 bit": (".png", lambda: pil_bytes("1", "PNG"), SCORE),
    "png 1x1 pixel": (".png", lambda: encoded(".png", np.full((1, 1, 3), 90, np.uint8)), SCORE),
    "png 1x3000 pixels": (".png", lambda: encoded(".png", np.full((1, 3000, 3), 90, np.uint8)), SCORE),
    "png 3000x1 pixels": (".png", lambda: encoded(".png", np.full((3000, 1, 3), 90, np.uint8)), SCORE),
    "png truncated": (".png", lambda: encoded(".png", texture())[:3000], "not a decodable image"),
    "png with a damaged image chunk": (".png", lambda: (lambda d: d[:200] + bytes(300) + d[500:])(encoded(".png", texture())), "not a decodable image"),
    "png bomb header 20000x20000": (".png", lambda: png_header_only(20000, 20000), "image too large: 20000x20000 is 400.0 MP"),
    "png of width 0": (".png", lambda: png_header_only(0, 10), "damaged PNG header (size 0x10)"),
    "png of an unknown colour type": (".png", lambda: png_header_only(10, 10, colour=5), "damaged PNG header"),
    "16-bit png, full range (bright)": (".png", lambda: encoded(".png", deep16(50000)), "no_crack"),
    "16-bit png, 12-bit sensor data (bright)": (".png", lambda: encoded(".png", deep16(3000)), "no_crack"),
    "16-bit png, 10-bit sensor data (bright)": (".png", lambda: encoded(".png", deep16(800)), "no_crack"),
    "16-bit png holding 8-bit values (dark)": (".png", lambda: encoded(".png", deep16(30)), "crack"),
    # TIFF, float TIFF
    "tiff 8-bit": (".tif", lambda: encoded(".tiff", texture()), SCORE),
    "tiff 16-bit, 12-bit data (bright)": (".tif", lambda: encoded(".tiff", deep16(3500)), "no_crack"),
    "float tiff 0..1 (bright)": (".tif", lambda: encoded(".tiff", floats(0.8)), "no_crack"),
    "float tiff 0..255 (dark)": (".tif", lambda: encoded(".tiff", floats(30.0)), "crack"),
    "float tiff with a NaN pixel": (".tif", lambda: encoded(".tiff", floats(0.8, np.nan)), "image has NaN or infinite pixels"),
    "float tiff with an infinite pixel": (".tif", lambda: encoded(".tiff", floats(0.8, np.inf)), "image has NaN or infinite pixels"),
    "tiff declaring 100000x100000": (".tif", lambda: tiff_with_size(100000, 100000), "image too large: 100000x100000"),
    "tiff with a broken first directory": (".tif", lambda: b"II*\x00" + struct.pack("<I", 10 ** 6), "damaged TIFF header"),
    # other formats
    "bmp": (".bmp", lambda: encoded(".bmp", texture()), SCORE),
    "bmp declaring 60000x60000": (".bmp", lambda: bmp_with_size(60000, 60000), "image too large: 60000x60000"),
    "webp lossy": (".webp", lambda: encoded(".webp", texture(), [cv2.IMWRITE_WEBP_QUALITY, 80]), SCORE),
    "webp lossless": (".webp", lambda: encoded(".webp", texture(), [cv2.IMWRITE_WEBP_QUALITY, 101]), SCORE),
    "webp declaring 16384x16384": (".webp", lambda: webp_with_size(16384, 16384), "image too large: 16384x16384"),
    "gif declaring 65535x65535": (".gif", lambda: gif_with_size(65535, 65535), "image too large: 65535x65535"),
    "ppm": (".ppm", lambda: encoded(".ppm", texture()), SCORE),
    "pgm": (".pgm", lambda: encoded(".pgm", texture()[:, :, 0]), SCORE),
    "pnm declaring 60000x60000": (".ppm", lambda: b"P6\n# a comment\n60000 60000\n255\n" + bytes(100), "image too large: 60000x60000"),
    # not images at all
    "empty file": (".jpg", lambda: b"", "empty file"),
    "text file named .jpg": (".jpg", lambda: b"this is not a JPEG\n", "not a decodable image (not JPEG, PNG"),
    "html error page saved as .jpg": (".jpg", lambda: b"<!DOCTYPE html><html><body>404</body></html>", "not a decodable image"),
    "svg named .png": (".png", lambda: b'<svg xmlns="http://www.w3.org/2000/svg"/>', "not a decodable image"),
    "jpeg 2000 (a format crack-edge does not read)": (".jpg", lambda: b"\x00\x00\x00\x0cjP  \r\n\x87\n" + bytes(200), "not a decodable image"),
    "4 KB of zeros": (".jpg", lambda: bytes(4096), "not a decodable image"),
    "random bytes": (".png", lambda: np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes(), "not a decodable image"),
    "png content named .jpg": (".jpg", lambda: encoded(".png", texture()), SCORE),
    "jpeg content named .png": (".png", lambda: jpeg_bytes(), INTACT),
}


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_every_kind_of_file_gets_its_exact_row(edge_models, tmp_path, case):
    suffix, make, expected = FILE_CASES[case]
    path = tmp_path / f"file{suffix}"
    path.write_bytes(make())
    summary, rows = score(edge_models["int8"], [path], tmp_path / "r.csv")
    row = rows[str(path)]
    if expected in (SCORE, INTACT, "crack", "no_crack"):
        assert row.error == "" and 0.0 <= row.probability <= 1.0, row
        assert row.label in ("crack", "no_crack") and (summary.scored, summary.errors) == (1, 0)
        if expected in ("crack", "no_crack"):
            assert row.label == expected, row
        if expected == INTACT:
            intact = tmp_path / "intact.jpg"
            intact.write_bytes(jpeg_bytes())
            assert row.probability == score(edge_models["int8"], [intact], tmp_path / "i.csv")[1][str(intact)].probability
    else:
        assert row.probability is None and row.label == "" and row.error.startswith(expected), row
        assert (summary.scored, summary.errors) == (0, 1)


@pytest.mark.parametrize("bits, value", [(12, 3000), (10, 800), (16, 50000), (8, 200)])
def test_16_bit_images_are_scaled_by_the_bits_their_data_uses(bits, value):
    rgb = decode_image(encoded(".png", deep16(value)))
    assert rgb[0, 0, 0] == round(value * 255 / (2 ** bits - 1))


def test_float_images_are_scaled_on_purpose():
    assert decode_image(encoded(".tiff", floats(0.5)))[0, 0].tolist() == [128, 128, 128]
    assert decode_image(encoded(".tiff", floats(77.0)))[0, 0].tolist() == [77, 77, 77]
    assert decode_image(encoded(".tiff", floats(-3.0)))[0, 0].tolist() == [0, 0, 0]


def test_a_gif_named_directly_is_scored_where_opencv_reads_gif(edge_models, tmp_path):
    path = tmp_path / "anim.gif"
    path.write_bytes(pil_bytes("P", "GIF"))
    row = score(edge_models["int8"], [path], tmp_path / "r.csv")[1][str(path)]
    if cv2.haveImageReader(str(path)):
        assert row.error == "" and row.probability is not None
    else:
        assert row.error == "not a decodable image"


@pytest.mark.parametrize("kind", ["fifo", "character device", "dangling link", "link loop",
                                  "folder named like a photo"])
def test_things_that_are_not_files_get_an_error_row_and_never_block(edge_models, tmp_path, kind):
    path = tmp_path / "thing.jpg"
    expected = {"fifo": "not a regular file (a FIFO)",
                "character device": "not a regular file (a character device)",
                "dangling link": "broken symbolic link (its target is missing)",
                "link loop": "symbolic link loop",
                "folder named like a photo": None}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "character device":
        path = Path("/dev/zero")
    elif kind == "dangling link":
        path.symlink_to(tmp_path / "gone.jpg")
    elif kind == "link loop":
        path.symlink_to(path)
    else:
        path.mkdir()
        with pytest.raises(UserError, match="no image files found in the given paths"):
            score(edge_models["int8"], [path], tmp_path / "r.csv")
        return
    row = score(edge_models["int8"], [path], tmp_path / "r.csv")[1][str(path)]
    assert row.error == expected


def test_a_file_that_vanishes_before_it_is_decoded_gets_an_error_row(tmp_path):
    path = tmp_path / "gone.jpg"
    with pytest.raises(ImageDecodeError, match=r"^cannot read file: No such file or directory$"):
        ImageFile(path)


def test_a_huge_sparse_file_is_refused_before_it_is_read(edge_models, tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(encoded(".png", texture(8, 8)))
    os.truncate(path, 2 << 30)  # 2 GB, no disk used: reading it would take 2 GB of memory
    row = score(edge_models["int8"], [path], tmp_path / "r.csv")[1][str(path)]
    assert row.error.startswith("image too large: decoding this 8x8 PNG (2147.5 MB file)")


def test_max_pixels_refuses_by_header_and_admits_what_fits(edge_models, tmp_path):
    small, large = tmp_path / "small.png", tmp_path / "large.png"
    small.write_bytes(encoded(".png", texture(10, 10)))
    large.write_bytes(encoded(".png", texture(10, 11)))
    summary, rows = score(edge_models["int8"], [small, large], tmp_path / "r.csv", max_pixels=100)
    assert rows[str(small)].error == ""
    assert rows[str(large)].error == "image too large: 11x10 is 110 pixels, over the --max-pixels limit of 100 pixels"


# --- names: what cameras, shares and zips put in file names ------------------------------------

NAMES = {
    "plain": b"plain.png",
    "formula =": b"=SUM(A1)+cmd.png",
    "formula +": b"+1.png",
    "formula -": b"-2.png",
    "formula @": b"@x.png",
    "leading tab": b"\tx.png",
    "leading CR": b"\rx.png",
    "leading quote": b"'quoted.png",
    "LF inside": b"line\nbreak.png",
    "CR inside": b"car\rriage.png",
    "CRLF inside": b"both\r\nends.png",
    "comma and quotes": b'a,"b",c.png',
    "hash": b"#1.png",
    "spaces at the ends": b" spaced .png",
    "unicode": "caf\u00e9 \U0001F600 \u202etxt.png".encode(),
    "backslash": b"back\\slash.png",
    "long (250 bytes)": b"n" * 246 + b".png",
    "latin-1 byte (not UTF-8)": b"caf\xe9.png",
    "invalid UTF-8 lead bytes": b"\xff\xfe.png",
    "lone continuation byte": b"\x80x.png",
    "not UTF-8 and a formula": b"=\xff.png",
}


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@pytest.mark.parametrize("name", list(NAMES))
def test_every_name_gets_its_row_and_resume_matches_it(edge_models, tmp_path, name, fmt):
    folder = tmp_path / "photos"
    folder.mkdir()
    raw = os.fsencode(folder) + b"/" + NAMES[name]
    with open(raw, "wb") as handle:
        handle.write(encoded(".png", np.full((20, 20, 3), 40, np.uint8)))
    (folder / "other.png").write_bytes(encoded(".png", np.full((20, 20, 3), 200, np.uint8)))
    out = tmp_path / f"r.{fmt}"
    summary, rows = score(edge_models["int8"], [folder], out, fmt)
    expected = os.fsdecode(raw)
    assert set(rows) == {expected, str(folder / "other.png")}
    assert rows[expected].label == "crack" and rows[expected].key == raw
    again, _ = score(edge_models["int8"], [folder], out, fmt, resume=True)
    assert (again.already_done, again.scored, again.errors) == (2, 0, 0)
    if fmt == "csv":
        import csv

        with out.open(newline="", encoding="utf-8") as handle:
            records = list(csv.reader(handle))[2:]
        shown = raw.decode("utf-8", errors="replace")
        (cell,) = [record[0] for record in records if "other.png" not in record[0]]
        formula = shown.startswith(("=", "+", "-", "@", "\t", "\r", "'"))
        assert cell == ("'" + shown if formula else shown)  # a spreadsheet shows text, not a formula
        for record in records:
            for text in (record[0], record[2], record[4], record[5]):
                assert not text.startswith(("=", "+", "-", "@", "\t", "\r"))
    else:
        text = out.read_text(encoding="utf-8")
        record = next(json.loads(line) for line in text.splitlines()[1:]
                      if "other.png" not in json.loads(line)["path"])
        assert record["path"] == raw.decode("utf-8", errors="replace")  # JSONL keeps the raw text
        assert (record["path_bytes"] != "") == (raw != raw.decode("utf-8", "replace").encode())


def test_a_csv_name_with_a_newline_stays_in_one_row_for_a_csv_reader(edge_models, tmp_path):
    import csv

    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "a\r\nb.png").write_bytes(encoded(".png", np.full((8, 8, 3), 40, np.uint8)))
    score(edge_models["int8"], [folder], tmp_path / "r.csv")
    with (tmp_path / "r.csv").open(newline="") as handle:
        records = list(csv.reader(handle))
    assert [len(record) for record in records] == [1, len(COLUMNS), len(COLUMNS)]
    assert records[2][0] == str(folder / "a\r\nb.png")


# --- links, hidden files, skipped files --------------------------------------------------------

def photo(path: Path, level: int = 40) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encoded(".png", np.full((16, 16, 3), level, np.uint8)))
    return path


@pytest.fixture
def linked(tmp_path) -> Path:
    """root/a/{1,2}.png, root/b/3.png, and links every way round."""
    root = tmp_path / "root"
    for name in ("a/1.png", "a/2.png", "b/3.png"):
        photo(root / name)
    return root


LINK_CASES = {
    "a folder linking to itself": lambda r: (r / "a" / "self").symlink_to(r / "a"),
    "two loops in one folder": lambda r: ((r / "a" / "up1").symlink_to(r), (r / "a" / "up2").symlink_to(r)),
    "a link to the parent of the root": lambda r: (r / "b" / "top").symlink_to(r.parent),
    "a chain of folder links": lambda r: ((r / "c1").symlink_to(r / "c2"), (r / "c2").symlink_to(r / "a")),
    "a second link to a photo": lambda r: (r / "b" / "again.png").symlink_to(r / "a" / "1.png"),
    "a hard link to a photo": lambda r: os.link(r / "a" / "1.png", r / "b" / "hard.png"),
    "a link to a folder beside the root": lambda r: (photo(r.parent / "outside" / "9.png"),
                                                      (r / "out").symlink_to(r.parent / "outside")),
}


@pytest.mark.parametrize("how", ["folder", "** glob"])
@pytest.mark.parametrize("case", list(LINK_CASES))
def test_links_score_each_real_file_once(edge_models, linked, tmp_path, case, how):
    LINK_CASES[case](linked)
    argument = str(linked) if how == "folder" else str(linked / "**" / "*.png")
    summary, rows = score(edge_models["int8"], [argument], tmp_path / "r.csv")
    real = {os.path.realpath(path) for path in rows}
    assert len(real) == len(rows) and all(not row.error for row in rows.values())
    expected = {str(linked / "a/1.png"), str(linked / "a/2.png"), str(linked / "b/3.png")}
    if "beside" in case:
        expected.add(str(linked.parent / "outside" / "9.png"))
    assert real == expected


def test_dangling_and_looping_links_inside_a_folder_get_error_rows(edge_models, linked, tmp_path):
    (linked / "a" / "gone.jpg").symlink_to(linked / "nowhere.jpg")
    (linked / "a" / "loop.jpg").symlink_to(linked / "a" / "loop.jpg")
    (linked / "a" / "gone.txt").symlink_to(linked / "nowhere.txt")  # not an image name: skipped
    summary, rows = score(edge_models["int8"], [linked], tmp_path / "r.csv")
    assert rows[str(linked / "a" / "gone.jpg")].error == "broken symbolic link (its target is missing)"
    assert rows[str(linked / "a" / "loop.jpg")].error == "symbolic link loop"
    assert (summary.scored, summary.errors) == (3, 2)
    assert dict(summary.skipped.not_images) == {".txt": 1}


def test_skipped_files_are_counted_and_reported(edge_models, linked, tmp_path):
    (linked / "a" / "anim.gif").write_bytes(pil_bytes("P", "GIF"))
    (linked / "a" / "notes.txt").write_text("x")
    (linked / "a" / "README").write_text("x")
    photo(linked / "a" / "._1.png")  # macOS resource fork copied from a share
    photo(linked / ".thumbnails" / "t.png")
    os.mkfifo(linked / "b" / "pipe.png")
    (linked / "b" / "same.png").symlink_to(linked / "b" / "3.png")
    summary, rows = score(edge_models["int8"], [linked, linked / "a" / "1.png"], tmp_path / "r.csv")
    assert len(rows) == 3
    skipped = summary.skipped
    assert dict(skipped.not_images) == {".gif": 1, ".txt": 1, "": 1}
    assert (skipped.hidden, skipped.not_regular, skipped.duplicates) == (2, 1, 2)
    assert summary.lines()[1] == ("skipped 8 file(s): 3 not images by name (no suffix 1, .gif 1, "
                                  ".txt 1); 2 hidden; 1 not regular files; 2 reached again "
                                  "through another path (a link)")


@pytest.mark.parametrize("layout, given, expected", [
    ("yes/survey/crack/1.png", "yes/survey", 1),      # the nearest class folder below wins
    ("yes/survey/no_crack/1.png", "yes/survey", 0),
    ("crack/survey/misc/1.png", "crack/survey", None),  # an ancestor above what was given: no label
    ("yes/1.png", "yes", 1),                           # the folder given itself counts
    ("no/crack/1.png", "no", 1),                        # nested: the nearest (deepest) one
    ("crack/1.png", "crack/1.png", 1),                  # a file named directly: its own folder
    ("data/crack/1.png", "data/*/1.png", 1),            # a glob: below its fixed part
])
def test_labels_come_from_the_nearest_class_folder_below_what_was_given(edge_models, tmp_path,
                                                                         monkeypatch, layout, given,
                                                                         expected):
    monkeypatch.chdir(tmp_path)
    photo(Path(layout), level=30)
    summary, _ = score(edge_models["int8"], [given], tmp_path / "r.csv", labels_from_folders=True)
    assert summary.labels == ([] if expected is None else [expected])
    assert summary.unlabelled == (1 if expected is None else 0)


def test_a_list_file_may_hold_any_bytes_and_does_not_nest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = b"caf\xe9.png"
    with open(os.fsencode(tmp_path) + b"/" + name, "wb") as handle:
        handle.write(encoded(".png", texture(8, 8)))
    (tmp_path / "@odd.png").write_bytes(encoded(".png", texture(8, 8)))
    (tmp_path / "list.txt").write_bytes(b"# day 1\r\n" + name + b"\r\n@odd.png\r\n")
    found = find_inputs(["@list.txt"]).files
    assert [os.fsencode(f.path) for f in found] == [name, b"@odd.png"]


# --- outputs -----------------------------------------------------------------------------------

@pytest.fixture
def one_photo(tmp_path) -> Path:
    return photo(tmp_path / "in" / "1.png")


@pytest.mark.parametrize("where, message", [
    ("folder", "--out {out} is a folder; give a file name"),
    ("under a file", "--out {out}: {parent} is a file, not a folder"),
    ("unwritable folder", "cannot create --out {out} in /sys: Permission denied"),
])
def test_an_output_that_cannot_be_written_is_refused_before_any_work(edge_models, one_photo,
                                                                     tmp_path, where, message):
    if where == "folder":
        out = tmp_path / "results"
        out.mkdir()
        parent = None
    elif where == "under a file":
        parent = tmp_path / "notes.txt"
        parent.write_text("keep me")
        out = parent / "r.csv"
    else:
        out, parent = Path("/sys/r.csv"), None
    result = edge("score", "--model", edge_models["int8"], one_photo, "--out", out, "--no-progress")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert error_lines(result) == ["error: " + message.format(out=out, parent=parent)]
    assert "scored" not in result.stdout
    if where == "folder":
        assert list(out.iterdir()) == []
    elif where == "under a file":
        assert parent.read_text() == "keep me"
    else:
        assert not out.exists()


def test_a_full_disk_from_the_start_is_exit_1(edge_models, one_photo):
    result = edge("score", "--model", edge_models["int8"], one_photo, "--out", "/dev/full")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert error_lines(result) == ["error: cannot write /dev/full: No space left on device; the 0 "
                                   "row(s) written before are kept (continue with --resume)"]


def test_a_disk_that_fills_up_mid_run_keeps_every_flushed_row_and_resume_completes(edge_models, tmp_path):
    folder = tmp_path / "many"
    for i in range(120):
        photo(folder / f"p{i:03d}.png", level=i * 2)
    out = tmp_path / "r.csv"

    def small_disk() -> None:  # writes past 3000 bytes fail with EFBIG, as on a full card
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))

    args = ["score", "--model", edge_models["int8"], folder, "--out", out, "--no-progress",
            "--batch-size", "8"]
    full = subprocess.run([*EDGE, *map(str, args)], capture_output=True, text=True, timeout=120,
                          cwd=PROJECT, preexec_fn=small_disk)
    assert full.returncode == 1 and "Traceback" not in full.stderr
    (line,) = error_lines(full)
    kept = int(line.split("the ")[1].split(" row")[0])
    assert line == (f"error: cannot write {out}: File too large; the {kept} row(s) written "
                    "before are kept (continue with --resume)")
    assert os.path.getsize(out) == 3000
    assert len(read_results(out, "csv").rows) >= kept > 0  # and a torn row the resume cuts
    resumed = edge(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    rows = read_results(out, "csv").rows
    assert sorted(row.path for row in rows) == sorted(str(p) for p in folder.iterdir())


def results_file(model: Path, tmp_path: Path, fmt: str = "csv", **options) -> Path:
    out = tmp_path / f"done.{fmt}"
    score(model, [photo(tmp_path / "in" / "1.png"), photo(tmp_path / "in" / "2.png", 200)], out,
          fmt, **options)
    return out


NOT_RESULTS = {
    "somebody's notes": (b"name,size\nx,1\nlast line without newline", "it is not a crack-edge results file"),
    "a JPEG": (None, "it is not a crack-edge results file"),
    "binary garbage": (bytes(range(256)) * 4, "it is not a crack-edge results file"),
    "a blank line": (b"\n", "it is not a crack-edge results file"),
    "an older crack-edge's results": (b"path,probability,label,latency_ms,error\na.jpg,0.5,crack,1.0,\n", "written by an older crack-edge"),
    "a JSONL results file resumed as CSV": ("jsonl", "it is a jsonl results file; resume it with --format jsonl"),
    "a row of 3 cells in the middle": ("broken", f"record 4 is not a results row (3 cells, not {len(COLUMNS)})"),
    "a probability of 7": ("seven", "record 3 is not a results row (probability 7."),
}


@pytest.mark.parametrize("case", list(NOT_RESULTS))
def test_resume_refuses_what_is_not_its_results_and_changes_nothing(edge_models, tmp_path, case):
    content, message = NOT_RESULTS[case]
    out = tmp_path / "target.csv"
    if content is None:
        out.write_bytes(jpeg_bytes())
    elif content == "jsonl":
        out = results_file(edge_models["int8"], tmp_path, "jsonl").rename(out)
    elif content in ("broken", "seven"):
        good = results_file(edge_models["int8"], tmp_path).read_bytes()
        lines = good.split(b"\r\n")
        if content == "broken":
            lines.insert(3, b"a.jpg,0.5,crack")
        else:
            lines[2] = lines[2].replace(b",0.", b",7.", 1)
        out.write_bytes(b"\r\n".join(lines) + b"tail")
    else:
        out.write_bytes(content)
    before = out.read_bytes()
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        score(edge_models["int8"], [photo(tmp_path / "x.png")], out, resume=True)
    assert out.read_bytes() == before


@pytest.mark.parametrize("change, message", [
    ({"threshold": 0.7}, "threshold 0.5 in the file, 0.7 now"),
    ({"tiles": "2x2"}, "tiles whole in the file, 2x2 now"),
    ({"model": "fp32"}, "model model_int8.tflite (sha256 "),
])
def test_resume_refuses_a_file_from_another_model_threshold_or_grid(edge_models, tmp_path,
                                                                     change, message):
    out = results_file(edge_models["int8"], tmp_path)
    before = out.read_bytes()
    options = dict(change)
    model = edge_models[options.pop("model", "int8")]
    with pytest.raises(UserError, match=r"cannot --resume .* it was written with " + message.replace("(", r"\(")):
        score(model, [tmp_path / "in"], out, resume=True, **options)
    assert out.read_bytes() == before


def test_resume_cuts_a_row_torn_anywhere_and_ends_with_each_file_once(edge_models, tmp_path):
    folder = tmp_path / "p"
    names = ["a.png", "line\nbreak.png", "cr\r\nlf.png", 'q"uote,.png', "=f.png", "z.png"]
    for i, name in enumerate(names):
        photo(folder / name, level=20 + 30 * i)
    whole = tmp_path / "whole.csv"
    score(edge_models["int8"], [folder], whole)
    data = whole.read_bytes()
    header = ",".join(COLUMNS).encode() + b"\r\n"
    header_end = data.index(header) + len(header)
    for cut in range(header_end, len(data) + 1, 7):
        out = tmp_path / "cut.csv"
        out.write_bytes(data[:cut])
        summary, rows = score(edge_models["int8"], [folder], out, resume=True)
        assert sorted(rows) == sorted(str(folder / name) for name in names), cut
        assert summary.already_done + summary.scored == len(names)


def test_a_torn_identity_line_starts_the_file_again(edge_models, tmp_path, one_photo):
    out = results_file(edge_models["int8"], tmp_path)
    out.write_bytes(out.read_bytes()[:25])
    summary, rows = score(edge_models["int8"], [one_photo], out, resume=True)
    assert summary.scored == 1 and list(rows) == [str(one_photo)]


def test_resume_retries_error_rows_and_keeps_one_row_per_file(edge_models, tmp_path):
    folder = tmp_path / "p"
    good = photo(folder / "good.png")
    late = folder / "late.png"
    late.write_bytes(b"still uploading")
    out = tmp_path / "r.jsonl"
    first, rows = score(edge_models["int8"], [folder], out, "jsonl")
    assert rows[str(late)].error.startswith("not a decodable image")
    photo(late, level=30)  # the upload finished
    second, rows = score(edge_models["int8"], [folder], out, "jsonl", resume=True)
    assert (second.already_done, second.retried, second.scored) == (1, 1, 1)
    assert rows[str(late)].label == "crack" and rows[str(good)].error == ""
    assert len(out.read_text().splitlines()) == 3  # identity + one row per file


def test_a_second_process_on_the_same_output_is_refused(edge_models, tmp_path, one_photo):
    out = results_file(edge_models["int8"], tmp_path)
    before = out.read_bytes()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys\nfd = os.open(sys.argv[1], os.O_RDWR)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('locked', flush=True)\nsys.stdin.read()", str(out)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for flag in ("--resume", "--overwrite"):
            result = edge("score", "--model", edge_models["int8"], one_photo, "--out", out, flag)
            assert result.returncode == 2 and "Traceback" not in result.stderr
            assert error_lines(result) == [f"error: {out} is being written by another crack-edge "
                                           "process; wait for it to finish or choose another --out"]
            assert out.read_bytes() == before
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


def test_an_existing_output_without_resume_or_overwrite_is_left_alone(edge_models, tmp_path, one_photo):
    out = tmp_path / "notes.csv"
    out.write_text("precious")
    with pytest.raises(UserError, match="exists; use --resume to continue it or --overwrite"):
        score(edge_models["int8"], [one_photo], out)
    assert out.read_text() == "precious"


# --- options -----------------------------------------------------------------------------------

@pytest.mark.parametrize("options, message", [
    ({"threads": -1}, "--threads must be at least 1, got -1"),
    ({"threads": 0}, "--threads must be at least 1, got 0"),
    ({"batch_size": 0}, "--batch-size must be between 1 and 256, got 0"),
    ({"batch_size": 10 ** 6}, "--batch-size must be between 1 and 256"),
    ({"decode_workers": 0}, "--decode-workers must be between 1 and 32, got 0"),
    ({"decode_workers": 1000}, "--decode-workers must be between 1 and 32"),
    ({"threshold": float("nan")}, "--threshold must be between 0 and 1, got nan"),
    ({"threshold": float("inf")}, "--threshold must be between 0 and 1, got inf"),
    ({"threshold": -0.1}, "--threshold must be between 0 and 1"),
    ({"format": "xml"}, "unknown --format 'xml'"),
    ({"resume": True, "overwrite": True}, "give either --resume or --overwrite"),
    ({"max_pixels": 0}, "--max-pixels must be at least 1"),
    ({"tiles": "100x100"}, "--tiles 100x100 is 10000 tiles per image; at most 4096"),
    ({"tiles": "0x3"}, "--tiles takes ROWSxCOLS"),
    ({"tiles": "3x"}, "--tiles takes ROWSxCOLS"),
    ({"tiles": "99999999999x1"}, "--tiles takes ROWSxCOLS"),
    ({"tile_size": 0}, "--tile-size and --stride must be positive"),
    ({"tile_size": 64, "stride": -1}, "--tile-size and --stride must be positive"),
    ({"stride": 8}, "--stride goes with --tile-size"),
    ({"tiles": "2x2", "tile_size": 32}, "either --tiles RxC or --tile-size"),
])
def test_bad_options_are_one_clear_error_before_any_work(edge_models, tmp_path, one_photo,
                                                         options, message):
    out = tmp_path / "r.csv"
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        score(edge_models["int8"], [one_photo], out, **options)
    assert not out.exists()


def test_more_tiles_than_pixels_are_clamped_and_too_many_tiles_are_an_error_row(edge_models, tmp_path):
    tiny, wide = tmp_path / "tiny.png", tmp_path / "wide.png"
    tiny.write_bytes(encoded(".png", np.full((3, 2, 3), 30, np.uint8)))
    wide.write_bytes(encoded(".png", np.full((100, 100, 3), 30, np.uint8)))
    _, rows = score(edge_models["int8"], [tiny], tmp_path / "a.csv", tiles="8x8")
    assert rows[str(tiny)].label == "crack"  # 3 x 2 tiles of one pixel each
    assert TileGrid.parse("8x8").boxes(3, 2)[-1].as_list() == [1, 2, 2, 3]
    _, rows = score(edge_models["int8"], [tiny, wide], tmp_path / "b.csv", tile_size=1)
    assert rows[str(tiny)].label == "crack"
    assert rows[str(wide)].error == ("a 100x100 image needs 10000 tiles of 1 px at stride 1, over "
                                     "the limit of 4096; use a larger --tile-size or --stride")


def test_bad_options_through_the_command_line_are_one_line_exit_2(edge_models, one_photo, tmp_path):
    for args, message in ((["--threads", "-1"], "error: --threads must be at least 1, got -1"),
                          (["--threads", "many"], "error: Invalid value for '--threads'")):
        result = edge("score", "--model", edge_models["int8"], one_photo, "--out",
                      tmp_path / "r.csv", *args)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        (line,) = error_lines(result)
        assert line.startswith(message)


@pytest.mark.parametrize("options, message", [
    ({"runs": 0}, "--runs must be at least 1, got 0"),
    ({"repeats": 0}, "--repeats must be at least 1, got 0"),
    ({"count": 0}, "--count must be at least 1, got 0"),
    ({"threads": -1}, "--threads must be at least 1, got -1"),
    ({"json_out": "FOLDER"}, "--json {tmp}/out is a folder"),
    ({"json_out": "UNDER_FILE"}, "--json {tmp}/note/b.json: {tmp}/note is a file, not a folder"),
    ({"json_out": Path("/sys/bench.json")}, "cannot create --json /sys/bench.json in /sys"),
    ({"images": "UNDECODABLE"}, "none of the 2 --images file(s) can be decoded"),
    ({"images": "EMPTY"}, "no image files in --images"),
])
def test_bench_refuses_bad_options_and_files_before_timing_anything(edge_models, tmp_path,
                                                                     options, message):
    (tmp_path / "out").mkdir()
    (tmp_path / "note").write_text("x")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.jpg").write_bytes(jpeg_bytes()[:500])
    (tmp_path / "bad" / "b.png").write_bytes(b"")
    (tmp_path / "empty").mkdir()
    replace = {"FOLDER": tmp_path / "out", "UNDER_FILE": tmp_path / "note" / "b.json",
               "UNDECODABLE": (str(tmp_path / "bad"),), "EMPTY": (str(tmp_path / "empty"),)}
    options = {key: replace.get(value, value) if isinstance(value, str) else value
               for key, value in options.items()}
    said: list[str] = []
    with pytest.raises(UserError, match=message.format(tmp=tmp_path).replace("(", r"\(").replace(")", r"\)")):
        run_bench(BenchOptions(model=edge_models["int8"], **{"count": 4, "runs": 3, "repeats": 1,
                                                             **options}), say=said.append)
    assert not any("bare invoke" in line for line in said)  # refused before the benchmark ran


def test_bench_leaves_out_the_files_it_cannot_decode(edge_models, tmp_path):
    folder = tmp_path / "mixed"
    photo(folder / "good.png")
    (folder / "broken.jpg").write_bytes(jpeg_bytes()[:400])
    said: list[str] = []
    result = run_bench(BenchOptions(model=edge_models["int8"], images=(str(folder),), count=4,
                                    runs=3, repeats=1), say=said.append)
    assert result["files"]["images"] == 1 and result["decode"]["samples"] == 1
    assert any(line.startswith("warning: 1 of the --images file(s) cannot be decoded") for line in said)


# --- stopping ----------------------------------------------------------------------------------

def test_closing_the_decode_window_cancels_queued_decodes_without_waiting():
    release = threading.Event()
    started: list[int] = []

    def decode(number: int) -> int:
        started.append(number)
        if number > 0:
            release.wait(60)
        return number

    ahead = decode_ahead(iter(range(50)), decode, workers=2, window=10)
    assert next(ahead) == (0, 0, "")
    ahead.close()  # returns while two decodes are still blocked
    assert not release.is_set()
    release.set()
    for thread in threading.enumerate():
        if thread.name.startswith("decode"):
            thread.join(timeout=30)
    assert set(started) <= {0, 1, 2}, started  # nothing queued ran after the close


def test_sigterm_during_large_decodes_stops_with_130_and_a_valid_file(edge_models, tmp_path):
    folder = tmp_path / "big"
    folder.mkdir()
    data = jpeg_bytes(cv2.resize(texture(), (4000, 3000)))
    for i in range(40):
        (folder / f"{i:02d}.jpg").write_bytes(data)
    out = tmp_path / "r.csv"
    process = subprocess.Popen([*EDGE, "score", "--model", str(edge_models["int8"]), str(folder),
                                "--out", str(out), "--no-progress", "--batch-size", "1"],
                               cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not out.exists() or out.read_bytes().count(b"\r\n") < 3):
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in stderr
    assert f"interrupted; the rows so far are in {out}. Continue with --resume." in stderr
    rows = read_results(out, "csv").rows
    assert 1 <= len(rows) < 40 and all(not row.error for row in rows)


def test_the_interpreter_failing_is_a_runtime_failure_not_a_row(edge_models, tmp_path, one_photo,
                                                              monkeypatch):
    from edge.classifier import CrackClassifier

    def broken(self, images):
        raise RuntimeError("Invoke failed: tensor arena too small\nsecond line")

    monkeypatch.setattr(CrackClassifier, "predict", broken)
    with pytest.raises(RuntimeFailure, match="^the interpreter failed on model_int8.tflite: "
                                             "RuntimeError: Invoke failed: tensor arena too small$"):
        score(edge_models["int8"], [one_photo], tmp_path / "r.csv")
    monkeypatch.setattr(CrackClassifier, "predict", lambda self, images: np.full(len(images), np.nan))
    _, rows = score(edge_models["int8"], [one_photo], tmp_path / "n.csv")
    assert rows[str(one_photo)].error == "the model returned a non-finite probability"
