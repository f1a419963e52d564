"""`crack-edge report` (one self-contained HTML page), `score --save-annotated`, the EXIF and
tiles columns written by `score`, and the page opened in headless Chromium."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import PROJECT
from edge.annotate import AnnotatedPhotos, annotated_path
from edge.errors import UserError
from edge.report import ReportOptions, run_report
from edge.results_file import Row, RunIdentity, open_results
from outside_programs import WAIT, installed_program
from photo_files import camera_exif, jpeg_with_exif, results_file

SCREENSHOT = PROJECT / "benchmarks" / "results" / "report.png"
HOSTILE = "<img src=x onerror=alert(1)>.jpg"
NOT_UTF8 = os.fsdecode(b"caf\xe9 \xff.jpg")


def survey_photo(number: int, crack: bool) -> tuple[np.ndarray, tuple]:
    """A 240x180 concrete-grey photo, with a dark jagged crack if ``crack``, and its 2x3 tiles:
    the crack's probability on the tiles the crack crosses, 0.05 elsewhere."""
    rng = np.random.default_rng(number)
    image = rng.normal(150, 12, (180, 240, 3)).clip(0, 255).astype(np.uint8)
    mask = np.zeros((180, 240), np.uint8)
    if crack:
        xs = np.cumsum(rng.integers(-9, 10, 10)) + 60 + 12 * number
        points = np.stack([xs.clip(5, 235), np.linspace(0, 179, 10)], axis=1).astype(np.int32)
        cv2.polylines(image, [points], False, (40, 40, 45), 3)
        cv2.polylines(mask, [points], False, 255, 3)
    return image, tuple((x, y, x + 80, y + 90, 0.9 if mask[y:y + 90, x:x + 80].any() else 0.05)
                        for y in (0, 90) for x in (0, 80, 160))


def survey(tmp_path: Path) -> Path:
    """Photos on disk (with GPS) and a results file naming them, some in hostile ways."""
    rows = []
    scores = {"north/a.jpg": 0.95, "north/b.jpg": 0.85, f"north/{HOSTILE}": 0.52,
              f"south/{NOT_UTF8}": 0.45, "south/line\nbreak.jpg": 0.1, "south/e.jpg": 0.02}
    for number, (name, probability) in enumerate(scores.items()):
        path = tmp_path / "survey" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image, tiles = survey_photo(number, crack=probability >= 0.5)
        block = camera_exif(when=f"2024:05:0{number + 1} 10:20:30",
                            lat=("N", 51.5 + number * 0.001), lon=("W", 0.12 + number * 0.001))
        path.write_bytes(jpeg_with_exif(image, block))
        label = "crack" if probability >= 0.5 else "no_crack"
        rows.append(Row(f"survey/{name}", probability, label, 1.0, "", f"2024-05-0{number + 1}T10:20:30",
                        51.5 + number * 0.001, -0.12 - number * 0.001, tiles=tiles))
    rows.append(Row("survey/north/gone.jpg", 0.7, "crack", 1.0))  # deleted since it was scored
    rows.append(Row("survey/south/bad.jpg", None, "", None, "damaged JPEG: <b>bad</b>"))
    return results_file(tmp_path / "results.csv", rows, tiles="2x3")


def numbers(page: str) -> dict[str, int]:
    return {name: int(count) for count, name in
            re.findall(r'<span class="number">(\d+)</span>([^<]+)</div>', page)}


def captions(page: str, gallery: str) -> list[str]:
    section = re.search(rf'<div class="gallery" id="{gallery}">(.*?)\n<h2>', page, re.S)
    return re.findall(r"<figcaption><b>([0-9.]+)</b>", section.group(1)) if section else []


def test_the_page_has_counts_histogram_galleries_folders_map_and_errors(tmp_path):
    results = survey(tmp_path)
    out = tmp_path / "report.html"
    summary = run_report(ReportOptions(results, out, base=tmp_path))
    page = out.read_bytes().decode("utf-8")  # valid UTF-8 despite a name that is not
    assert numbers(page) == {"photos": 8, "crack": 4, "no_crack": 3, "errors": 1}
    assert (summary.thumbnails, summary.placeholders, summary.map_points) == (5, 1, 6)
    assert captions(page, "top") == ["0.950", "0.850", "0.700", "0.520"]
    assert captions(page, "uncertain") == ["0.520", "0.450"]  # within 0.1 of 0.5, nearest first
    assert page.count('src="data:image/jpeg;base64,') == 5  # 0.52 is in both galleries
    assert "no image: cannot read file: No such file or directory" in page  # gone.jpg
    histogram = re.search(r'<svg id="histogram".*?</svg>', page, re.S).group(0)
    assert histogram.count("<rect") == 20 and "0.50-0.55: 1 photo(s)" in histogram
    map_svg = re.search(r'<svg id="map".*?</svg>', page, re.S).group(0)
    assert map_svg.count("<circle") == 6 and map_svg.count('stroke="#000"') >= 3  # cracks ringed
    assert re.search(r"<tr><td>survey/north</td><td>4</td><td>4</td><td>0</td>", page)
    assert re.search(r"<tr><td>survey/south</td><td>4</td><td>0</td><td>1</td>", page)
    # hostile text is shown, never run; nothing is fetched from anywhere
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;.jpg" in page
    assert "caf\ufffd \ufffd.jpg" in page and "damaged JPEG: &lt;b&gt;bad&lt;/b&gt;" in page
    assert page.count("<script>") == 1 and "<link" not in page and "url(" not in page
    assert not re.search(r'(src|href)="(?!data:)', page)
    assert "Content-Security-Policy" in page and "default-src 'none'" in page


