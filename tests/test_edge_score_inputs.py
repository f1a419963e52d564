"""`crack-edge score` inputs and outputs: files, folders, globs and @lists; the decode-ahead
window; resuming CSV and JSONL files with a torn last line; --threshold; folder labels with every
accepted naming and metrics that are not all 1.0."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import PROJECT

from edge.errors import ImageDecodeError, UserError
from edge.file_inputs import expand_inputs
from edge.results_file import COLUMNS, Row, RunIdentity, open_results, read_results
from edge.score import ScoreOptions, decode_ahead, probabilities_for, run_score


def write(path: Path, level: int, size: int = 40) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((size, size, 3), level, np.uint8))
    return path


def edge(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge", *map(str, args)], capture_output=True,
                          text=True, timeout=120, cwd=PROJECT)


# --- which files -------------------------------------------------------------------------------

@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "tree"
    write(root / "a.jpg", 10)
    write(root / "sub" / "b.png", 20)
    write(root / "sub" / "deeper" / "c.JPEG", 30)  # suffixes compare case-insensitively
    (root / "sub" / "readme.md").write_text("not an image")
    (root / "sub" / "deeper" / "data.csv").write_text("1,2,3")
    return root


def test_folders_are_recursive_and_skip_non_image_suffixes(tree):
    assert [p.relative_to(tree).as_posix() for p in expand_inputs([str(tree)])] == [
        "a.jpg", "sub/b.png", "sub/deeper/c.JPEG"]


def test_globs_lists_and_duplicates(tree, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    listing = tmp_path / "list.txt"
    listing.write_text(f"# survey of day 1\n\n{tree / 'a.jpg'}\n  tree/sub/b.png  \n{tree}/sub/deeper\n")
    found = expand_inputs([f"@{listing}", str(tree / "**" / "*.png"), str(tree / "a.jpg")])
    assert [p.name for p in found] == ["a.jpg", "b.png", "c.JPEG"]  # each once, first order kept
    assert [p.name for p in expand_inputs([str(tree / "sub" / "*")])] == ["b.png", "c.JPEG"]


def test_a_non_image_named_directly_is_kept_so_it_gets_an_error_row(tree):
    readme = tree / "sub" / "readme.md"
    assert expand_inputs([str(readme)]) == [readme]


@pytest.mark.parametrize("argument, message", [
    ("nowhere/*.jpg", "no image files match nowhere/*.jpg"),
    ("@missing.txt", "list file not found: missing.txt"),
    ("missing.jpg", "no such file or folder: missing.jpg"),
])
def test_inputs_that_match_nothing_are_user_errors(tmp_path, monkeypatch, argument, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=f"^{message}$".replace("*", r"\*").replace(".", r"\.")):
        expand_inputs([argument])


# --- decoding ahead ----------------------------------------------------------------------------

def test_decode_ahead_keeps_order_bounds_its_window_and_turns_any_failure_into_an_error():
    in_flight, most, lock = [0], [0], threading.Lock()
    started: list[int] = []

    def decode(path: Path) -> np.ndarray:
        number = int(path.name)
        with lock:
            started.append(number)
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        time.sleep(0.002 * (number % 3))  # later files can finish before earlier ones
        with lock:
            in_flight[0] -= 1
        if number == 4:
            raise ImageDecodeError("not a decodable image")
        if number == 7:
            raise cv2.error("OpenCV(4.x) imdecode: broken\nsecond line")
        return np.full((2, 2, 3), number, np.uint8)

    paths = [Path(str(i)) for i in range(12)]
    consumed = 0
    results = []
    for path, image, error in decode_ahead(paths, decode, workers=2, window=5):
        with lock:  # never more than the window submitted beyond what the consumer has taken
            assert len(started) <= consumed + 5 + 1
        consumed += 1
        results.append((int(path.name), None if image is None else int(image[0, 0, 0]), error))
    assert [r[0] for r in results] == list(range(12))
    assert most[0] <= 2
    assert results[4] == (4, None, "not a decodable image")
    assert results[7][1] is None and results[7][2].startswith("cannot decode: error: OpenCV(4.x) imdecode")
    assert "\n" not in results[7][2]
    assert all(results[i][1] == i for i in range(12) if i not in (4, 7))


# --- results files and resume --------------------------------------------------------------------

IDENTITY = RunIdentity(model="m.tflite", model_sha256="0" * 64, threshold=0.5, tiles="whole",
                       labels=("no_crack", "crack"), input_size=32)


def test_resume_cuts_a_torn_jsonl_line(tmp_path):
    out = tmp_path / "r.jsonl"
    with open_results(out, "jsonl", IDENTITY).writer as results:
        results.write([Row("a.jpg", 0.25, "no_crack", 1.5), Row("b.jpg", None, "", None, "empty file")])
    whole = out.read_bytes()
    out.write_bytes(whole + b'{"path": "c.jpg", "proba')
    opened = open_results(out, "jsonl", IDENTITY, resume=True)
    opened.writer.close()
    assert opened.done == {b"a.jpg"} and opened.retried == 1 and opened.cut
    identity, first = [json.loads(line) for line in out.read_text().splitlines()]  # b.jpg: retried
    assert identity == {"format": "crack-edge-results", "version": 2, **{
        k: v for k, v in IDENTITY.to_dict().items() if k not in ("format", "version")}}
    assert first == {"path": "a.jpg", "probability": 0.25, "label": "no_crack", "latency_ms": 1.5,
                     "error": "", "path_bytes": "", "capture_time": "", "gps_lat": None,
                     "gps_lon": None, "gps_alt": None, "orientation": None, "tiles": None}


def test_resume_of_a_csv_torn_inside_its_header_keeps_the_identity(tmp_path):
    out = tmp_path / "r.csv"
    open_results(out, "csv", IDENTITY).writer.close()
    whole = out.read_bytes()
    out.write_bytes(whole[:-10])  # torn inside the header line
    opened = open_results(out, "csv", IDENTITY, resume=True)
    with opened.writer as results:
        results.write([Row("x, with comma.jpg", 0.75, "crack", 2.0)])
    assert opened.done == set()
    empty_cells = b"," * (len(COLUMNS) - 4)  # error, path_bytes, the EXIF and tiles columns
    assert out.read_bytes() == whole + b'"x, with comma.jpg",0.750000,crack,2.000' + empty_cells + b"\r\n"
    assert [row.path for row in read_results(out, "csv").rows] == ["x, with comma.jpg"]


def test_resume_refuses_files_that_are_not_results_and_leaves_them_alone(tmp_path):
    other = tmp_path / "notes.csv"
    other.write_text("name,size\nx,1\nlast line, torn")
    with pytest.raises(UserError, match="not a crack-edge results file"):
        open_results(other, "csv", IDENTITY, resume=True)
    assert other.read_text() == "name,size\nx,1\nlast line, torn"
    broken = tmp_path / "broken.jsonl"
    with open_results(broken, "jsonl", IDENTITY).writer as results:
        results.write([Row("a.jpg", 0.25, "no_crack", 1.5)])
    before = broken.read_bytes() + b'not json\n{"path": "b.jpg"}\n'
    broken.write_bytes(before)
    with pytest.raises(UserError, match="line 3 is not JSON"):
        open_results(broken, "jsonl", IDENTITY, resume=True)
    assert broken.read_bytes() == before


def test_jsonl_run_resumed_after_a_torn_line_has_every_file_once(edge_models, tmp_path):
    folder = tmp_path / "photos"
    paths = [write(folder / f"p_{i:02d}.png", 10 * i) for i in range(20)]
    out = tmp_path / "r.jsonl"
    first = run_score(ScoreOptions(model=edge_models["int8"], inputs=tuple(str(p) for p in paths[:7]),
                                   out=out, format="jsonl", show_progress=False))
    assert first.scored == 7
    with out.open("a") as handle:
        handle.write('{"path": "' + str(paths[7]) + '", "probab')
    second = run_score(ScoreOptions(model=edge_models["int8"], inputs=(str(folder),), out=out,
                                    format="jsonl", resume=True, show_progress=False))
    assert (second.already_done, second.scored, second.errors) == (7, 13, 0)
    rows = [json.loads(line) for line in out.read_text().splitlines()[1:]]
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in paths)
    with pytest.raises(UserError, match="exists; use --resume to continue it or --overwrite"):
        run_score(ScoreOptions(model=edge_models["int8"], inputs=(str(folder),), out=out,
                               format="jsonl", show_progress=False))


# --- through the command line ------------------------------------------------------------------

def test_lists_globs_and_a_non_image_file_on_the_command_line(edge_models, tree, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"{tree / 'a.jpg'}\n{tree / 'sub' / 'readme.md'}\n")
    out = tmp_path / "r.csv"
    result = edge("score", "--model", edge_models["fp32"], f"@{listing}", tree / "**" / "*.png",
                  tree / "sub" / "deeper", "--out", out, "--no-progress")
    assert result.returncode == 0, result.stderr
    with out.open(newline="") as handle:
        handle.readline()  # the identity line
        rows = {Path(r["path"]).name: r for r in csv.DictReader(handle)}
    # error rows are written as soon as they are seen, scored ones per batch: compare as a set
    assert sorted(rows) == sorted(["a.jpg", "readme.md", "b.png", "c.JPEG"])
    assert rows["readme.md"]["error"].startswith("not a decodable image")
    assert rows["readme.md"]["probability"] == ""
    assert float(rows["a.jpg"]["probability"]) > 0.9 and rows["a.jpg"]["label"] == "crack"
    assert "scored 3 image(s), 1 error(s)" in result.stdout


def test_threshold_overrides_the_sidecar(edge_models, tmp_path):
    path = write(tmp_path / "mid.png", 100)  # the darkness model scores level 100 at about 0.79
    (probability,) = probabilities_for(edge_models["fp32"], [path])
    assert 0.6 < probability < 0.9
    labels = {}
    for threshold in ("0.5", "0.95"):
        out = tmp_path / f"r_{threshold}.csv"
        result = edge("score", "--model", edge_models["fp32"], path, "--out", out, "--threshold",
                      threshold, "--no-progress")
        assert result.returncode == 0, result.stderr
        content = read_results(out, "csv")
        assert content.identity.threshold == float(threshold)
        (row,) = content.rows
        assert row.probability == pytest.approx(probability, abs=1e-6)
        labels[threshold] = row.label
    assert labels == {"0.5": "crack", "0.95": "no_crack"}
    bad = edge("score", "--model", edge_models["fp32"], path, "--out", tmp_path / "x.csv", "--threshold", "1.5")
    assert bad.returncode == 2 and bad.stderr.strip().endswith("--threshold must be between 0 and 1, got 1.5")


def test_labels_from_every_folder_naming_and_real_metrics(edge_models, tmp_path):
    """TP 4, FP 1, FN 2, TN 3: accuracy 0.7, precision 0.8, recall 0.6667, F1 0.7273."""
    root = tmp_path / "labelled"
    dark, bright = 20, 230
    layout = {"Positive": [dark, dark], "CRACK": [dark], "1": [dark, bright],  # 4 TP, 1 FN
              "cracked": [bright],                                         # 1 FN
              "Negative": [bright, dark], "no_crack": [bright], "0": [bright],  # 3 TN, 1 FP
              "misc": [dark]}                                              # no label
    for folder, levels in layout.items():
        for i, level in enumerate(levels):
            write(root / folder / f"{level}_{i}.png", level)
    result = edge("score", "--model", edge_models["int8"], root, "--out", tmp_path / "r.csv",
                  "--labels-from-folders", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert ("against folder labels (10 images, threshold 0.500): accuracy 0.7000  precision 0.8000"
            "  recall 0.6667  F1 0.7273") in result.stdout
    assert "1 scored image(s) had no crack/no_crack folder and are not in these figures" in result.stdout
