"""A capture thread between a FrameSource and the model.

Live sources (cameras, streams): the thread reads as fast as the source delivers and keeps only
the newest frame, so a slow model never works on stale pictures; replaced frames are counted as
dropped. When a read fails the source is closed and reopened with exponential backoff, each
attempt and the reconnection logged on the "crack.edge" logger; the thread never dies of it. The
backoff goes on across reconnects until a connection has lasted ``HEALTHY_SECONDS``, so a source
that connects and drops at once is not hammered.

A live source is opened on the capture thread, never on the caller's: an RTSP camera that accepts
the connection and then says nothing cannot hold up the caller (or SIGTERM) for FFmpeg's timeout.

Finite sources (video files, and files served over HTTP): the thread hands over every frame (it
waits until the consumer has taken the last one) and ends at the end of the file. A file that ends
before the frame count its container announced is reported as ``truncated``.

``prepare`` (optional) runs on the capture thread for every frame read, before the frame is
handed over; its result travels as ``Frame.model_input``. The stream makes the model's input
there, so that its scoring thread goes from invoke to invoke.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edge.sources import (Backoff, FrameSource, SourceSpec, SourceUnavailable, open_once,
                          open_source, parse_source)

log = logging.getLogger("crack.edge")

HEALTHY_SECONDS = 30.0  # a connection that lasted this long starts the backoff afresh when lost
TRUNCATION_TOLERANCE = 2  # frames a container's count may be off by without calling a file truncated
STOP_JOIN_SECONDS = 1.0  # how long stop() waits for a thread blocked inside the source


@dataclass(frozen=True)
class Frame:
    index: int  # frames read from the source since the start (for a file: its frame number)
    image: np.ndarray  # BGR
    time: float  # time.time() when it was read
    small: np.ndarray | None = None  # BGR, scaled down by the camera for the model (picamera2 lores)
    model_input: Any = None  # what Capture's ``prepare`` made of the frame on the capture thread


class LatestFrameSlot:
    """One frame passed from a producer thread to a consumer under a condition variable.

    ``keep_all=False``: ``put`` replaces a frame the consumer has not taken yet (``dropped`` += 1).
    ``keep_all=True``: ``put`` waits until the consumer has taken the previous frame.
    """

    def __init__(self, keep_all: bool = False) -> None:
        self.keep_all = keep_all
        self.dropped = 0
        self._frame: Frame | None = None
        self._closed = False
        self._condition = threading.Condition()

    def put(self, frame: Frame) -> bool:
        """False when the slot is closed (the consumer has gone)."""
        with self._condition:
            if self.keep_all:
                self._condition.wait_for(lambda: self._frame is None or self._closed)
            if self._closed:
                return False
            if self._frame is not None:
                self.dropped += 1
            self._frame = frame
            self._condition.notify_all()
            return True

    def get(self, timeout: float | None = None) -> Frame | None:
        """The newest frame not yet taken; None on timeout or when closed and empty."""
        with self._condition:
            self._condition.wait_for(lambda: self._frame is not None or self._closed, timeout)
            frame, self._frame = self._frame, None
            self._condition.notify_all()
            return frame

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    @property
    def ended(self) -> bool:
        """Closed and nothing left to take."""
        with self._condition:
            return self._closed and self._frame is None


class Capture:
    """Reads ``spec`` on a background thread. ``start`` opens the source first on the calling
    thread, so a bad file, a missing picamera2 or a GStreamer-less OpenCV fail at once with a
    UserError; a live source that is down at start is retried in the background."""

    def __init__(self, spec: str | SourceSpec, backoff: Backoff | None = None,
                 opener: Callable[[SourceSpec], FrameSource] = open_once,
                 transform: Callable[[np.ndarray], np.ndarray] | None = None,
                 prepare: Callable[[Frame], Any] | None = None) -> None:
        self.spec = parse_source(spec) if isinstance(spec, str) else spec
        self.backoff = backoff or Backoff()
        self.reconnects = 0
        self.frames_read = 0
        self.finite = not self.spec.is_live  # becomes True when a URL turns out to serve a file
        self.truncated: tuple[int, int] | None = None  # (frames read, frames announced)
        self.last_frame_at: float | None = None  # time.monotonic() of the newest frame read
        self._transform = transform
        self._prepare = prepare
        self._opener = opener
        self._delays = self.backoff.delays()
        self._slot = LatestFrameSlot(keep_all=not self.spec.is_live)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def dropped(self) -> int:
        return self._slot.dropped

    @property
    def ended(self) -> bool:
        """True once a file has been read to its end (or the capture was stopped) and drained."""
        return self._slot.ended

    def start(self) -> "Capture":
        """Files and picamera2 are opened here, so that what can never work fails at once with a
        UserError; other live sources are opened on the thread (``check_source`` first tells
        whether they can work here at all)."""
        source: FrameSource | None = None
        if self.spec.kind in ("file", "picamera2"):
            try:
                source = self._opener(self.spec)
            except SourceUnavailable as exc:  # only live sources raise this; files raise UserError
                log.warning("%s; retrying in the background", exc)
        self._thread = threading.Thread(target=self._run, args=(source,), name="crack-capture",
                                        daemon=True)
        self._thread.start()
        return self

    def get(self, timeout: float | None = None) -> Frame | None:
        return self._slot.get(timeout)

    def stop(self, timeout: float = STOP_JOIN_SECONDS) -> None:
        """Ask the thread to finish and wait for it. A read blocked inside the source can outlast
        ``timeout``; the daemon thread then closes the source itself when the read returns."""
        self._stop.set()
        self._slot.close()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("capture thread still blocked reading %s; leaving it", self.spec.describe())

    def __enter__(self) -> "Capture":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _run(self, source: FrameSource | None) -> None:
        lost_at: float | None = None if source is not None else time.monotonic()
        connected_at = time.monotonic()
        read_here = 0  # frames read on this connection
        try:
            while not self._stop.is_set():
                if source is None:
                    source = self._connect()
                    if source is None:  # stopped while waiting
                        return
                    if lost_at is not None and self.frames_read > 0:
                        self.reconnects += 1
                        log.info("reconnected to %s after %.1f s (reconnect %d)",
                                 self.spec.describe(), time.monotonic() - lost_at, self.reconnects)
                    elif lost_at is not None:
                        log.info("connected to %s", self.spec.describe())
                    lost_at, connected_at, read_here = None, time.monotonic(), 0
                if source.is_finite and not self.finite:
                    self.finite = self._slot.keep_all = True
                    log.info("%s is a video file (%d frames): reading it once", self.spec.describe(),
                             source.frame_count)
                ok, image = self._read(source)
                if not ok:
                    source.close()
                    if source.is_finite:
                        self._end_of_file(source, read_here)
                        return
                    source = None
                    lost_at = time.monotonic()
                    if lost_at - connected_at >= HEALTHY_SECONDS:
                        self._delays = self.backoff.delays()
                        log.warning("lost %s after %d frames; reconnecting", self.spec.describe(),
                                    self.frames_read)
                    else:  # it dropped soon after connecting: wait before trying again
                        delay = next(self._delays)
                        log.warning("lost %s after %d frames; reconnecting in %.1f s",
                                    self.spec.describe(), self.frames_read, delay)
                        if self._stop.wait(delay):
                            return
                    continue
                small = getattr(source, "small", None)
                if self._transform is not None:
                    image = self._transform(image)
                    small = self._transform(small) if small is not None else None
                self.last_frame_at = time.monotonic()
                frame = Frame(self.frames_read, image, time.time(), small)
                if self._prepare is not None:  # here, not between the consumer's invokes
                    frame = replace(frame, model_input=self._prepare(frame))
                if not self._slot.put(frame):
                    return
                self.frames_read += 1
                read_here += 1
        except Exception:  # a bug, not a source failure: say so, and let the consumer end
            log.exception("capture thread failed")
        finally:
            if source is not None:
                source.close()
            self._slot.close()

    def _end_of_file(self, source: FrameSource, frames: int) -> None:
        expected = source.frame_count
        if expected and frames < expected - TRUNCATION_TOLERANCE:
            self.truncated = (frames, expected)
            log.warning("%s ended after %d of the %d frames its header announces: the file is "
                        "truncated or damaged", self.spec.describe(), frames, expected)
        else:
            log.info("end of %s after %d frames", self.spec.describe(), frames)

    def _read(self, source: FrameSource) -> tuple[bool, np.ndarray | None]:
        try:
            return source.read()
        except Exception as exc:  # a driver or decoder error counts as a failed read
            log.warning("reading %s failed: %s", self.spec.describe(), exc)
            return False, None

    def _connect(self) -> FrameSource | None:
        try:
            return open_source(self.spec, self.backoff, self._stop, self._opener, delays=self._delays)
        except SourceUnavailable:
            return None  # only raised with a backoff once stop is set
        except Exception as exc:  # e.g. a UserError from a source that worked before
            log.error("cannot reopen %s: %s", self.spec.describe(), exc)
            return None