def thumbnail_pixels(page: str) -> list[np.ndarray]:
    return [cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_COLOR)
            for data in re.findall(r'src="data:image/jpeg;base64,([^"]+)"', page)]


def test_thumbnails_carry_the_tile_heat_map(tmp_path):
    (tmp_path / "p.jpg").write_bytes(jpeg_with_exif(np.full((100, 200, 3), 128, np.uint8),
                                                    camera_exif()))
    tiles = ((0, 0, 100, 100, 0.9), (100, 0, 200, 100, 0.1))  # the left half is the crack
    results = results_file(tmp_path / "r.jsonl", [Row("p.jpg", 0.9, "crack", 1.0, tiles=tiles)],
                           tiles="1x2")
    run_report(ReportOptions(results, tmp_path / "r.html", base=tmp_path, thumbnail=100))
    (thumbnail,) = thumbnail_pixels((tmp_path / "r.html").read_text())
    assert thumbnail.shape == (50, 100, 3)  # scaled from 200x100, tiles scaled with it
    blue, green, red = (thumbnail[30:48, 5:45].reshape(-1, 3).mean(axis=0))
    assert red > 150 and blue < 100  # heat on the crack tile
    assert np.abs(thumbnail[30:48, 60:95].reshape(-1, 3).mean(axis=0) - 128).max() < 3  # untouched


def test_version_1_results_are_refused_by_resume_and_report_naming_the_version(tmp_path):
    old = tmp_path / "old.csv"
    identity = RunIdentity("m.tflite", "0" * 64, 0.5, "whole", ("no_crack", "crack"), 32)
    first = json.dumps({**identity.to_dict(), "version": 1})
    old.write_bytes(('"#' + first.replace('"', '""') + '"\r\n'
                     "path,probability,label,latency_ms,error,path_bytes\r\n"
                     "a.jpg,0.100000,no_crack,1.000,,\r\n").encode())
    before = old.read_bytes()
    for attempt in (lambda: open_results(old, "csv", identity, resume=True),
                    lambda: run_report(ReportOptions(old, tmp_path / "r.html"))):
        with pytest.raises(UserError, match="results format version 1, from another crack-edge"):
            attempt()
    assert old.read_bytes() == before and not (tmp_path / "r.html").exists()


def test_the_command_writes_the_page_and_refuses_bad_input_in_one_line(tmp_path):
    results = results_file(tmp_path / "results.csv", [Row("gone.jpg", 0.9, "crack", 1.0),
                                                      Row("bad.jpg", None, "", None, "empty file")])

    def edge(*args):
        return subprocess.run([sys.executable, "-m", "edge", "report", *map(str, args)],
                              capture_output=True, text=True, timeout=WAIT, cwd=tmp_path)

    done = edge(results, "--out", tmp_path / "r.html")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (f"wrote {tmp_path / 'r.html'}: 2 photo(s), 1 crack(s), 1 error(s); "
                                   "0 thumbnail(s) (1 photo(s) could not be read), 0 map point(s)")
    page = (tmp_path / "r.html").read_text()
    assert "No photo carries a GPS position." in page and "<li><span class=\"path\">bad.jpg" in page
    for args, message in (((tmp_path / "none.csv", "--out", tmp_path / "x.html"), "cannot read"),
                          ((results, "--out", tmp_path / "x.html", "--top", "-1"), "--top must be"),
                          ((results, "--out", tmp_path), "is a folder")):
        refused = edge(*args)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
        assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr


def test_a_photo_that_cannot_be_annotated_is_counted_and_the_others_are_saved(tmp_path):
    photo = tmp_path / "crack.jpg"
    photo.write_bytes(jpeg_with_exif(survey_photo(0, crack=True)[0], camera_exif()))
    annotated = AnnotatedPhotos(tmp_path / "out", threshold=0.5)
    annotated.add([Row(str(tmp_path / "gone.jpg"), 0.9, "crack", 1.0),
                   Row(str(photo), 0.8, "crack", 1.0), Row(str(photo), 0.2, "no_crack", 1.0),
                   Row(str(photo), None, "", None, "empty file")])
    line = annotated.close()
    assert line.startswith(f"saved 1 annotated crack photo(s) in {tmp_path / 'out'}; 1 could not be "
                           f"saved (first: {tmp_path / 'gone.jpg'}: ")
    assert cv2.imread(str(annotated_path(tmp_path / "out", str(photo)))).shape == (180, 240, 3)


