"""Frame sources and the capture thread: source strings, picamera2 (missing and faked), files that
cannot be opened, GStreamer without GStreamer, RTSP options, retry with backoff, the latest-frame
slot and reconnecting after a live source fails."""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import subprocess
import sys
import threading
import types

import numpy as np
import pytest

from conftest import PROJECT
from edge.capture import Capture, Frame, LatestFrameSlot
from edge.errors import UserError
from edge.sources import (RTSP_LOW_DELAY, RTSP_OPTIONS_ENV, Backoff, FrameSource, SourceSpec,
                          SourceUnavailable, open_source, opencv_has_gstreamer, parse_source)
from edge_models import crack_frame, grey_frame, line_model_path, write_video

EDGE = [sys.executable, "-m", "edge"]
WAIT = 30.0  # generous upper bound for waits on threads; never a measured duration


def edge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*EDGE, *map(str, args)], capture_output=True, text=True, timeout=120,
                          cwd=PROJECT)


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


# --- source strings ----------------------------------------------------------------------------

@pytest.mark.parametrize("text, kind, target, live", [
    ("0", "camera", 0, True),
    ("2", "camera", 2, True),
    ("/dev/video1", "camera", "/dev/video1", True),
    ("rtsp://cam.local:554/stream1", "url", "rtsp://cam.local:554/stream1", True),
    ("http://127.0.0.1:8080/stream.mjpg", "url", "http://127.0.0.1:8080/stream.mjpg", True),
    ("HTTPS://example.org/live.m3u8", "url", "HTTPS://example.org/live.m3u8", True),
    ("libcamerasrc ! videoconvert ! appsink", "gstreamer", "libcamerasrc ! videoconvert ! appsink", True),
    ("picamera2", "picamera2", "picamera2", True),
    ("surveys/bridge 1.mp4", "file", "surveys/bridge 1.mp4", False),
])
def test_parse_source(text, kind, target, live):
    spec = parse_source(text)
    assert (spec.kind, spec.target, spec.is_live) == (kind, target, live)


def test_parse_picamera2_size_and_bad_strings():
    assert parse_source("picamera2:1920x1080").size == (1920, 1080)
    assert parse_source("picamera2").describe() == "picamera2 1280x720"
    with pytest.raises(UserError, match="picamera2:1920x1080"):
        parse_source("picamera2:big")
    with pytest.raises(UserError, match="empty"):
        parse_source("  ")


def test_backoff_doubles_to_its_maximum():
    delays = Backoff().delays()
    assert [next(delays) for _ in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    delays = Backoff(0.1, 0.3).delays()
    assert [round(next(delays), 6) for _ in range(4)] == [0.1, 0.2, 0.3, 0.3]
    with pytest.raises(UserError):
        Backoff(initial=2.0, maximum=1.0)


# --- files -------------------------------------------------------------------------------------

def test_video_file_reads_every_frame_then_ends(tmp_path):
    video = write_video(tmp_path / "v.avi", [grey_frame()] * 4 + [crack_frame()] * 3)
    with open_source(str(video)) as source:
        assert not source.is_live
        frames = []
        while True:
            ok, frame = source.read()
            if not ok:
                break
            frames.append(frame)
    assert len(frames) == 7
    assert frames[0].shape == (64, 64, 3) and frames[0].dtype == np.uint8
    assert frames[0].min() > 100 and frames[-1].min() < 50  # grey first, the dark line last


def test_unopenable_video_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="video file not found: .*missing.mp4"):
        open_source(str(tmp_path / "missing.mp4"))
    junk = tmp_path / "junk.avi"
    junk.write_text("not a video")
    with pytest.raises(UserError, match="cannot open video file .*junk.avi"):
        open_source(str(junk))
    with pytest.raises(UserError):  # a file is never retried, even with a backoff
        open_source(str(junk), Backoff(0.01, 0.01))


def test_stream_cli_exits_2_on_an_unopenable_video(tmp_path):
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"\x00" * 1000)
    result = edge("stream", "--model", line_model_path(), "--source", junk, "--events", tmp_path / "e.jsonl")
    assert result.returncode == 2, result.stderr
    assert last_line(result.stderr) == f"error: cannot open video file {junk}: not a video OpenCV can decode"
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "e.jsonl").exists()


# --- picamera2 ---------------------------------------------------------------------------------

def test_missing_picamera2_is_a_one_line_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # makes `import picamera2` fail
    with pytest.raises(UserError) as caught:
        open_source("picamera2", Backoff(0.01, 0.01))  # not retried: it can never work here
    message = str(caught.value)
    assert "\n" not in message
    assert "sudo apt install python3-picamera2" in message
    assert "--system-site-packages" in message


@pytest.mark.skipif(importlib.util.find_spec("picamera2") is not None, reason="picamera2 is installed")
def test_stream_cli_without_picamera2_exits_2(tmp_path):
    result = edge("stream", "--model", line_model_path(), "--source", "picamera2")
    assert result.returncode == 2
    assert last_line(result.stderr).startswith("error: --source picamera2 needs the picamera2 package: "
                                               "sudo apt install python3-picamera2")


