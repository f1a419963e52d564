"""Where frames come from: one ``FrameSource`` for cameras, video files, network streams,
GStreamer pipelines and the Raspberry Pi camera.

Source strings (``--source``):

- ``0``, ``1``, ... or ``/dev/video0``: a USB/V4L2 camera (live)
- ``rtsp://...``, ``http(s)://...`` (e.g. an MJPEG stream), ``rtmp://``, ``udp://``, ``tcp://``: a
  network stream read by OpenCV's FFmpeg backend (live). RTSP goes over TCP with low-delay flags
  unless ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` is already set.
- anything containing ``!``: a GStreamer pipeline ending in ``appsink`` (live; needs an OpenCV
  built with GStreamer, which pip's opencv-python-headless is not)
- ``picamera2`` or ``picamera2:WIDTHxHEIGHT``: a Raspberry Pi camera on the libcamera stack
  (live). OpenCV's VideoCapture cannot open those (OpenCV issue 22820), so this goes through the
  picamera2 package, imported only here and only when asked for.
- anything else: a video file, read frame by frame to its end.

Every source returns OpenCV-style BGR frames. A file that cannot be opened is a ``UserError``; a
live source that cannot be opened raises ``SourceUnavailable`` (it may come back) and
``open_source`` with a ``Backoff`` keeps retrying it.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from edge.errors import UserError

log = logging.getLogger("crack.edge")

SourceKind = Literal["camera", "file", "url", "gstreamer", "picamera2"]
URL_SCHEMES = ("rtsp", "rtsps", "http", "https", "rtmp", "udp", "tcp")
RTSP_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
RTSP_LOW_DELAY = "rtsp_transport;tcp|fflags;nobuffer|flags;low_delay"
OPEN_TIMEOUT_MS = 10_000  # FFmpeg: give up connecting after this long...
READ_TIMEOUT_MS = 10_000  # ...or when a connected stream sends nothing for this long
PICAMERA2_DEFAULT_SIZE = (1280, 720)
PICAMERA2_INSTALL = "sudo apt install python3-picamera2"


class SourceUnavailable(Exception):
    """A live source that cannot be opened right now (camera unplugged, stream down)."""


@dataclass(frozen=True)
class SourceSpec:
    kind: SourceKind
    target: str | int  # camera index or device path, URL, pipeline, file path
    size: tuple[int, int] | None = None  # picamera2 only: (width, height)

    @property
    def is_live(self) -> bool:
        return self.kind != "file"

    def describe(self) -> str:
        if self.kind == "camera":
            return f"camera {self.target}"
        if self.kind == "picamera2":
            width, height = self.size or PICAMERA2_DEFAULT_SIZE
            return f"picamera2 {width}x{height}"
        if self.kind == "gstreamer":
            return f"GStreamer pipeline '{self.target}'"
        return str(self.target)


def parse_source(spec: str) -> SourceSpec:
    text = spec.strip()
    if not text:
        raise UserError("--source is empty; give a camera index, video file, URL, pipeline or picamera2")
    if text.isdigit():
        return SourceSpec("camera", int(text))
    if text.startswith("/dev/video"):
        return SourceSpec("camera", text)
    lowered = text.lower()
    if lowered == "picamera2" or lowered.startswith("picamera2:"):
        size = None
        if ":" in text:
            match = re.fullmatch(r"(\d+)[xX](\d+)", text.split(":", 1)[1].strip())
            if not match:
                raise UserError(f"picamera2 takes an optional size such as picamera2:1920x1080, not {text!r}")
            size = (int(match.group(1)), int(match.group(2)))
        return SourceSpec("picamera2", "picamera2", size)
    if "!" in text:
        return SourceSpec("gstreamer", text)
    scheme = lowered.split("://", 1)[0] if "://" in lowered else ""
    if scheme in URL_SCHEMES:
        return SourceSpec("url", text)
    return SourceSpec("file", text)


@dataclass(frozen=True)
class Backoff:
    """Waits between attempts to (re)open a live source: initial, doubling, capped at maximum."""

    initial: float = 0.5
    maximum: float = 10.0
    factor: float = 2.0

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.maximum < self.initial or self.factor < 1:
            raise UserError("reconnect delays need 0 < initial <= maximum and a factor of at least 1")

    def delays(self) -> Iterator[float]:
        delay = self.initial
        while True:
            yield delay
            delay = min(delay * self.factor, self.maximum)


class FrameSource:
    """Something that yields BGR frames. ``read`` returns (False, None) at the end of a file or
    when a live source has failed; the caller then closes it (and reopens a live one)."""

    spec: SourceSpec

    @property
    def is_live(self) -> bool:
        return self.spec.is_live

    def read(self) -> tuple[bool, np.ndarray | None]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class OpenCVSource(FrameSource):
    """cv2.VideoCapture: cameras, files, FFmpeg URLs and GStreamer pipelines."""

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        self._capture = _open_capture(spec)
        if not self._capture.isOpened():
            self._capture.release()
            if spec.kind == "file":
                raise UserError(f"cannot open video file {spec.target}: not a video OpenCV can decode")
            raise SourceUnavailable(f"cannot open {spec.describe()}")
        if spec.kind == "camera":
            self._capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # fewer stale frames queued in the driver

    @property
    def frame_count(self) -> int:
        """Frames in a video file as its container says (0 when unknown or live)."""
        return max(int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0), 0)

    def read(self) -> tuple[bool, np.ndarray | None]:
        ok, frame = self._capture.read()
        if not ok or frame is None or frame.size == 0:
            return False, None
        return True, frame

    def close(self) -> None:
        self._capture.release()


def _open_capture(spec: SourceSpec) -> cv2.VideoCapture:
    if spec.kind == "camera":
        return cv2.VideoCapture(spec.target)
    if spec.kind == "gstreamer":
        if not opencv_has_gstreamer():
            raise UserError(
                "this OpenCV build has no GStreamer support (pip's opencv-python-headless has none); "
                "use --source picamera2, a camera index or a URL, or an OpenCV built with GStreamer"
            )
        return cv2.VideoCapture(str(spec.target), cv2.CAP_GSTREAMER)
    if spec.kind == "url":
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS]
        rtsp = str(spec.target).lower().startswith("rtsp")
        with _ffmpeg_capture_options(RTSP_LOW_DELAY if rtsp else None):
            return cv2.VideoCapture(str(spec.target), cv2.CAP_FFMPEG, params)
    path = Path(str(spec.target))
    if not path.is_file():
        raise UserError(f"video file not found: {path} (for a camera give its index, e.g. --source 0)")
    return cv2.VideoCapture(str(path))


@contextmanager
def _ffmpeg_capture_options(options: str | None) -> Iterator[None]:
    """Give OpenCV's FFmpeg backend these capture options for one open only, unless there are none
    or the user has set their own.

    The backend reads the variable at every open, so leaving it set would hand the RTSP flags to
    every later capture in the process: ``fflags;nobuffer`` makes a video file lose its first frame.
    """
    if options is None or RTSP_OPTIONS_ENV in os.environ:
        yield
        return
    os.environ[RTSP_OPTIONS_ENV] = options
    try:
        yield
    finally:
        del os.environ[RTSP_OPTIONS_ENV]


def opencv_has_gstreamer() -> bool:
    match = re.search(r"^\s*GStreamer:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    return bool(match) and match.group(1).upper() == "YES"


class Picamera2Source(FrameSource):
    """A Raspberry Pi camera through picamera2 (libcamera). Frames are asked for as "RGB888",
    which libcamera lays out as B, G, R bytes: exactly OpenCV's BGR order."""

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        try:
            from picamera2 import Picamera2
        except ImportError:
            raise UserError(
                f"--source picamera2 needs the picamera2 package: {PICAMERA2_INSTALL}, "
                "and create the venv with --system-site-packages so it can see it"
            ) from None
        try:
            self._camera = Picamera2()
        except Exception as exc:  # no camera connected, or one held by another process
            raise SourceUnavailable(f"cannot open the Raspberry Pi camera: {exc}") from None
        try:
            size = spec.size or PICAMERA2_DEFAULT_SIZE
            config = self._camera.create_video_configuration(main={"size": size, "format": "RGB888"})
            self._camera.configure(config)
            self._camera.start()
        except Exception as exc:
            self.close()
            raise SourceUnavailable(f"cannot start the Raspberry Pi camera: {exc}") from None

    def read(self) -> tuple[bool, np.ndarray | None]:
        try:
            frame = self._camera.capture_array("main")
        except Exception as exc:
            log.warning("picamera2 capture failed: %s", exc)
            return False, None
        if frame is None or frame.size == 0:
            return False, None
        if frame.ndim == 3 and frame.shape[2] == 4:  # an XRGB8888 configuration: drop the padding
            frame = frame[:, :, :3]
        return True, np.ascontiguousarray(frame)

    def close(self) -> None:
        camera, self._camera = getattr(self, "_camera", None), None
        if camera is None:
            return
        for method in ("stop", "close"):
            try:
                getattr(camera, method)()
            except Exception as exc:  # closing must never raise; the camera is gone anyway
                log.debug("picamera2 %s: %s", method, exc)