def test_annotated_copies_stay_inside_their_folder(tmp_path):
    assert annotated_path(tmp_path, "/data/survey/a.JPG") == tmp_path / "data/survey/a.JPG"
    assert annotated_path(tmp_path, "../../etc/x.png") == tmp_path / "etc/x.png.jpg"
    assert annotated_path(tmp_path, "./b.jpeg") == tmp_path / "b.jpeg"


# --- score: EXIF and tiles columns, --save-annotated ---------------------------------------------

def test_score_writes_exif_and_tiles_columns_and_annotated_crack_photos(tmp_path):
    from edge_models import CRACK_LEVEL, GREY, line_model_path

    photos = tmp_path / "photos"
    photos.mkdir()
    stored = np.full((96, 128, 3), GREY, np.uint8)
    stored[10:13, :] = CRACK_LEVEL  # a horizontal line near the top of the stored pixels
    (photos / "portrait.jpg").write_bytes(jpeg_with_exif(stored, camera_exif(
        orientation=6, when="2024:05:01 10:20:30", lat=("N", 51.5), lon=("W", 0.125), alt=31.5)))
    (photos / "clear.jpg").write_bytes(jpeg_with_exif(np.full((96, 128, 3), GREY, np.uint8),
                                                      camera_exif(lat=("N", 51.501), lon=("W", 0.126))))
    cv2.imwrite(str(photos / "plain.png"), stored)  # no EXIF: scored as stored
    out, annotated = tmp_path / "results.jsonl", tmp_path / "annotated"
    done = subprocess.run(
        [sys.executable, "-m", "edge", "score", "--model", str(line_model_path()), "photos",
         "--out", str(out), "--format", "jsonl", "--tiles", "2x2", "--save-annotated",
         str(annotated), "--no-progress"], capture_output=True, text=True, timeout=WAIT, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"saved 2 annotated crack photo(s) in {annotated}" in done.stdout
    rows = {row["path"]: row for row in map(json.loads, out.read_text().splitlines()[1:])}
    portrait, clear, plain = rows["photos/portrait.jpg"], rows["photos/clear.jpg"], rows["photos/plain.png"]
    assert (portrait["capture_time"], portrait["gps_lat"], portrait["gps_lon"], portrait["gps_alt"],
            portrait["orientation"]) == ("2024-05-01T10:20:30", 51.5, -0.125, 31.5, 6)
    # turned upright (96 wide, 128 high), the line runs down the right-hand tiles
    assert [tile[:4] for tile in portrait["tiles"]] == [[0, 0, 48, 64], [48, 0, 96, 64],
                                                        [0, 64, 48, 128], [48, 64, 96, 128]]
    assert [tile[4] >= 0.5 for tile in portrait["tiles"]] == [False, True, False, True]
    # no EXIF: as stored (128 wide), the line in the top tiles
    assert [tile[4] >= 0.5 for tile in plain["tiles"]] == [True, True, False, False]
    assert plain["orientation"] is None and plain["capture_time"] == "" and plain["gps_lat"] is None
    assert clear["label"] == "no_crack" and clear["gps_lat"] == 51.501
    written = sorted(p.relative_to(annotated).as_posix() for p in annotated.rglob("*") if p.is_file())
    assert written == ["photos/plain.png.jpg", "photos/portrait.jpg"]  # crack photos only
    upright = cv2.imread(str(annotated / "photos/portrait.jpg"))
    assert upright.shape == (128, 96, 3)
    blue_right, blue_left = upright[80:120, 55:80, 0].mean(), upright[80:120, 5:40, 0].mean()
    assert blue_right < blue_left - 30  # the heat (dark red at 0.99) tints the right-hand tiles

    page = tmp_path / "report.html"
    summary = run_report(ReportOptions(out, page, base=tmp_path))
    assert (summary.photos, summary.cracks, summary.thumbnails, summary.map_points) == (3, 2, 2, 2)


# --- in a real browser -------------------------------------------------------------------------------

def headless_chromium(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=WAIT)


@pytest.mark.integration
def test_the_report_renders_its_images_and_map_in_chromium(tmp_path):
    browser = installed_program(("chromium", "chromium-browser"), "chromium")
    page = tmp_path / "report.html"
    run_report(ReportOptions(survey(tmp_path), page, base=tmp_path))
    dom = headless_chromium(browser, tmp_path / "profile-a", "--virtual-time-budget=5000",
                            "--dump-dom", page.as_uri()).stdout
    check = re.search(r'<p id="render-check"([^>]*)>', dom)
    assert check is not None, dom[-2000:]
    shown = dict(re.findall(r'data-([a-z-]+)="(\d+)"', check.group(1)))
    assert shown == {"images": "5", "images-shown": "5", "map-points": "6",
                     "map-width": shown.get("map-width", "0")} and int(shown["map-width"]) >= 600
    assert "alert" not in dom.split('id="render-check"')[1]  # the hostile name ran nothing

    shot = tmp_path / "report.png"
    headless_chromium(browser, tmp_path / "profile-b", "--window-size=1100,2050",
                      "--virtual-time-budget=5000", f"--screenshot={shot}", page.as_uri())
    assert shot.stat().st_size > 20_000
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, SCREENSHOT)
