"""The golden check where the model is used: `score` and `stream` run it at start-up and log one
line, `--require-verified` refuses to start on a failed check (exit 1) or a missing golden file
(exit 2) before any output; `crack-edge verify --images DIR --labels-from-folders` reports on the
user's own labelled photos. On the tiny models of `crack convert` (tests/conftest.py)."""

from __future__ import annotations

import json
import logging
import re
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from edge_models import write_video
from test_model_metadata import alone
from test_verify import crack_edge, deployed, perturbed

from edge.classifier import CrackClassifier
from edge.errors import RuntimeFailure, UserError
from edge.golden import golden_path
from edge.results_file import read_results
from edge.stream import StreamOptions, run_stream
from edge.verify import FAILED, NOT_VERIFIED, PASSED, startup_check

DRIFTING = -2.4  # Dense weights of the perturbed darkness model: no label flips, mean |dp| too large


def photos(folder: Path, levels: dict[str, list[int]]) -> Path:
    """Grey PNGs (the darkness model: dark is a crack) below the given class folders."""
    for name, greys in levels.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for level in greys:
            cv2.imwrite(str(folder / name / f"grey_{level}.png"), np.full((40, 40, 3), level, np.uint8))
    return folder


def last_error(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    return stderr.strip().splitlines()[-1]


# --- the check itself -------------------------------------------------------------------------


def test_startup_check_states_and_refusals(edge_models, tmp_path):
    healthy = startup_check(CrackClassifier(deployed(edge_models["int8"], tmp_path / "ok"), threads=1))
    assert healthy.state == PASSED and healthy.result.vs_build.labels_kept == 10
    assert healthy.line.startswith("verify model_int8.tflite: pass: 10/10 golden inputs keep the build "
                                   "machine's label, mean |dp| 0.0000")
    assert healthy.status.startswith("pass: 10/10")

    drifting = CrackClassifier(perturbed(edge_models["fp32"], tmp_path / "bad", DRIFTING), threads=1)
    failed = startup_check(drifting)
    assert failed.state == FAILED and failed.result.vs_build.mean_abs_dp > failed.result.mean_abs_dp_bound
    assert failed.line.startswith("verify model_fp32.tflite: FAIL: mean |dp| ")
    with pytest.raises(RuntimeFailure, match="--require-verified: not starting$"):
        startup_check(drifting, require=True)

    bare = CrackClassifier(alone(edge_models["int8"], tmp_path / "bare"), threads=1)  # card, no golden file
    missing = startup_check(bare)
    assert missing.state == NOT_VERIFIED
    assert missing.line.startswith("verify model_int8.tflite: no golden file: not verified (golden inputs "
                                   "model_int8.golden.npz not found beside model_int8.tflite")
    with pytest.raises(UserError, match="no golden file"):
        startup_check(bare, require=True)

    changed = deployed(edge_models["int8"], tmp_path / "changed")
    golden_path(changed).write_bytes(golden_path(changed).read_bytes() + b"x")
    unusable = startup_check(CrackClassifier(changed, threads=1))
    assert unusable.state == NOT_VERIFIED and "golden file unusable: not verified" in unusable.line


# --- score ------------------------------------------------------------------------------------


def test_score_require_verified_refuses_a_perturbed_model_before_any_row(edge_models, tmp_path):
    model = perturbed(edge_models["fp32"], tmp_path / "device", DRIFTING)
    folder = photos(tmp_path / "photos", {"crack": [20, 60], "no_crack": [200, 240]})
    out = tmp_path / "results.csv"
    result = crack_edge("score", "--model", model, folder, "--out", out, "--no-progress", "--require-verified")
    assert result.returncode == 1, result.stderr
    line = last_error(result.stderr)
    assert line.startswith("error: verify model_fp32.tflite: FAIL: mean |dp| ") and "exceeds" in line
    assert line.endswith("--require-verified: not starting")
    assert not out.exists()

    # the same from the config file
    config = tmp_path / "crackkit.toml"
    config.write_text("require_verified = true\n")
    result = crack_edge("score", "--model", model, folder, "--out", out, "--no-progress", "--config", config)
    assert result.returncode == 1 and not out.exists(), result.stderr


def test_plain_score_logs_the_failure_and_scores(edge_models, tmp_path):
    model = perturbed(edge_models["fp32"], tmp_path / "device", DRIFTING)
    folder = photos(tmp_path / "photos", {"crack": [20, 60], "no_crack": [200, 240]})
    out = tmp_path / "results.csv"
    result = crack_edge("score", "--model", model, folder, "--out", out, "--no-progress")
    assert result.returncode == 0, result.stderr
    verify_lines = [line for line in result.stderr.splitlines() if line.startswith("verify ")]
    assert len(verify_lines) == 1 and verify_lines[0].startswith("verify model_fp32.tflite: FAIL: mean |dp| ")
    assert len(read_results(out).rows) == 4


def test_score_without_a_golden_file(edge_models, tmp_path):
    model = alone(edge_models["int8"], tmp_path / "device")
    folder = photos(tmp_path / "photos", {"crack": [20]})
    out = tmp_path / "results.csv"
    result = crack_edge("score", "--model", model, folder, "--out", out, "--no-progress", "--require-verified")
    assert result.returncode == 2
    assert last_error(result.stderr).startswith("error: verify model_int8.tflite: no golden file: not verified")
    assert not out.exists()
    result = crack_edge("score", "--model", model, folder, "--out", out, "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "verify model_int8.tflite: no golden file: not verified" in result.stderr
    assert len(read_results(out).rows) == 1


def test_score_require_verified_scores_with_a_healthy_model(edge_models, tmp_path):
    model = deployed(edge_models["int8"], tmp_path / "device")
    out = tmp_path / "results.csv"
    result = crack_edge("score", "--model", model, photos(tmp_path / "photos", {"crack": [20]}), "--out", out,
                        "--no-progress", "--require-verified")
    assert result.returncode == 0, result.stderr
    assert "verify model_int8.tflite: pass: 10/10 golden inputs" in result.stderr
    assert len(read_results(out).rows) == 1


# --- stream -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dark_video(tmp_path_factory) -> Path:
    """Eight dark frames: the darkness model calls them cracks, so a run opens an event."""
    frames = [np.full((48, 48, 3), 30, np.uint8)] * 8
    return write_video(tmp_path_factory.mktemp("video") / "dark.avi", frames)


def test_stream_require_verified_refuses_a_perturbed_model(edge_models, dark_video, tmp_path):
    model = perturbed(edge_models["fp32"], tmp_path / "device", DRIFTING)
    events = tmp_path / "events.jsonl"
    result = crack_edge("stream", "--model", model, "--source", dark_video, "--events", events,
                        "--require-verified")
    assert result.returncode == 1, result.stderr
    line = last_error(result.stderr)
    assert line.startswith("error: verify model_fp32.tflite: FAIL: mean |dp| ")
    assert line.endswith("--require-verified: not starting")
    assert not events.exists() and result.stdout == ""

    result = crack_edge("stream", "--model", alone(edge_models["int8"], tmp_path / "bare"), "--source", dark_video,
                        "--events", events, "--require-verified")
    assert result.returncode == 2
    assert "no golden file: not verified" in last_error(result.stderr) and not events.exists()


def test_plain_stream_logs_the_failure_goes_on_and_shows_it_in_the_status(edge_models, dark_video, tmp_path,
                                                                          caplog):
    caplog.set_level(logging.INFO, logger="crack.edge")
    model = perturbed(edge_models["fp32"], tmp_path / "device", DRIFTING)
    events = tmp_path / "events.jsonl"
    seen: dict = {}

    def read_status(index: int, probability: float) -> None:
        if index == 0:  # the preview server runs in its own thread while the stream goes on
            served = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("live preview on "))
            base = re.search(r"http://\S+", served).group(0).rstrip("/")
            with urllib.request.urlopen(f"{base}/status.json", timeout=30) as response:
                seen.update(json.load(response))

    summary = run_stream(StreamOptions(model=model, source=str(dark_video), events=events, threads=1,
                                       serve="127.0.0.1:0"), on_frame=read_status)
    assert summary.exit_code == 0 and summary.frames == 8 and summary.events == 1
    verify = [r for r in caplog.records if r.getMessage().startswith("verify ")]
    assert len(verify) == 1 and verify[0].levelno == logging.WARNING
    assert verify[0].getMessage().startswith("verify model_fp32.tflite: FAIL: mean |dp| ")
    assert seen["verify"].startswith("FAIL: mean |dp| ") and seen["model"] == "model_fp32.tflite"
    assert [json.loads(line)["event"] for line in events.read_text().splitlines()] == ["crack_start", "crack_end"]


# --- verify on the user's own photos ------------------------------------------------------------


def test_verify_on_labelled_photos_reports_accuracy_and_the_golden_check(edge_models, tmp_path):
    # crack: 20 and 60 are found, 200 is missed; no_crack: 220 and 240 are clear, 30 is a false alarm
    folder = photos(tmp_path / "photos", {"crack": [20, 60, 200], "no_crack": [30, 220, 240], "other": [100]})
    (folder / "crack" / "broken.jpg").write_bytes(b"not a jpeg")
    model = deployed(edge_models["int8"], tmp_path / "device")
    result = crack_edge("verify", "--model", model, "--images", folder, "--labels-from-folders")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("verify model_int8.tflite on 6 labelled photo(s) of 8 found")
    assert lines[1] == ("  threshold 0.5: accuracy 0.6667  precision 0.6667  recall 0.6667  F1 0.6667")
    assert lines[2] == "  crack photos: 2 found, 1 missed; no-crack photos: 2 clear, 1 false alarm(s)"
    assert "  1 file(s) could not be read and are not in these figures" in lines
    assert "  1 photo(s) had no crack/no_crack folder and are not in these figures" in lines
    assert lines[-1] == "  PASS"

    data = json.loads(crack_edge("verify", "--model", model, "--images", folder, "--labels-from-folders",
                                 "--json").stdout)
    assert data["metrics"]["confusion_matrix"] == [[2, 1], [1, 2]] and data["metrics"]["count"] == 6
    assert data["golden"]["passed"] is True and data["unreadable"] == 1 and data["unlabelled"] == 1


def test_verify_on_photos_reports_and_does_not_gate(edge_models, tmp_path):
    folder = photos(tmp_path / "photos", {"crack": [20], "no_crack": [240]})
    drifting = perturbed(edge_models["fp32"], tmp_path / "bad", DRIFTING)
    result = crack_edge("verify", "--model", drifting, "--images", folder, "--labels-from-folders")
    assert result.returncode == 0, result.stderr
    assert "accuracy 1.0000" in result.stdout
    assert result.stdout.strip().splitlines()[-1].startswith("  FAIL: mean |dp|")

    result = crack_edge("verify", "--model", alone(edge_models["int8"], tmp_path / "bare"), "--images", folder,
                        "--labels-from-folders")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == (
        "golden inputs: not checked (golden inputs model_int8.golden.npz not found beside "
        "model_int8.tflite: copy it with the model)")


def test_verify_on_photos_refuses_unusable_photos_with_exit_2(edge_models, tmp_path):
    model = deployed(edge_models["int8"], tmp_path / "device")
    unlabelled = photos(tmp_path / "unlabelled", {"misc": [20, 240]})
    result = crack_edge("verify", "--model", model, "--images", unlabelled, "--labels-from-folders")
    assert result.returncode == 2
    assert last_error(result.stderr).startswith("error: --labels-from-folders found no crack/no_crack folder "
                                                "among the 2 readable photo(s)")
    result = crack_edge("verify", "--model", model, "--images", unlabelled)
    assert result.returncode == 2
    assert last_error(result.stderr) == ("error: --images and --labels-from-folders go together: the photos' "
                                         "class folders are their ground truth")
    empty = tmp_path / "empty"
    empty.mkdir()
    result = crack_edge("verify", "--model", model, "--images", empty, "--labels-from-folders")
    assert result.returncode == 2 and last_error(result.stderr).startswith("error: no image files found in ")
