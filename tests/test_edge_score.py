"""`crack-edge score`: rows for every file, bad files, resume after SIGKILL, metrics from folder
labels, tiles, and the whole runner working where TensorFlow cannot be imported."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import PROJECT
from edge.results_file import COLUMNS

EDGE = [sys.executable, "-m", "edge"]


def edge(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*EDGE, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=PROJECT, env=env)


def write(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


def grey(level: int, size: int = 48) -> np.ndarray:
    return np.full((size, size, 3), level, np.uint8)


def read_rows(path: Path) -> list[dict]:
    """The rows of a results CSV as text, read with the csv module: line 1 is the run's identity
    (one cell), then the header and the rows (edge/FORMATS.md)."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        (identity,) = next(reader)
        assert json.loads(identity[1:])["format"] == "crack-edge-results"
        header = next(reader)
        return [dict(zip(header, row)) for row in reader]


@pytest.fixture
def survey(tmp_path) -> Path:
    """crack/ (dark) and no_crack/ (bright) images plus every kind of bad file."""
    root = tmp_path / "survey"
    for i in range(3):
        write(root / "crack" / f"dark_{i}.png", grey(30 + 10 * i))
        write(root / "no_crack" / f"bright_{i}.jpg", grey(200 + 10 * i))
    write(root / "no_crack" / "gray16.png", np.full((48, 48), 50000, np.uint16))
    write(root / "crack" / "rgba.png", np.dstack([grey(20), np.full((48, 48, 1), 255, np.uint8)]))
    (root / "crack" / "empty.jpg").write_bytes(b"")
    (root / "crack" / "text.jpg").write_text("this is not a JPEG")
    jpeg = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))[1]
    (root / "no_crack" / "truncated.jpg").write_bytes(jpeg.tobytes()[:300])
    (root / "no_crack" / "notes.txt").write_text("not an image suffix: ignored inside folders")
    return root


def test_every_file_gets_a_row_and_bad_files_do_not_stop_the_run(edge_models, survey, tmp_path):
    out = tmp_path / "results.csv"
    result = edge("score", "--model", edge_models["fp32"], survey, "--out", out, "--no-progress")
    assert result.returncode == 0, result.stderr
    rows = {Path(r["path"]).name: r for r in read_rows(out)}
    assert set(rows) == {"dark_0.png", "dark_1.png", "dark_2.png", "bright_0.jpg", "bright_1.jpg",
                         "bright_2.jpg", "gray16.png", "rgba.png", "empty.jpg", "text.jpg",
                         "truncated.jpg"}
    assert rows["empty.jpg"]["error"] == "empty file"
    assert "truncated JPEG" in rows["truncated.jpg"]["error"]
    assert rows["text.jpg"]["error"].startswith("not a decodable image (not JPEG, PNG")
    for name in ("empty.jpg", "text.jpg", "truncated.jpg"):
        assert rows[name]["probability"] == "" and rows[name]["label"] == ""
    for name in ("dark_0.png", "rgba.png"):
        assert float(rows[name]["probability"]) > 0.9 and rows[name]["label"] == "crack"
    for name in ("bright_2.jpg", "gray16.png"):  # 16-bit 50000 -> 8-bit 195: bright
        assert float(rows[name]["probability"]) < 0.1 and rows[name]["label"] == "no_crack"
        assert float(rows[name]["latency_ms"]) > 0
    assert "scored 8 image(s), 3 error(s)" in result.stdout
    assert "skipped 1 file(s): 1 not images by name (.txt 1)" in result.stdout

    strict = edge("score", "--model", edge_models["fp32"], survey, "--out", out, "--overwrite",
                  "--strict", "--no-progress")
    assert strict.returncode == 1
    again = edge("score", "--model", edge_models["fp32"], survey, "--out", out, "--no-progress")
    assert again.returncode == 2 and "--resume" in again.stderr and "--overwrite" in again.stderr


def test_labels_from_folders_prints_the_metrics(edge_models, survey, tmp_path):
    out = tmp_path / "results.jsonl"
    result = edge("score", "--model", edge_models["int8"], survey / "crack", survey / "no_crack",
                  "--out", out, "--format", "jsonl", "--labels-from-folders", "--no-progress")
    assert result.returncode == 0, result.stderr
    identity, *rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert identity["format"] == "crack-edge-results" and identity["threshold"] == 0.5
    assert len(rows) == 11
    assert set(COLUMNS) == set(rows[0])
    assert ("against folder labels (8 images, threshold 0.500): accuracy 1.0000  precision 1.0000"
            "  recall 1.0000  F1 1.0000") in result.stdout


def test_tiles_find_a_crack_in_one_corner_of_a_large_image(edge_models, tmp_path):
    image = grey(200, 128)
    image[:64, :64] = 20  # only the top-left quarter is dark
    path = write(tmp_path / "big.png", image)
    whole = edge("score", "--model", edge_models["fp32"], path, "--out", tmp_path / "whole.csv",
                 "--no-progress")
    tiled = edge("score", "--model", edge_models["fp32"], path, "--out", tmp_path / "tiled.csv",
                 "--tiles", "2x2", "--no-progress")
    assert whole.returncode == tiled.returncode == 0
    whole_p = float(read_rows(tmp_path / "whole.csv")[0]["probability"])
    tiled_p = float(read_rows(tmp_path / "tiled.csv")[0]["probability"])
    assert whole_p < 0.5 < 0.9 < tiled_p


