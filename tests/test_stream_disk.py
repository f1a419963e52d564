"""Bounded disk: the events file is rotated, old events files and snapshots are pruned oldest
first to --max-disk-mb and --keep-days, and the file being written is never deleted."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from edge.disk_budget import MB, DiskBudget, prune
from edge.events import EventWriter, rotated_files
from edge.stream import StreamOptions, run_stream
from edge_models import crack_frame, grey_frame, line_model_path, write_video

DAY = 86400.0


def make_file(path: Path, size: int, age_days: float, now: float) -> Path:
    path.write_bytes(b"x" * size)
    os.utime(path, (now - age_days * DAY, now - age_days * DAY))
    return path


def test_prune_drops_the_too_old_then_the_oldest_until_it_fits(tmp_path):
    now = time.time()
    files = [make_file(tmp_path / f"f{age}.jpg", 1000, age, now) for age in (40, 20, 10, 5, 1)]
    live = make_file(tmp_path / "events.jsonl", 1500, 50, now)  # older than all, but being written
    result = prune(files, [live], DiskBudget(max_bytes=3500, keep_seconds=30 * DAY), now=now)
    # f40 is too old; then 1500 + 4 x 1000 > 3500: f20 and f10 go, oldest first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.jsonl", "f1.jpg", "f5.jpg"]
    assert (result.removed, result.freed_bytes, result.total_bytes) == (3, 3000, 3500)


def test_no_limits_keep_everything(tmp_path):
    now = time.time()
    files = [make_file(tmp_path / f"f{age}.jpg", 1000, age, now) for age in (400, 1)]
    budget = DiskBudget.from_options(max_disk_mb=0, keep_days=0)
    assert prune(files, [], budget, now=now).removed == 0
    assert DiskBudget.from_options(500, 30).max_bytes == 500 * MB


def test_the_events_file_is_rotated_at_its_size(tmp_path):
    path = tmp_path / "events.jsonl"
    writer = EventWriter(path, rotate_bytes=100)
    for index in range(6):
        writer.write({"event": "crack_start", "event_id": index, "padding": "p" * 40})
    writer.close()
    parts = rotated_files(path)
    assert writer.rotations == len(parts) >= 2
    lines = [json.loads(line) for part in [*parts, path] for line in part.read_text().splitlines()]
    assert [record["event_id"] for record in lines] == list(range(6))  # nothing lost, in order


def test_a_stream_with_a_small_disk_limit_keeps_the_newest_files(tmp_path):
    # min_frames=1 and alternating runs: an event (start line, end line, snapshot) every 4 frames
    frames = ([crack_frame()] * 2 + [grey_frame()] * 2) * 30
    video = write_video(tmp_path / "many.avi", frames)
    events, snapshots = tmp_path / "out" / "events.jsonl", tmp_path / "out" / "snaps"
    limit_mb = 0.03  # about 30 KB: far less than 30 snapshots and 60 event lines
    summary = run_stream(StreamOptions(model=line_model_path(), source=str(video), events=events,
                                       snapshots=snapshots, min_frames=1, max_disk_mb=limit_mb))
    assert summary.events == 30 and summary.exit_code == 0
    assert summary.pruned_files > 0
    kept = [*rotated_files(events), events, *snapshots.iterdir()]
    assert sum(path.stat().st_size for path in kept) <= limit_mb * MB
    names = sorted(path.name for path in snapshots.iterdir())
    assert names and names[-1] == "event_0030_frame_000116.jpg"  # the newest stays...
    assert "event_0001_frame_000000.jpg" not in names  # ...the oldest went first
    last = [json.loads(line) for line in events.read_text().splitlines()][-1]
    assert (last["event"], last["event_id"]) == ("crack_end", 30)
