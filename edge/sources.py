"""Where frames come from: one ``FrameSource`` for cameras, video files, network streams,
GStreamer pipelines and the Raspberry Pi camera.

Source strings (``--source``):

- ``0``, ``1``, ... or ``/dev/video0``: a USB/V4L2 camera (live)
- ``rtsp://...``, ``http(s)://...`` (e.g. an MJPEG stream), ``rtmp://``, ``udp://``, ``tcp://``: a
  network stream read by OpenCV's FFmpeg backend (live). RTSP goes over TCP with low-delay flags
  unless ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` is already set.
- an existing file: always that video file, whatever characters its name holds
- anything containing ``!``: a GStreamer pipeline ending in ``appsink`` (live; needs an OpenCV
  built with GStreamer, which pip's opencv-python-headless is not)
- ``picamera2`` or ``picamera2:WIDTHxHEIGHT``: a Raspberry Pi camera on the libcamera stack
  (live). OpenCV's VideoCapture cannot open those (OpenCV issue 22820), so this goes through the
  picamera2 package, imported only here and only when asked for.
- anything else: a video file, read frame by frame to its end.

A URL whose container announces a frame count (a video file served over HTTP) is finite: it is
read once, like a file, and its end is the end of the stream, never a drop to reconnect (that
replayed it forever and raised every event again).

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

from edge.errors import UserError, first_line
from edge.health import system_root
from edge.secrets import mask_urls

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
    size: tuple[int, int] | None = None  # cameras: the capture (width, height)
    lores: tuple[int, int] | None = None  # picamera2: a second, ISP-scaled stream for the model

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
            return f"GStreamer pipeline '{mask_urls(str(self.target))}'"
        return mask_urls(str(self.target))


def parse_source(spec: str) -> SourceSpec:
    text = spec.strip()
    if not text:
        raise UserError("--source is empty; give a camera index, video file, URL, pipeline or picamera2")
    if Path(text).is_file():
        return SourceSpec("file", text)
    if text.isdigit():
        return SourceSpec("camera", int(text))
    if text.startswith("/dev/video"):
        return SourceSpec("camera", text)
    lowered = text.lower()
    if lowered == "picamera2" or lowered.startswith("picamera2:"):
        size = None
        if ":" in text:
            size = parse_size(text.split(":", 1)[1], "picamera2 takes an optional size such as "
                                                     "picamera2:1920x1080, not " + repr(text) + "; the size")
        return SourceSpec("picamera2", "picamera2", size)
    if "!" in text:
        return SourceSpec("gstreamer", text)
    scheme = lowered.split("://", 1)[0] if "://" in lowered else ""
    if scheme in URL_SCHEMES:
        return SourceSpec("url", text)
    return SourceSpec("file", text)


def parse_size(text: str, what: str) -> tuple[int, int]:
    """'1920x1080' -> (1920, 1080); anything else is a UserError naming ``what``."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match or not all(0 < int(value) <= 16384 for value in match.groups()):
        raise UserError(f"{what} takes WIDTHxHEIGHT such as 1280x720, not {text!r}")
    return int(match.group(1)), int(match.group(2))


def with_resolution(spec: SourceSpec, resolution: str | None) -> SourceSpec:
    """The capture size asked for with --resolution, for a camera; other sources keep theirs."""
    if resolution is None:
        return spec
    size = parse_size(resolution, "--resolution")
    if spec.kind not in ("camera", "picamera2"):
        log.warning("--resolution %s applies to cameras only; %s is read as it comes", resolution, spec.describe())
        return spec
    return SourceSpec(spec.kind, spec.target, size, spec.lores)


