"""`crack-edge stream` under faults: a full disk for events and snapshots, a finite video served
over HTTP, a truncated video, a file name with '!', a silent RTSP camera with credentials and
SIGTERM, and every bad argument as one line with exit 2."""

from __future__ import annotations

import errno
import functools
import json
import signal
import socket
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import PROJECT
from edge.cli import app
from edge.errors import EXIT_RUNTIME
from edge.stream import StreamOptions, run_stream
from edge_models import crack_frame, grey_frame, line_model_path, write_video

WAIT = 60.0  # upper bound for a subprocess or a thread; never a measured duration
FRAMES = [grey_frame()] * 6 + [crack_frame()] * 6 + [grey_frame()] * 6


def read_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("faults") / "crack.avi", FRAMES)


def stream(source, **overrides) -> StreamOptions:
    return StreamOptions(model=line_model_path(), source=str(source), **overrides)


# --- a full disk ---------------------------------------------------------------------------------

def test_events_on_a_full_disk_are_retried_counted_and_never_crash(video, caplog):
    summary = run_stream(stream(video, events=Path("/dev/full")))
    assert summary.stop_reason == "end of video" and summary.frames == len(FRAMES)
    assert summary.events == 1
    assert summary.write_failures >= 2  # the start and the end line, each retried
    assert summary.lost_writes == 2  # both lines given up on at the end, and said so
    assert summary.exit_code == EXIT_RUNTIME  # a full disk is a runtime failure, not a 0
    assert "2 failed write(s)" in summary.line() or "failed write(s), 2 lost" in summary.line()
    messages = [record.getMessage() for record in caplog.records]
    assert any(m.startswith("cannot write event to /dev/full (No space left on device)") for m in messages)
    assert "2 event line(s) could not be written to /dev/full" in messages


def test_a_snapshot_that_fails_once_is_written_on_retry(video, tmp_path, monkeypatch):
    import edge.snapshots

    real_write = edge.snapshots.write_bytes_atomic
    calls = []

    def full_once(path, payload):
        calls.append(path)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, payload)

    monkeypatch.setattr(edge.snapshots, "write_bytes_atomic", full_once)
    summary = run_stream(stream(video, events=tmp_path / "events.jsonl", snapshots=tmp_path / "snaps"))
    start, end = read_events(tmp_path / "events.jsonl")
    assert (summary.write_failures, summary.lost_writes, summary.exit_code) == (1, 0, 0)
    assert [p.name for p in (tmp_path / "snaps").iterdir()] == [start["snapshot"]]
    assert len(calls) == 2 and calls[0] == calls[1]  # the same file, written on the retry


def test_a_torn_event_line_is_finished_not_repeated(tmp_path, monkeypatch):
    import edge.events

    path = tmp_path / "events.jsonl"
    writer = edge.events.EventWriter(path)
    real_write = edge.events.os.write
    budget = {"bytes": 10}

    def short_then_full(fd, data):  # 10 bytes reach the disk, then it is full
        if budget["bytes"] is None:
            return real_write(fd, data)
        if budget["bytes"] == 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        written = real_write(fd, data[:budget["bytes"]])
        budget["bytes"] -= written
        return written

    monkeypatch.setattr(edge.events.os, "write", short_then_full)
    assert not writer.write({"event": "crack_start", "event_id": 1})
    assert writer.pending == 1 and writer.failures == 1
    budget["bytes"] = None  # space again
    assert writer.write({"event": "crack_end", "event_id": 1})
    writer.close()
    assert read_events(path) == [{"event": "crack_start", "event_id": 1}, {"event": "crack_end", "event_id": 1}]


# --- finite and truncated videos, file names -----------------------------------------------------

def test_a_video_file_served_over_http_is_read_once(video, tmp_path):
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(video.parent))
    handler.log_message = lambda *args: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{video.name}"
        summary = run_stream(stream(url, events=tmp_path / "events.jsonl", reconnect_initial=0.01,
                                    reconnect_max=0.01))
    finally:
        server.shutdown()
        server.server_close()
    assert summary.stop_reason == "end of stream" and summary.exit_code == 0
    assert (summary.frames, summary.reconnects, summary.dropped) == (len(FRAMES), 0, 0)
    assert [e["event"] for e in read_events(tmp_path / "events.jsonl")] == ["crack_start", "crack_end"]


def test_a_truncated_video_is_reported_and_exits_1(tmp_path, caplog):
    whole = write_video(tmp_path / "whole.avi", [grey_frame()] * 40)
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    summary = run_stream(stream(cut))
    assert summary.stop_reason == "truncated video" and summary.exit_code == EXIT_RUNTIME
    read, announced = summary.truncated
    assert announced == 40 and 0 < read < 30 and summary.frames == read
    assert f"video cut off after {read} of 40 frames" in summary.line()
    assert any(r.getMessage() == f"{cut} ended after {read} of the 40 frames its header announces: "
               "the file is truncated or damaged" for r in caplog.records)
    result = CliRunner().invoke(app, ["stream", "--model", str(line_model_path()), "--source", str(cut)])
    assert result.exit_code == EXIT_RUNTIME and "stopped by truncated video" in result.output