def open_once(spec: SourceSpec) -> FrameSource:
    """One attempt: a FrameSource, UserError (cannot work at all) or SourceUnavailable (try later)."""
    if spec.kind == "picamera2":
        return Picamera2Source(spec)
    return OpenCVSource(spec)


def open_source(spec: str | SourceSpec, backoff: Backoff | None = None,
                stop: threading.Event | None = None,
                opener: Callable[[SourceSpec], FrameSource] = open_once) -> FrameSource:
    """Open a source. A file that cannot be opened, or a source that can never work here (no
    picamera2, no GStreamer), is a UserError. A live source that is down raises SourceUnavailable
    at once without ``backoff``; with it, it is retried (each attempt logged) until it opens or
    ``stop`` is set, which raises SourceUnavailable. ``opener`` makes one attempt (tests replace it)."""
    if isinstance(spec, str):
        spec = parse_source(spec)
    delays = backoff.delays() if backoff is not None else None
    attempt = 0
    while True:
        attempt += 1
        try:
            source = opener(spec)
        except SourceUnavailable as exc:
            if delays is None or (stop is not None and stop.is_set()):
                raise
            delay = next(delays)
            log.warning("%s; attempt %d failed, retrying in %.1f s", exc, attempt, delay)
            if stop is not None:
                if stop.wait(delay):
                    raise SourceUnavailable(f"stopped while waiting for {spec.describe()}") from None
            else:
                threading.Event().wait(delay)
            continue
        return source