def frame_transform(rotate: int = 0, hflip: bool = False, vflip: bool = False):
    """A function turning a camera frame the way it is mounted (``rotate`` degrees clockwise,
    then mirrored), or None when nothing is to be done."""
    rotation = {0: None, 90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180,
                270: cv2.ROTATE_90_COUNTERCLOCKWISE}[rotate]
    flip = {(True, True): -1, (True, False): 1, (False, True): 0}.get((hflip, vflip))
    if rotation is None and flip is None:
        return None

    def transform(image: np.ndarray) -> np.ndarray:
        if rotation is not None:
            image = cv2.rotate(image, rotation)
        if flip is not None:
            image = cv2.flip(image, flip)
        return image

    return transform


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

    @property
    def is_finite(self) -> bool:
        """True for a source with an end (a file): its end is not a failure to reconnect."""
        return not self.spec.is_live

    frame_count = 0  # frames the source announces (0: unknown or endless)

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
            if spec.kind == "camera":
                raise SourceUnavailable(f"cannot open {spec.describe()} ({describe_video_devices()})")
            raise SourceUnavailable(f"cannot open {spec.describe()}")
        if spec.kind == "camera":
            self._capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # fewer stale frames queued in the driver
        # Frames in a video file (or a file served over HTTP) as its container says; 0 when
        # unknown or live.
        self.frame_count = 0 if spec.kind in ("camera", "gstreamer") else max(
            int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0), 0)

    @property
    def is_finite(self) -> bool:
        """A file, or a URL that serves one: read once to its end, never reconnected."""
        return self.spec.kind == "file" or self.frame_count > 0

    def read(self) -> tuple[bool, np.ndarray | None]:
        ok, frame = self._capture.read()
        if not ok or frame is None or frame.size == 0:
            return False, None
        return True, frame

    def close(self) -> None:
        self._capture.release()


def _open_capture(spec: SourceSpec) -> cv2.VideoCapture:
    if spec.kind == "camera":
        capture = cv2.VideoCapture(spec.target)
        if spec.size is not None and capture.isOpened():
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, spec.size[0])
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, spec.size[1])
        return capture
    if spec.kind == "gstreamer":
        check_source(spec)
        return cv2.VideoCapture(str(spec.target), cv2.CAP_GSTREAMER)
    if spec.kind == "url":
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS]
        rtsp = str(spec.target).lower().startswith("rtsp")
        with _ffmpeg_capture_options(RTSP_LOW_DELAY if rtsp else None):
            return cv2.VideoCapture(str(spec.target), cv2.CAP_FFMPEG, params)
    check_source(spec)
    return cv2.VideoCapture(str(spec.target))


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


def video_devices(root: Path | None = None) -> list[str]:
    """The /dev/video* device nodes that exist (under ``root``, a fake tree in tests)."""
    root = root or system_root()
    return sorted(f"/dev/{path.name}" for path in (root / "dev").glob("video*"))


def describe_video_devices(root: Path | None = None) -> str:
    devices = video_devices(root)
    if devices:
        return "video devices here: " + ", ".join(devices)
    return ("no /dev/video* device here: is a USB camera plugged in? "
            "For the Raspberry Pi camera module use --source picamera2")


