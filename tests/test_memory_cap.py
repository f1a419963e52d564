"""Peak memory of `crack-edge score` with default options stays below 500 MB for any single input
(issue 12): a 1 MB PNG that decodes to 20000x20000 is refused from its header, a 48 MP JPEG is
scored, and two of them in one run do not double the peak (the decode workers share one memory
budget). The peak is the child's own maximum resident set, from os.wait4."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import PROJECT

from edge.results_file import read_results

LIMIT_MB = 500


def png_bomb(path: Path, width: int, height: int) -> Path:
    """A valid RGB PNG of black rows: about 1 MB on disk, 1.2 GB decoded at 20000x20000."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = bytes(1 + 3 * width)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def big_inputs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("big")
    height, width = 6000, 8000  # 48 MP, a phone's full-resolution photo
    ramp = (np.add.outer(np.arange(height) // 24, np.arange(width) // 32) % 256).astype(np.uint8)
    image = np.dstack([ramp, ramp[::-1], 255 - ramp])
    photo = folder / "phone_48mp.jpg"
    assert cv2.imwrite(str(photo), image, [cv2.IMWRITE_JPEG_QUALITY, 92])
    second = folder / "pair" / "b.jpg"
    second.parent.mkdir()
    second.write_bytes(photo.read_bytes())
    (folder / "pair" / "a.jpg").write_bytes(photo.read_bytes())
    pngs = folder / "png_pair"
    pngs.mkdir()
    png_bomb(pngs / "a.png", 7000, 7000)  # 49 MP each, decoded whole (a JPEG this size is read at 1/8)
    (pngs / "b.png").write_bytes((pngs / "a.png").read_bytes())
    return {"bomb": png_bomb(folder / "bomb.png", 20000, 20000), "photo": photo,
            "pair": second.parent, "png pair": pngs}


MEASURE = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
stderr = child.stderr.read()
_, status, usage = os.wait4(child.pid, 0)
sys.stderr.buffer.write(stderr)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def run_measured(args: list[str]) -> tuple[int, float, str]:
    """(exit code, peak resident memory in MB, stderr) of `crack-edge ARGS`.

    The child is started by a small helper process, not by pytest: Linux counts the memory of
    the process that forks into the child's peak (it is folded in at exec), so a child of this
    big test process would report this process's peak. wait4 gives that one child's peak."""
    helper = subprocess.run([sys.executable, "-c", MEASURE, sys.executable, "-m", "edge", *args],
                            cwd=PROJECT, capture_output=True, text=True, timeout=300)
    code, peak_kb = map(int, helper.stdout.split())
    return code, peak_kb / 1024, helper.stderr


@pytest.mark.parametrize("case", ["png bomb 20000x20000", "48 MP JPEG", "48 MP JPEG as 4x4 tiles",
                                  "two 48 MP JPEGs, 2 decode workers",
                                  "two 49 MP PNGs, 2 decode workers"])
def test_peak_memory_of_score_stays_below_500_mb(edge_models, big_inputs, tmp_path, case):
    given = {"png bomb 20000x20000": big_inputs["bomb"], "48 MP JPEG": big_inputs["photo"],
             "48 MP JPEG as 4x4 tiles": big_inputs["photo"],
             "two 48 MP JPEGs, 2 decode workers": big_inputs["pair"],
             "two 49 MP PNGs, 2 decode workers": big_inputs["png pair"]}[case]
    out = tmp_path / "r.csv"
    args = ["score", "--model", str(edge_models["int8"]), str(given), "--out", str(out),
            "--no-progress"]
    if "tiles" in case:
        args += ["--tiles", "4x4"]
    code, peak, stderr = run_measured(args)
    assert code == 0, stderr
    rows = read_results(out, "csv").rows
    print(f"{case}: peak {peak:.0f} MB")
    assert peak < LIMIT_MB, f"{case}: peak {peak:.0f} MB"
    if "bomb" in case:
        (row,) = rows
        assert row.error == "image too large: 20000x20000 is 400.0 MP, over the --max-pixels limit of 50.0 MP"
    else:
        assert len(rows) == (2 if "two" in case else 1) and all(row.probability is not None for row in rows)
