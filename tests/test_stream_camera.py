"""Cameras on the device: mounting (--rotate, --hflip, --vflip), the capture size, picamera2's
lores stream for the model, one line naming the fix for each known picamera2 failure, and the
/dev/video* devices that exist when a camera index cannot be opened."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from edge.errors import UserError
from edge.health import SYSTEM_ROOT_ENV
from edge.sources import (SourceSpec, SourceUnavailable, describe_video_devices, frame_transform, open_once,
                          parse_source, picamera2_failure, with_resolution)
from test_edge_sources import fake_picamera2  # noqa: F401 (the fixture)


def corner_frame() -> np.ndarray:
    """2 x 3 BGR frame; the top-left pixel is the only white one."""
    frame = np.zeros((2, 3, 3), np.uint8)
    frame[0, 0] = 255
    return frame


@pytest.mark.parametrize("rotate, hflip, vflip, shape, white", [
    (90, False, False, (3, 2), (0, 1)),  # clockwise: the top-left corner goes to the top-right
    (180, False, False, (2, 3), (1, 2)),
    (270, False, False, (3, 2), (2, 0)),
    (0, True, False, (2, 3), (0, 2)),
    (0, False, True, (2, 3), (1, 0)),
    (0, True, True, (2, 3), (1, 2)),
    (90, True, False, (3, 2), (0, 0)),  # rotated first, then mirrored
])
def test_frame_transform(rotate, hflip, vflip, shape, white):
    out = frame_transform(rotate, hflip, vflip)(corner_frame())
    assert out.shape[:2] == shape
    assert list(zip(*np.nonzero(out[..., 0]))) == [white]


def test_no_transform_and_the_capture_size():
    assert frame_transform(0, False, False) is None
    assert with_resolution(parse_source("picamera2"), "1920x1080").size == (1920, 1080)
    assert with_resolution(parse_source("0"), "640x480").size == (640, 480)
    with pytest.raises(UserError, match="--resolution takes WIDTHxHEIGHT"):
        with_resolution(parse_source("0"), "640")


def test_picamera2_lores_stream_feeds_the_model(fake_picamera2):
    source = open_once(SourceSpec("picamera2", "picamera2", (640, 480), lores=(32, 32)))
    ok, frame = source.read()
    source.close()
    assert ok and frame.shape == (480, 640, 3)  # the full frame, for snapshots
    assert source.small.shape == (32, 32, 3)  # the ISP-scaled one, converted from YUV420 to BGR
    assert abs(int(source.small.mean()) - round((60 - 16) * 255 / 219)) <= 1  # Y 60, video range
    assert fake_picamera2.instances[0].lores == {"size": (32, 32), "format": "YUV420"}


def test_the_numpy_mismatch_at_import_is_one_line_naming_the_fix(monkeypatch):
    class MismatchedNumpy(types.ModuleType):
        def __getattr__(self, name):
            raise ValueError("numpy.dtype size changed, may indicate binary incompatibility. "
                             "Expected 96 from C header, got 88 from PyObject")

    monkeypatch.setitem(sys.modules, "picamera2", MismatchedNumpy("picamera2"))
    with pytest.raises(UserError) as caught:
        open_once(parse_source("picamera2"))
    message = str(caught.value)
    assert "\n" not in message
    assert message.endswith("fix: .venv/bin/pip install --force-reinstall simplejpeg")


@pytest.mark.parametrize("error, fix", [
    (IndexError("list index out of range"), "no camera found by libcamera"),
    (RuntimeError("Failed to acquire camera: Device or resource busy"), "in use by another program"),
    (ModuleNotFoundError("No module named 'libcamera'"), "create the venv with --system-site-packages"),
    (RuntimeError("Camera __init__ sequence did not complete."), "sudo apt full-upgrade"),
    (RuntimeError("something new"), "cannot start the Raspberry Pi camera: RuntimeError: something new"),
])
def test_known_picamera2_failures_name_their_fix(error, fix):
    assert fix in picamera2_failure(error, "start")


def test_a_camera_that_cannot_be_opened_lists_the_video_devices(tmp_path, monkeypatch):
    (tmp_path / "dev").mkdir()
    for name in ("video0", "video10", "video11", "null"):
        (tmp_path / "dev" / name).touch()
    monkeypatch.setenv(SYSTEM_ROOT_ENV, str(tmp_path))
    assert describe_video_devices() == "video devices here: /dev/video0, /dev/video10, /dev/video11"
    with pytest.raises(SourceUnavailable) as caught:
        open_once(parse_source("7"))  # no camera 7 on this machine
    assert str(caught.value) == ("cannot open camera 7 (video devices here: /dev/video0, /dev/video10, "
                                 "/dev/video11)")
    (tmp_path / "empty").mkdir()
    assert "no /dev/video* device here" in describe_video_devices(tmp_path / "empty")
    assert "--source picamera2" in describe_video_devices(tmp_path / "empty")


def test_stream_scores_the_lores_frame_and_keeps_the_full_one_for_snapshots(fake_picamera2, tmp_path):
    from edge.stream import StreamOptions, run_stream
    from edge_models import line_model_path

    summary = run_stream(StreamOptions(model=line_model_path(), source="picamera2:320x240", max_frames=4,
                                       events=tmp_path / "events.jsonl", snapshots=tmp_path / "snaps",
                                       min_frames=1, rotate=180))
    camera = fake_picamera2.instances[0]
    assert camera.lores == {"size": (32, 32), "format": "YUV420"}  # the model's input size
    assert summary.frames == 4 and summary.events == 1  # the dark lores frame scores as a crack
    snapshot = __import__("cv2").imread(str(summary.snapshot_paths[0]))
    assert snapshot.shape == (240, 320, 3)  # drawn on the full frame