def opencv_has_gstreamer() -> bool:
    match = re.search(r"^\s*GStreamer:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    return bool(match) and match.group(1).upper() == "YES"


class Picamera2Source(FrameSource):
    """A Raspberry Pi camera through picamera2 (libcamera). Frames are asked for as "RGB888",
    which libcamera lays out as B, G, R bytes: exactly OpenCV's BGR order."""

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        self.small: np.ndarray | None = None  # the lores frame of the last read (BGR), if any
        try:
            from picamera2 import Picamera2
        except Exception as exc:  # ImportError, or numpy's ValueError for a mismatched build
            raise UserError(picamera2_failure(exc, "import")) from None
        try:
            self._camera = Picamera2()
        except Exception as exc:  # no camera connected, or one held by another process
            raise SourceUnavailable(picamera2_failure(exc, "open")) from None
        try:
            size = spec.size or PICAMERA2_DEFAULT_SIZE
            streams = {"main": {"size": size, "format": "RGB888"}}
            if spec.lores is not None:  # the ISP scales a second stream down for the model
                streams["lores"] = {"size": spec.lores, "format": "YUV420"}
            config = self._camera.create_video_configuration(**streams)
            self._camera.configure(config)
            self._camera.start()
        except Exception as exc:
            self.close()
            raise SourceUnavailable(picamera2_failure(exc, "start")) from None

    def read(self) -> tuple[bool, np.ndarray | None]:
        try:
            if self.spec.lores is not None:
                (frame, lores), _metadata = self._camera.capture_arrays(["main", "lores"])
                self.small = cv2.cvtColor(lores, cv2.COLOR_YUV2BGR_I420)
            else:
                frame = self._camera.capture_array("main")
        except Exception as exc:
            log.warning("picamera2 capture failed: %s", first_line(exc))
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


# Known picamera2 / libcamera start-up failures: (words in the error, what to do). Each becomes
# one line naming the fix instead of a traceback.
PICAMERA2_FAILURES = (
    ("numpy.dtype size changed",
     "picamera2 cannot load: pip's numpy in the venv hides the numpy Debian's simplejpeg was built "
     "for (picamera2 issues #1088, #1211); fix: .venv/bin/pip install --force-reinstall simplejpeg"),
    ("no module named 'picamera2'",
     f"--source picamera2 needs the picamera2 package: {PICAMERA2_INSTALL}, and create the venv with "
     "--system-site-packages so it can see it"),
    ("no module named 'libcamera'",
     "picamera2 cannot find libcamera's Python module: create the venv with --system-site-packages "
     "(python3 -m venv --system-site-packages .venv) or use the system Python"),
    ("no module named", f"picamera2 is missing a module; reinstall it: {PICAMERA2_INSTALL}"),
    ("list index out of range",
     "no camera found by libcamera: check the ribbon cable and `rpicam-hello --list-cameras`; "
     "on a Pi 5 use the camera port named in config.txt (camera_auto_detect=1)"),
    ("device or resource busy",
     "the camera is in use by another program (rpicam-*, another crack-edge): stop it"),
    ("failed to acquire camera",
     "the camera is in use by another program (rpicam-*, another crack-edge): stop it"),
    ("camera __init__ sequence did not complete",
     "libcamera could not start the camera: check the cable, then `sudo apt full-upgrade` and reboot"),
    ("not enough memory", "the camera cannot allocate its buffers: lower --resolution or raise the CMA memory"),
)


def picamera2_failure(exc: BaseException, stage: str) -> str:
    """One line naming the fix for a picamera2 failure at ``stage`` (import, open, start)."""
    text = str(exc).lower()
    for words, fix in PICAMERA2_FAILURES:
        if words in text:
            return fix
    if stage == "import":
        if isinstance(exc, ImportError):
            return PICAMERA2_FAILURES[1][1]
        return f"picamera2 cannot load ({first_line(exc)}); reinstall it: {PICAMERA2_INSTALL}"
    return f"cannot {stage} the Raspberry Pi camera: {first_line(exc)}"


def check_source(spec: SourceSpec) -> None:
    """Raise a UserError now for a source that can never work here, before anything is opened."""
    if spec.kind == "file" and not Path(str(spec.target)).is_file():
        raise UserError(f"video file not found: {spec.target} (for a camera give its index, e.g. --source 0)")
    if spec.kind == "gstreamer" and not opencv_has_gstreamer():
        raise UserError(
            "this OpenCV build has no GStreamer support (pip's opencv-python-headless has none); "
            "use --source picamera2, a camera index or a URL, or an OpenCV built with GStreamer"
        )


def open_once(spec: SourceSpec) -> FrameSource:
    """One attempt: a FrameSource, UserError (cannot work at all) or SourceUnavailable (try later)."""
    if spec.kind == "picamera2":
        return Picamera2Source(spec)
    return OpenCVSource(spec)


def open_source(spec: str | SourceSpec, backoff: Backoff | None = None,
                stop: threading.Event | None = None,
                opener: Callable[[SourceSpec], FrameSource] = open_once,
                delays: Iterator[float] | None = None) -> FrameSource:
    """Open a source. A file that cannot be opened, or a source that can never work here (no
    picamera2, no GStreamer), is a UserError. A live source that is down raises SourceUnavailable
    at once without ``backoff``; with it, it is retried (each attempt logged) until it opens or
    ``stop`` is set, which raises SourceUnavailable. ``opener`` makes one attempt (tests replace it);
    ``delays`` continues a caller's backoff sequence instead of starting ``backoff`` afresh."""
    if isinstance(spec, str):
        spec = parse_source(spec)
    if delays is None and backoff is not None:
        delays = backoff.delays()
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
