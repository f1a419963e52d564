"""`crack-edge stream`: the debouncer, events and snapshots from a video file, tiles, bounds, a real
HTTP MJPEG stream that goes away and comes back, and clean shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import PROJECT
from edge.events import Debouncer, EventWriter, Observation
from edge.cli import app
from edge.stream import StreamOptions, run_stream
from edge_models import crack_frame, grey_frame, line_model_path, write_video

WAIT = 60.0  # upper bound for waiting on a thread or a subprocess; never a measured duration


def read_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


# --- debouncer ---------------------------------------------------------------------------------

T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)


def feed(debouncer: Debouncer, pattern: str, probability: float = 0.9) -> list:
    """'1' = crack frame, '0' = clear frame; frame i is at T0 + i seconds."""
    changes = []
    for index, char in enumerate(pattern):
        positive = char == "1"
        observation = Observation(index, probability + index / 1000 if positive else 0.1, positive,
                                  [[0, 0, 8, 8]] if positive else [], T0 + timedelta(seconds=index))
        change = debouncer.update(observation)
        if change is not None:
            changes.append((change.kind, index, change.event))
    return changes


def test_one_event_for_a_run_of_positives_with_short_noise():
    #         0123456789012345678901234
    pattern = "0110100111101101110001100"
    changes = feed(Debouncer(min_frames=3, run_id="20250101T000000Z-abc123"), pattern)
    assert [(kind, index) for kind, index, _ in changes] == [("start", 9), ("end", 20)]
    event = changes[0][2]
    start, end = event.start_record(), event.end_record()
    assert end["id"] == "20250101T000000Z-abc123-0001-end"
    assert start == {"event": "crack_start", "id": "20250101T000000Z-abc123-0001-start", "event_id": 1, "time": "2025-01-01T00:00:09.000Z",
                     "frame_index": 9, "first_frame_index": 7, "probability": 0.909,
                     "boxes": [[0, 0, 8, 8]]}
    assert end["frame_index"] == 20 and end["first_frame_index"] == 7 and end["last_frame_index"] == 17
    assert end["frames"] == 11 and end["duration_s"] == 10.0  # frames 7..17, gaps included
    assert end["peak_probability"] == 0.917 and end["reason"] == "clear"


def test_event_closes_after_exactly_min_frames_negatives():
    changes = feed(Debouncer(min_frames=2), "11" + "0" + "1" + "00" + "11")
    assert [(kind, index) for kind, index, _ in changes] == [("start", 1), ("end", 5), ("start", 7)]
    assert [event.event_id for _, _, event in changes] == [1, 1, 2]


def test_open_event_is_closed_at_shutdown():
    debouncer = Debouncer(min_frames=3)
    changes = feed(debouncer, "0111110")
    assert [(kind, index) for kind, index, _ in changes] == [("start", 3)]
    last = Observation(6, 0.1, False, [], T0 + timedelta(seconds=6))
    event = debouncer.finish(last)
    assert event is not None and debouncer.current is None
    record = event.end_record()
    assert record["reason"] == "shutdown" and record["frame_index"] == 6
    assert record["last_frame_index"] == 5 and record["frames"] == 5
    assert debouncer.finish(last) is None  # nothing left open


def test_min_frames_one_opens_on_the_first_positive():
    changes = feed(Debouncer(min_frames=1), "0101")
    assert [(kind, index) for kind, index, _ in changes] == [("start", 1), ("end", 2), ("start", 3)]
    with pytest.raises(ValueError):
        Debouncer(min_frames=0)


def test_event_writer_flushes_each_line(tmp_path):
    path = tmp_path / "logs" / "events.jsonl"
    path.parent.mkdir()
    path.write_text('{"event": "earlier"}\n')
    writer = EventWriter(path)
    writer.write({"event": "crack_start", "frame_index": 3})
    assert read_events(path)[-1] == {"event": "crack_start", "frame_index": 3}  # before close
    writer.close()
    assert [e["event"] for e in read_events(path)] == ["earlier", "crack_start"]  # appended


# --- video files ---------------------------------------------------------------------------------

GREY_BEFORE, CRACK_FRAMES, GREY_AFTER = 20, 15, 20


@pytest.fixture(scope="module")
def crack_video(tmp_path_factory) -> Path:
    frames = [grey_frame()] * GREY_BEFORE + [crack_frame()] * CRACK_FRAMES + [grey_frame()] * GREY_AFTER
    return write_video(tmp_path_factory.mktemp("video") / "crack.avi", frames)


def options(source, tmp_path: Path, **overrides) -> StreamOptions:
    values = dict(model=line_model_path(), source=str(source), events=tmp_path / "events.jsonl",
                  snapshots=tmp_path / "snapshots")
    values.update(overrides)
    return StreamOptions(**values)


def test_stream_video_file_gives_one_event_and_one_snapshot(crack_video, tmp_path):
    summary = run_stream(options(crack_video, tmp_path))
    capture = cv2.VideoCapture(str(crack_video))
    frame_count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    assert frame_count == GREY_BEFORE + CRACK_FRAMES + GREY_AFTER
    assert summary.frames == frame_count and summary.frames_read == frame_count
    assert (summary.events, summary.dropped, summary.reconnects) == (1, 0, 0)
    assert summary.stop_reason == "end of video"
    assert summary.line().startswith(f"stream: {frame_count} frames from {crack_video} in ")

    start, end = read_events(tmp_path / "events.jsonl")
    opened_at = GREY_BEFORE + 2  # the third crack frame in a row
    assert start["event"] == "crack_start" and start["frame_index"] == opened_at
    assert start["first_frame_index"] == GREY_BEFORE and start["probability"] > 0.9
    assert start["boxes"] == [[0, 0, 64, 64]]  # no tiles: the whole frame
    assert datetime.fromisoformat(start["time"]).tzinfo is not None
    assert end["event"] == "crack_end" and end["reason"] == "clear"
    assert end["first_frame_index"] == GREY_BEFORE
    assert end["last_frame_index"] == GREY_BEFORE + CRACK_FRAMES - 1
    assert end["frame_index"] == GREY_BEFORE + CRACK_FRAMES + 2  # the third clear frame
    assert end["frames"] == CRACK_FRAMES and end["peak_probability"] >= start["probability"]

    snapshots = sorted((tmp_path / "snapshots").iterdir())
    assert [p.name for p in snapshots] == [f"event_0001_frame_{opened_at:06d}.jpg"]
    assert summary.snapshot_paths == snapshots and start["snapshot"] == snapshots[0].name
    image = cv2.imread(str(snapshots[0]))
    assert image is not None and image.shape == (64, 64, 3)

    run_stream(options(crack_video, tmp_path))  # a second run (a restart) appends, never overwrites
    events = read_events(tmp_path / "events.jsonl")
    assert [e["event"] for e in events] == ["crack_start", "crack_end"] * 2
    assert events[2]["snapshot"] == f"event_0001_frame_{opened_at:06d}_2.jpg"
    assert len(list((tmp_path / "snapshots").iterdir())) == 2


def test_tiles_put_the_event_box_on_the_cracked_quarter(tmp_path):
    frames = ([grey_frame()] * 4 + [crack_frame(region=(0, 0, 32, 32))] * 6 + [grey_frame()] * 4)
    video = write_video(tmp_path / "quarter.avi", frames)
    summary = run_stream(options(video, tmp_path, tiles="2x2"))
    events = read_events(tmp_path / "events.jsonl")
    assert [e["event"] for e in events] == ["crack_start", "crack_end"]
    assert events[0]["boxes"] == [[0, 0, 32, 32]]  # only the top-left tile
    assert events[0]["frame_index"] == 6 and events[1]["last_frame_index"] == 9
    assert summary.frames == 14


def test_max_frames_stops_and_closes_the_open_event(crack_video, tmp_path):
    bound = GREY_BEFORE + 6  # stops while the crack is still in view
    summary = run_stream(options(crack_video, tmp_path, max_frames=bound))
    assert summary.frames == bound and summary.stop_reason == "max frames"
    start, end = read_events(tmp_path / "events.jsonl")
    assert start["event"] == "crack_start" and end["event"] == "crack_end"
    assert end["reason"] == "shutdown" and end["frame_index"] == bound - 1
    assert end["frames"] == 6


def test_threshold_override_and_min_frames(crack_video, tmp_path):
    summary = run_stream(options(crack_video, tmp_path, threshold=0.999, snapshots=None))
    assert summary.events == 0 and summary.frames == GREY_BEFORE + CRACK_FRAMES + GREY_AFTER
    assert read_events(tmp_path / "events.jsonl") == []
    summary = run_stream(options(crack_video, tmp_path, min_frames=CRACK_FRAMES + 1, snapshots=None))
    assert summary.events == 0  # the crack is in view for fewer frames than needed


def test_stream_command_through_typer(crack_video, tmp_path):
    result = CliRunner().invoke(app, ["stream", "--model", str(line_model_path()), "--source", str(crack_video),
                                      "--events", str(tmp_path / "e.jsonl"), "--tiles", "1x2",
                                      "--min-frames", "2", "--max-frames", "30"])
    assert result.exit_code == 0, result.output
    assert "stream: 30 frames from" in result.output and "1 event," in result.output
    start, end = read_events(tmp_path / "e.jsonl")
    assert start["frame_index"] == GREY_BEFORE + 1
    assert start["boxes"] == [[0, 0, 32, 64], [32, 0, 32, 64]]  # the line crosses both halves
    assert end["reason"] == "shutdown"


@pytest.mark.skipif("NONE" not in cv2.getBuildInformation().split("GUI:")[1].split("\n")[0],
                    reason="this OpenCV has a GUI")
def test_show_without_a_gui_is_a_user_error(crack_video, tmp_path):
    from edge.errors import UserError

    with pytest.raises(UserError, match="opencv-python-headless has none"):
        run_stream(options(crack_video, tmp_path, show=True))


# --- a real HTTP MJPEG stream --------------------------------------------------------------------

class _MjpegHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        server = self.server
        if self.path != "/stream.mjpg":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        try:
            sent = 0
            while not server.stopping.is_set():
                if server.frames is not None and sent >= server.frames:
                    server.stopping.wait()  # connected but silent: a stalled camera
                    break
                self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                 % len(server.jpeg) + server.jpeg + b"\r\n")
                self.wfile.flush()
                sent += 1
                server.stopping.wait(1 / 30)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args) -> None:
        pass


class MjpegServer:
    """multipart/x-mixed-replace JPEG frames on 127.0.0.1, like an IP camera's /stream.mjpg; with
    ``frames``, that many per connection and then silence with the connection open (a stall)."""

    def __init__(self, frame: np.ndarray, port: int = 0, frames: int | None = None) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), _MjpegHandler)
        self.httpd.daemon_threads = True
        self.httpd.frames = frames
        self.httpd.jpeg = cv2.imencode(".jpg", frame)[1].tobytes()
        self.httpd.stopping = threading.Event()
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/stream.mjpg"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.stopping.set()  # ends every open stream; clients see the connection close
        self.httpd.shutdown()
        self.httpd.server_close()


def test_opencv_reads_an_http_mjpeg_stream():
    server = MjpegServer(crack_frame())
    try:
        capture = cv2.VideoCapture(server.url, cv2.CAP_FFMPEG)
        ok, frame = capture.read()
        capture.release()
    finally:
        server.stop()
    assert ok and frame.shape == (64, 64, 3) and frame.min() < 50


def test_stream_reconnects_after_the_mjpeg_server_comes_back(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="crack.edge")
    events_path = tmp_path / "events.jsonl"
    server = MjpegServer(crack_frame())  # first the crack is in view...
    stop = threading.Event()
    result: dict = {}
    opts = options(server.url, tmp_path, reconnect_initial=0.1, reconnect_max=0.5, snapshots=None)

    def run() -> None:
        try:
            result["summary"] = run_stream(opts, stop=stop)
        except BaseException as exc:  # reported by the asserts below
            result["error"] = exc

    runner = threading.Thread(target=run)
    runner.start()
    restarted = None
    try:
        wait_for(lambda: events_path.exists() and "crack_start" in events_path.read_text(),
                 "a crack_start from the first server")
        server.stop()
        wait_for(lambda: any(r.getMessage().startswith("lost ") for r in caplog.records),
                 "the runner to notice the stream is gone")
        restarted = MjpegServer(grey_frame(), port=server.port)  # ...then it is gone
        wait_for(lambda: "crack_end" in events_path.read_text(), "a crack_end from the restarted server")
    finally:
        stop.set()
        runner.join(WAIT)
        if restarted is not None:
            restarted.stop()
        server.stop()
    assert "error" not in result, result.get("error")
    summary = result["summary"]
    assert summary.reconnects == 1 and summary.stop_reason == "stop request"
    messages = [r.getMessage() for r in caplog.records]
    lost = next(i for i, m in enumerate(messages) if m.startswith(f"lost {server.url} after "))
    reconnected = next(i for i, m in enumerate(messages) if m.startswith(f"reconnected to {server.url} after "))
    ended = next(i for i, m in enumerate(messages) if m.startswith("crack event 1 ended at frame "))
    assert lost < reconnected < ended  # the clear frames that ended the event came after reconnecting
    start, end = read_events(events_path)
    assert (start["event"], end["event"], end["reason"]) == ("crack_start", "crack_end", "clear")
    assert end["frame_index"] > end["last_frame_index"] >= start["frame_index"]
    assert summary.frames >= end["frame_index"] + 1 - summary.dropped


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_a_real_stream_process_cleanly(tmp_path, signum):
    server = MjpegServer(crack_frame())  # endless: only the signal ends this run
    events_path = tmp_path / "events.jsonl"
    command = [sys.executable, "-m", "edge", "stream", "--model", str(line_model_path()),
               "--source", server.url, "--events", str(events_path), "--snapshots", str(tmp_path / "snaps")]
    process = subprocess.Popen(command, cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def started() -> bool:
            if process.poll() is not None:
                pytest.fail(f"stream exited early with {process.returncode}: {process.stderr.read()}")
            return events_path.exists() and "crack_start" in events_path.read_text()

        wait_for(started, "the first crack_start")
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=WAIT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        server.stop()
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    events = read_events(events_path)  # every line is valid JSON
    assert [e["event"] for e in events] == ["crack_start", "crack_end"]
    assert events[1]["reason"] == "shutdown" and events[1]["event_id"] == 1
    assert events[1]["frame_index"] >= events[0]["frame_index"]
    name = signal.Signals(signum).name
    assert stdout.strip().endswith(f"stopped by {name}")
    assert "crack event 1 closed at shutdown" in stderr
    assert len(list((tmp_path / "snaps").glob("event_0001_frame_*.jpg"))) == 1


def test_stream_modules_never_import_tensorflow():
    code = ("import sys, edge.cli, edge.stream, edge.capture, edge.sources, edge.events, edge.overlay; "
            "print('tensorflow' in sys.modules, 'cv2' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT,
                            timeout=WAIT, check=False)
    assert result.stdout.split() == ["False", "True"], result.stderr