def test_an_existing_file_with_an_exclamation_mark_is_a_file(tmp_path):
    video = write_video(tmp_path / "bridge!north.avi", FRAMES)
    summary = run_stream(stream(video))
    assert summary.stop_reason == "end of video" and summary.frames == len(FRAMES)


# --- a silent RTSP camera: SIGTERM at once, no password anywhere -----------------------------

class SilentListener:
    """Accepts TCP connections on 127.0.0.1 and never says a word (a hung RTSP camera)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.accepted = threading.Event()
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            self.connections.append(connection)
            self.accepted.set()

    def close(self) -> None:
        for connection in self.connections:
            connection.close()
        self.sock.close()


def test_sigterm_stops_a_silent_rtsp_stream_and_no_credential_is_written(tmp_path):
    listener = SilentListener()
    url = f"rtsp://inspector:Brid9eSecret@127.0.0.1:{listener.port}/live"
    events = tmp_path / "events.jsonl"
    process = subprocess.Popen([sys.executable, "-m", "edge", "stream", "--model", str(line_model_path()),
                                "--source", url, "--events", str(events), "--status-interval", "0.2"],
                               cwd=PROJECT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert listener.accepted.wait(WAIT), "the stream never connected"
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=WAIT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        listener.close()
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    # the main thread did not wait for FFmpeg's 10 s open timeout: it left the capture thread
    assert "capture thread still blocked reading rtsp://***@127.0.0.1" in stderr
    assert stdout.strip().endswith("stopped by SIGTERM")
    written = stdout + stderr + (events.read_text() if events.exists() else "")
    assert "rtsp://***@127.0.0.1" in written
    assert "Brid9eSecret" not in written and "inspector" not in written


# --- every bad argument: one line, exit 2 ------------------------------------------------------

def bad_stream_arguments(tmp_path: Path) -> list[tuple[list[str], str]]:
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("not a folder")
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("[stream]\nthreads = 'four'\n")
    model = str(line_model_path())
    base = ["--model", model, "--source", str(tmp_path / "none.avi")]
    return [
        ([*base, "--threshold", "2"], "--threshold must be between 0 and 1"),
        ([*base, "--threshold", "abc"], "Invalid value for '--threshold'"),
        ([*base, "--min-frames", "0"], "--min-frames must be at least 1"),
        ([*base, "--rotate", "45"], "--rotate takes 0, 90, 180 or 270"),
        ([*base, "--tiles", "3"], "--tiles takes ROWSxCOLS"),
        ([*base, "--resolution", "big"], "--resolution takes WIDTHxHEIGHT"),
        ([*base, "--stall-timeout", "-1"], "--stall-timeout must be positive"),
        ([*base, "--max-disk-mb", "-5"], "--max-disk-mb and --keep-days must be 0"),
        ([*base, "--duration", "0"], "--duration must be positive"),
        ([*base, "--reconnect-initial", "5", "--reconnect-max", "1"], "--reconnect-initial must be positive"),
        ([*base, "--events", str(tmp_path)], "is a folder"),
        ([*base, "--events", str(a_file / "events.jsonl")], "is a file, not a folder"),
        ([*base, "--snapshots", str(a_file)], "a_file.txt is a file, not a folder"),
        ([*base, "--bogus"], "No such option: --bogus"),
        (["--model", model], "missing --source"),
        (["--source", "0"], "missing --model"),
        ([*base, "--config", str(tmp_path / "missing.toml")], "config file not found"),
        ([*base, "--config", str(bad_toml)], "[stream] threads must be an integer"),
        (["--model", str(tmp_path / "missing.tflite"), "--source", "0"], "model not found"),
        (["--model", model, "--source", "picamera2:huge"], "picamera2 takes an optional size"),
        (["--model", model, "--source", " "], "--source is empty"),
        (["--model", model, "--source", str(tmp_path / "missing.mp4")], "video file not found"),
        ([*base, "--show"], "--show needs"),
    ]


def test_every_bad_stream_argument_is_one_line_and_exit_2(tmp_path):
    cases = bad_stream_arguments(tmp_path)
    processes = [subprocess.Popen([sys.executable, "-m", "edge", "stream", *args], cwd=tmp_path,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for args, _ in cases]
    for (args, expected), process in zip(cases, processes):
        stdout, stderr = process.communicate(timeout=WAIT)
        lines = stderr.strip().splitlines()
        assert process.returncode == 2, (args, stderr)
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], (args, stderr)
        assert "Traceback" not in stdout + stderr


@pytest.mark.parametrize("text, masked", [
    ("rtsp://admin:s3cret@10.0.0.5:554/stream1", "rtsp://***@10.0.0.5:554/stream1"),
    ("lost rtsp://user@cam/live after 3 frames", "lost rtsp://***@cam/live after 3 frames"),
    ("http://a:p%40ss@host/x and rtsps://b:c@other/y", "http://***@host/x and rtsps://***@other/y"),
    ("http://host/path?mail=a@b.c", "http://host/path?mail=a@b.c"),  # no credentials: untouched
    ("camera 0", "camera 0"),
])
def test_mask_urls(text, masked):
    from edge.secrets import mask_urls

    assert mask_urls(text) == masked