class FakePicamera2:
    """Stands in for picamera2.Picamera2: records calls, returns "RGB888" (B, G, R) frames."""

    instances: list["FakePicamera2"] = []
    fail_to_open = False

    def __init__(self) -> None:
        if FakePicamera2.fail_to_open:
            raise IndexError("list index out of range")  # what picamera2 raises with no camera
        self.calls: list[str] = []
        self.size = None
        FakePicamera2.instances.append(self)

    def create_video_configuration(self, main: dict, lores: dict | None = None) -> dict:
        self.calls.append("create_video_configuration")
        self.size = main["size"]
        self.lores = lores
        assert main["format"] == "RGB888"
        assert lores is None or lores["format"] == "YUV420"
        return {"main": main}

    def configure(self, config: dict) -> None:
        self.calls.append("configure")

    def start(self) -> None:
        self.calls.append("start")

    def capture_arrays(self, names: list[str]) -> tuple[list[np.ndarray], dict]:
        assert names == ["main", "lores"] and self.lores is not None
        width, height = self.lores["size"]
        yuv = np.full((height * 3 // 2, width), 128, np.uint8)  # I420: Y plane, then U and V
        yuv[:height] = 60  # a dark grey picture
        return [self.capture_array(), yuv], {}

    def capture_array(self, stream: str = "main") -> np.ndarray:
        width, height = self.size
        frame = np.zeros((height, width, 3), np.uint8)
        frame[..., 0] = 200  # blue in OpenCV's order
        return frame

    def stop(self) -> None:
        self.calls.append("stop")

    def close(self) -> None:
        self.calls.append("close")


@pytest.fixture
def fake_picamera2(monkeypatch):
    module = types.ModuleType("picamera2")
    module.Picamera2 = FakePicamera2
    monkeypatch.setitem(sys.modules, "picamera2", module)
    FakePicamera2.instances = []
    FakePicamera2.fail_to_open = False
    return FakePicamera2


def test_picamera2_frames_are_bgr_at_the_asked_size(fake_picamera2):
    source = open_source("picamera2:320x240")
    ok, frame = source.read()
    source.close()
    camera = fake_picamera2.instances[0]
    assert ok and frame.shape == (240, 320, 3)
    assert frame[0, 0].tolist() == [200, 0, 0]  # passed through untouched: already BGR
    assert camera.calls == ["create_video_configuration", "configure", "start", "stop", "close"]
    source.close()  # closing twice is harmless
    assert camera.calls.count("close") == 1


def test_picamera2_without_a_camera_is_retried(fake_picamera2):
    fake_picamera2.fail_to_open = True
    with pytest.raises(SourceUnavailable, match="no camera found by libcamera: check the ribbon cable"):
        open_source("picamera2")


# --- GStreamer and network URLs ----------------------------------------------------------------

@pytest.mark.skipif(opencv_has_gstreamer(), reason="this OpenCV has GStreamer")
def test_gstreamer_pipeline_without_gstreamer_is_a_user_error():
    with pytest.raises(UserError, match="no GStreamer support"):
        open_source("videotestsrc ! videoconvert ! appsink", Backoff(0.01, 0.01))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EnvRecordingCapture:
    """Stands in for cv2.VideoCapture: notes the FFmpeg options in force when it is opened."""

    opened_with: list[str | None] = []

    def __init__(self, *args) -> None:
        EnvRecordingCapture.opened_with.append(os.environ.get(RTSP_OPTIONS_ENV))

    def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
        return False

    def release(self) -> None:
        pass


def test_rtsp_is_opened_with_tcp_low_delay_options_unless_the_user_set_them(monkeypatch):
    monkeypatch.setattr("edge.sources.cv2.VideoCapture", EnvRecordingCapture)
    EnvRecordingCapture.opened_with = []
    monkeypatch.delenv(RTSP_OPTIONS_ENV, raising=False)
    for url in ("rtsp://camera.local/live", "http://camera.local/mjpeg"):
        with pytest.raises(SourceUnavailable):
            open_source(url)
    monkeypatch.setenv(RTSP_OPTIONS_ENV, "rtsp_transport;udp")
    with pytest.raises(SourceUnavailable):
        open_source("rtsp://camera.local/live")
    assert EnvRecordingCapture.opened_with == [RTSP_LOW_DELAY, None, "rtsp_transport;udp"]
    assert os.environ[RTSP_OPTIONS_ENV] == "rtsp_transport;udp"


def test_a_video_file_read_after_an_rtsp_attempt_keeps_every_frame(tmp_path, monkeypatch):
    # The RTSP flags used to stay in the environment, and fflags;nobuffer dropped a file's first frame.
    monkeypatch.delenv(RTSP_OPTIONS_ENV, raising=False)
    video = write_video(tmp_path / "clip.avi", [grey_frame() for _ in range(12)])
    with pytest.raises(SourceUnavailable):
        open_source(f"rtsp://127.0.0.1:{closed_port()}/live")  # nothing listens: a stream that is down
    assert RTSP_OPTIONS_ENV not in os.environ
    with open_source(str(video)) as source:
        frames = 0
        while source.read()[0]:
            frames += 1
    assert frames == 12


# --- retry, slot, capture thread ---------------------------------------------------------------

class ListSource(FrameSource):
    """A fake live source: returns its frames, then fails (as a dropped stream does)."""

    def __init__(self, frames: list[np.ndarray], live: bool = True):
        self.spec = SourceSpec("url" if live else "file", "fake://source")
        self.frames = list(frames)
        self.closed = False

    def read(self):
        if not self.frames:
            return False, None
        return True, self.frames.pop(0)

    def close(self):
        self.closed = True


def level_frame(level: int) -> np.ndarray:
    return np.full((8, 8, 3), level, np.uint8)


def test_open_source_retries_a_live_source_with_backoff(caplog):
    caplog.set_level(logging.INFO, logger="crack.edge")
    spec = SourceSpec("url", "fake://camera")
    attempts = []

    def opener(spec):
        attempts.append(spec)
        if len(attempts) < 3:
            raise SourceUnavailable("camera is down")
        return ListSource([level_frame(1)])

    source = open_source(spec, Backoff(0.01, 0.02), opener=opener)
    assert len(attempts) == 3 and source.read()[0]
    retries = [r.getMessage() for r in caplog.records if "retrying in" in r.getMessage()]
    assert retries == ["camera is down; attempt 1 failed, retrying in 0.0 s",
                       "camera is down; attempt 2 failed, retrying in 0.0 s"]

    stop = threading.Event()
    stop.set()
    with pytest.raises(SourceUnavailable):  # a set stop ends the retries
        open_source(spec, Backoff(0.01, 0.02), stop=stop, opener=lambda spec: (_ for _ in ()).throw(
            SourceUnavailable("still down")))


def test_latest_frame_slot_keeps_only_the_newest_live_frame():
    slot = LatestFrameSlot(keep_all=False)
    for index in range(5):
        assert slot.put(Frame(index, level_frame(index), 0.0))
    assert slot.get(timeout=0).index == 4
    assert slot.dropped == 4
    assert slot.get(timeout=0) is None
    slot.close()
    assert slot.ended and not slot.put(Frame(5, level_frame(5), 0.0))


def test_latest_frame_slot_hands_over_every_file_frame():
    slot = LatestFrameSlot(keep_all=True)

    def produce():
        for index in range(50):
            slot.put(Frame(index, level_frame(index), 0.0))
        slot.close()

    producer = threading.Thread(target=produce)
    producer.start()
    received = []
    while not slot.ended:
        frame = slot.get(timeout=WAIT)
        if frame is not None:
            received.append(frame.index)
    producer.join(WAIT)
    assert received == list(range(50)) and slot.dropped == 0


def test_capture_reconnects_a_live_source_and_keeps_going(caplog):
    caplog.set_level(logging.INFO, logger="crack.edge")
    calls: list[int] = []
    opened: list[ListSource] = []

    def opener(spec):
        calls.append(1)
        if len(calls) == 1:  # first connection: three frames, then the stream drops
            opened.append(ListSource([level_frame(level) for level in (10, 11, 12)]))
        elif len(calls) == 4:  # down for two attempts, then back with two frames
            opened.append(ListSource([level_frame(level) for level in (20, 21)]))
        else:
            raise SourceUnavailable("stream down")
        return opened[-1]

    capture = Capture(SourceSpec("url", "fake://stream"), Backoff(0.01, 0.02), opener=opener).start()
    levels: list[int] = []
    try:
        while not levels or levels[-1] != 21:
            frame = capture.get(timeout=WAIT)
            assert frame is not None, "no frame from the capture thread"
            levels.append(int(frame.image[0, 0, 0]))
    finally:
        capture.stop()
    # A live slot may replace frames the consumer has not taken yet: those count as dropped.
    assert levels == sorted(levels) and set(levels) <= {10, 11, 12, 20, 21}
    assert capture.frames_read == 5 and len(levels) + capture.dropped == 5
    assert capture.reconnects == 1
    messages = [r.getMessage() for r in caplog.records]
    assert "lost fake://stream after 3 frames; reconnecting in 0.0 s" in messages  # backoff first
    assert "stream down; attempt 1 failed, retrying in 0.0 s" in messages
    assert "stream down; attempt 2 failed, retrying in 0.0 s" in messages
    assert any(m.startswith("reconnected to fake://stream after") and m.endswith("(reconnect 1)")
               for m in messages)
    assert all(source.closed for source in opened)


def test_capture_of_a_file_gives_every_frame_then_ends(tmp_path):
    frames = [np.full((16, 16, 3), 10 * i, np.uint8) for i in range(12)]
    capture = Capture(SourceSpec("file", "fake.avi"), opener=lambda spec: ListSource(frames, live=False))
    received = []
    with capture:
        while not capture.ended:
            frame = capture.get(timeout=WAIT)
            if frame is not None:
                received.append((frame.index, int(frame.image[0, 0, 0])))
    assert received == [(i, 10 * i) for i in range(12)]
    assert capture.dropped == 0 and capture.reconnects == 0