def test_resume_after_sigkill_scores_every_file_exactly_once(edge_models, tmp_path):
    folder = tmp_path / "photos"
    rng = np.random.default_rng(1)
    for i in range(400):
        write(folder / f"photo_{i:04d}.jpg", rng.integers(0, 255, (360, 480, 3), np.uint8))
    out = tmp_path / "results.csv"
    args = ["score", "--model", edge_models["int8"], folder, "--out", out, "--no-progress",
            "--batch-size", "1", "--decode-workers", "1", "--threads", "1"]
    process = subprocess.Popen([*EDGE, *map(str, args)], cwd=PROJECT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if out.exists() and out.read_text().count("\n") > 42:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    first = out.read_text().count("\n") - 2  # identity and header lines
    assert 40 <= first < 400, "the run was not killed mid-way"
    with out.open("a") as handle:  # what a kill during a write can leave behind
        handle.write(str(folder / "photo_9999.jpg") + ",0.5")
    result = edge(*args, "--resume")
    assert result.returncode == 0, result.stderr
    rows = read_rows(out)
    paths = [row["path"] for row in rows]
    assert len(paths) == len(set(paths)) == 400
    assert sorted(paths) == sorted(str(p) for p in folder.glob("*.jpg"))
    assert all(row["probability"] and not row["error"] for row in rows)
    assert f"{400 - first} image(s)" in result.stdout.split("scored ")[1]


def test_the_runner_works_where_tensorflow_cannot_be_imported(edge_models, survey, tmp_path):
    blocker = tmp_path / "no_tensorflow" / "tensorflow"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('TensorFlow is blocked in this test')\n")
    env = {**os.environ, "PYTHONPATH": f"{blocker.parent}{os.pathsep}{PROJECT}"}
    check = subprocess.run([sys.executable, "-c", "import tensorflow"], env=env,
                           capture_output=True, text=True)
    assert "blocked in this test" in check.stderr
    modules = [f"edge.{p.stem}" for p in (PROJECT / "edge").glob("*.py") if p.stem != "__main__"]
    imported = subprocess.run(
        [sys.executable, "-c", f"import sys\nfor m in {modules!r}: __import__(m)\n"
                               "assert 'tensorflow' not in sys.modules\nprint(len(sys.modules))"],
        env=env, capture_output=True, text=True)
    assert imported.returncode == 0, imported.stderr
    for mode in ("fp32", "int8"):
        out = tmp_path / f"{mode}.csv"
        result = edge("score", "--model", edge_models[mode], survey, "--out", out, "--verbose",
                      "--no-progress", env=env)
        assert result.returncode == 0, result.stderr
        assert "interpreter: ai_edge_litert" in result.stderr
        assert len(read_rows(out)) == 11


def test_a_model_that_does_not_match_its_sidecar_is_refused(edge_models, survey, tmp_path):
    copy = tmp_path / "model_fp32.tflite"
    copy.write_bytes(edge_models["fp32"].read_bytes() + b"\0")
    (tmp_path / "model_fp32.json").write_text(edge_models["fp32"].with_suffix(".json").read_text())
    result = edge("score", "--model", copy, survey, "--out", tmp_path / "r.csv")
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "sha256 differs" in result.stderr


def test_missing_inputs_are_one_line_errors(edge_models, tmp_path):
    result = edge("score", "--model", edge_models["fp32"], tmp_path / "nowhere", "--out",
                  tmp_path / "r.csv")
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == f"error: no such file or folder: {tmp_path / 'nowhere'}"
    result = edge("score", "--model", tmp_path / "missing.tflite", tmp_path, "--out", tmp_path / "r.csv")
    assert result.returncode == 2 and "model not found" in result.stderr


def test_bench_prints_and_writes_its_figures(edge_models, tmp_path):
    out = tmp_path / "bench.json"
    result = edge("bench", "--model", edge_models["int8"], "--count", "6", "--runs", "5",
                  "--repeats", "1", "--json", out)
    assert result.returncode == 0, result.stderr
    assert "interpreter ai_edge_litert" in result.stdout and "bare invoke" in result.stdout
    figures = json.loads(out.read_text())
    assert figures["threads"] >= 1 and figures["input_dtype"] == "uint8"
    for part in ("files", "video"):
        assert figures[part]["fps"] > 0 and figures[part]["ratio_to_bare"] > 0
    assert figures["bare_invoke"]["p90_ms"] >= figures["bare_invoke"]["median_ms"] > 0
    assert figures["files"]["p90_ms"] > 0 and figures["video"]["p90_ms"] > 0
    assert figures["decode"]["samples"] == 6 and 0 < figures["files"]["ceiling_ratio"] <= 1
    assert f"{figures['threads']} thread(s)" in result.stdout
    assert "files (score)" in result.stdout and "video (stream)" in result.stdout
    assert "decode+resize, 1 file" in result.stdout
    # the stream's rate is timed once it runs; its startup is reported apart
    assert figures["video"]["startup_s"] > 0 and "video startup" in result.stdout
    # the stream runs as `stream` does by default: its interpreters side by side
    video = figures["video"]
    assert f"video (stream) ran {video['interpreters']} interpreter(s), threads " \
           f"{'+'.join(map(str, video['interpreter_threads']))}" in result.stdout
    assert len(video["interpreter_threads"]) == video["interpreters"] >= 1
