"""Hard-negative and uncertain-image capture: `score --collect DIR` links files near the threshold,
`stream --collect DIR` saves near-threshold and event frames, both within a size limit and with a
labels template that `crack data from-labels` turns into crack/ and no_crack/ folders.

On the session's darkness model (tests/conftest.py, threshold 0.5): grey level L scores
sigmoid(-6 (L - 128) / 127.5), so levels 122, 128 and 134 lie within 0.1 of the threshold and
40 and 220 far from it.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from edge_models import write_video
from fixtures_training import run_crack

from edge.collect import LABELS_FILE, TEMPLATE_COLUMNS, CollectOptions, Collector, sort_labelled
from edge.contract import ModelContract
from edge.errors import UserError
from edge.results_file import read_results
from edge.score import ScoreOptions, run_score
from edge.stream import StreamOptions, run_stream

NEAR = (122, 128, 134)
FAR = (40, 220)
PROJECT = Path(__file__).resolve().parents[1]


def grey_photos(folder: Path, levels) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for level in levels:
        cv2.imwrite(str(folder / f"grey_{level}.png"), np.full((40, 40, 3), level, np.uint8))
    return folder


def template_rows(folder: Path) -> list[dict]:
    with (folder / LABELS_FILE).open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == TEMPLATE_COLUMNS
        return list(reader)


def images_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != LABELS_FILE)


def score(model: Path, photos: Path, out: Path, collect: Path, **options):
    return run_score(ScoreOptions(model=model, inputs=(str(photos),), out=out, overwrite=True, collect=collect,
                                  show_progress=False, **options), say=lambda line: None)


def test_score_collects_the_files_near_the_threshold_with_a_template(edge_models, tmp_path):
    photos = grey_photos(tmp_path / "survey", NEAR + FAR)
    (photos / "broken.png").write_bytes(b"\x89PNG not really")
    collect = tmp_path / "to_label"
    summary = score(edge_models["fp32"], photos, tmp_path / "results.csv", collect)

    assert images_in(collect) == ["00001_grey_122.png", "00002_grey_128.png", "00003_grey_134.png"]
    for name in images_in(collect):  # linked, not copied, on one file system
        assert os.path.samefile(collect / name, photos / name.split("_", 1)[1])
    scored = {Path(row.path).name: row for row in read_results(tmp_path / "results.csv").rows}
    rows = template_rows(collect)
    assert [row["path"] for row in rows] == images_in(collect)
    for row in rows:
        result = scored[row["path"].split("_", 1)[1]]
        assert float(row["probability"]) == pytest.approx(result.probability, abs=1e-6)
        assert abs(result.probability - 0.5) < 0.1
        assert row["label_guess"] == result.label and row["label"] == ""
    assert summary.collected == f"collected 3 image(s) for labelling in {collect} (template labels.csv)"
    assert summary.collected in summary.lines()

    # a second run continues the numbering and the template, with the header once
    score(edge_models["fp32"], photos, tmp_path / "again.csv", collect, collect_margin=0.2)
    rows = template_rows(collect)
    assert len(rows) == 6  # the margin 0.2 takes no far level either
    assert [row["path"][:5] for row in rows] == ["00001", "00002", "00003", "00004", "00005", "00006"]


def test_score_stops_collecting_at_the_size_limit(edge_models, tmp_path):
    photos = grey_photos(tmp_path / "survey", NEAR)
    one = max(path.stat().st_size for path in photos.iterdir())
    collect = tmp_path / "to_label"
    limit_mb = one * 1.5 / 1e6  # room for one photo, not two
    summary = score(edge_models["fp32"], photos, tmp_path / "results.csv", collect, collect_max_mb=limit_mb)
    assert len(images_in(collect)) == 1 and len(template_rows(collect)) == 1
    assert summary.collected.endswith(f"; stopped at the {limit_mb:g} MB limit")
    assert len(read_results(tmp_path / "results.csv").rows) == 3  # scoring itself went on


def test_collector_saves_near_frames_and_each_events_frames_at_a_bounded_rate(tmp_path):
    collector = Collector(CollectOptions(tmp_path / "frames"), ModelContract(input_size=32, threshold=0.5))
    frame = np.full((24, 32, 3), 90, np.uint8)
    offers = [  # (probability, event id, seconds)
        (0.45, None, 0.0),   # near: saved
        (0.55, None, 0.1),   # near, too soon after the last: not saved
        (0.05, None, 0.7),   # far: not saved
        (0.58, None, 0.8),   # near: saved
        (0.95, 1, 0.9),      # the first frame of event 1: saved, however soon
        (0.97, 1, 1.0),      # event 1 again, too soon: not saved
        (0.96, 1, 1.5),      # saved
        (0.93, 2, 1.6),      # the first frame of event 2: saved
    ]
    saved = [collector.offer_frame(frame, p, event, now) for p, event, now in offers]
    collector.close()
    assert saved == [True, False, False, True, True, False, True, True]
    names = images_in(tmp_path / "frames")
    assert [name.split("_")[0] for name in names] == ["00001", "00002", "00003", "00004", "00005"]
    assert [name.rsplit("_", 1)[1] for name in names] == ["near.jpg", "near.jpg", "event1.jpg", "event1.jpg",
                                                          "event2.jpg"]
    rows = template_rows(tmp_path / "frames")
    assert [(r["probability"], r["label_guess"]) for r in rows] == [
        ("0.450000", "no_crack"), ("0.580000", "crack"), ("0.950000", "crack"), ("0.960000", "crack"),
        ("0.930000", "crack")]
    assert cv2.imread(str(tmp_path / "frames" / names[0])).shape == (24, 32, 3)


def test_stream_collects_near_and_event_frames(edge_models, tmp_path):
    frames = ([np.full((48, 64, 3), level, np.uint8) for level in [220] * 6 + [134] * 6 + [30] * 6 + [220] * 6])
    video = write_video(tmp_path / "walk.avi", frames)
    collect = tmp_path / "frames"
    summary = run_stream(StreamOptions(model=edge_models["fp32"], source=str(video), min_frames=2, threads=1,
                                       collect=collect))
    assert summary.exit_code == 0 and summary.frames == 24 and summary.events == 1
    names = images_in(collect)
    assert summary.collected == len(names) >= 2
    assert any(name.endswith("_near.jpg") for name in names) and any(name.endswith("_event1.jpg") for name in names)
    for row in template_rows(collect):
        probability = float(row["probability"])
        if row["path"].endswith("_near.jpg"):
            assert abs(probability - 0.5) < 0.1 and row["label_guess"] == "no_crack"
        else:
            assert probability > 0.9 and row["label_guess"] == "crack"  # only the dark frames of the event
    assert "frame(s) collected for labelling" in summary.line()


def test_from_labels_sorts_the_filled_in_template(tmp_path):
    collect = tmp_path / "device1"
    collector = Collector(CollectOptions(collect), ModelContract(input_size=32, threshold=0.5))
    for level, p in ((90, 0.55), (95, 0.45), (100, 0.5)):
        collector.offer_frame(np.full((8, 8, 3), level, np.uint8), p, event_id=None, now=level)
    collector.close()
    text = (collect / LABELS_FILE).read_text(encoding="utf-8").splitlines()
    filled = [text[0], text[1] + "crack", text[2] + "no", text[3]]  # the third left for later
    (collect / LABELS_FILE).write_text("\r\n".join(filled) + "\r\n", encoding="utf-8")

    result = sort_labelled([collect / LABELS_FILE], tmp_path / "site")
    assert (result.per_class, result.unlabelled) == ({"crack": 1, "no_crack": 1}, 1)
    command = run_crack("data", "from-labels", "--labels", collect / LABELS_FILE, "--out", tmp_path / "again")
    assert command.exit_code == 0 and command.output.startswith(
        "copied 1 crack and 1 no_crack image(s) to ") and "1 row(s) without a label skipped" in command.output
    assert [p.name for p in (tmp_path / "site" / "crack").iterdir()] == [f"device1_{template_rows(collect)[0]['path']}"]
    assert len(list((tmp_path / "site" / "no_crack").iterdir())) == 1

    (collect / LABELS_FILE).write_text("\r\n".join([text[0], text[1] + "maybe"]) + "\r\n", encoding="utf-8")
    with pytest.raises(UserError, match="labels.csv line 2: label 'maybe' is neither crack nor no_crack"):
        sort_labelled([collect / LABELS_FILE], tmp_path / "other")


@pytest.mark.parametrize("arguments, message", [
    (["--collect-margin", "2"], "--collect-margin must be in (0, 1], got 2.0"),
    (["--collect-max-mb", "0"], "--collect-max-mb must be positive, got 0.0"),
    (["--collect", "{file}"], "is a file, not a folder"),
])
def test_bad_collect_options_are_one_line_exit_2_before_any_output(edge_models, tmp_path, arguments, message):
    photos = grey_photos(tmp_path / "survey", NEAR)
    (tmp_path / "notes.txt").write_text("mine")
    args = [a.format(file=tmp_path / "notes.txt") for a in arguments]
    if "--collect" not in args:
        args += ["--collect", str(tmp_path / "to_label")]
    result = subprocess.run([sys.executable, "-m", "edge", "score", "--model", str(edge_models["fp32"]),
                             str(photos), "--out", str(tmp_path / "results.csv"), "--no-progress", *args],
                            capture_output=True, text=True, timeout=300, cwd=PROJECT)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "results.csv").exists() and not (tmp_path / "to_label" / LABELS_FILE).exists()
    assert (tmp_path / "notes.txt").read_text() == "mine"
