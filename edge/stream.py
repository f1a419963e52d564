"""`crack-edge stream`: a camera, video file, URL, GStreamer pipeline or picamera2 -> crack events.

Per frame: ``frame_to_rgb`` -> ``score_frame`` (whole frame or tiles, one batched invoke) -> the
debouncer. An event start writes a ``crack_start`` line to ``--events`` and the annotated frame to
``--snapshots``; its end writes ``crack_end``. SIGINT/SIGTERM, ``--max-frames``, ``--duration``,
the end of a video file and (with ``--show``) the q key all stop the run the same way: the capture
thread is stopped, an open event is closed and written, and a one-line summary is printed.

OpenCV, the capture thread and the interpreter are imported inside ``run_stream`` so that
``crack-edge --help`` stays instant on a Raspberry Pi.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from edge.errors import EXIT_OK, EXIT_RUNTIME, UserError

log = logging.getLogger("crack.edge")
WINDOW = "crack-edge"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
POLL_SECONDS = 0.25  # how often the loop looks at the stop flag and --duration while waiting
FPS_WINDOW = 30  # frames in the overlay's rolling FPS


@dataclass(frozen=True)
class StreamOptions:
    model: Path
    source: str
    threads: int | None = None
    threshold: float | None = None  # None: the model's sidecar threshold
    tiles: str | None = None
    tile_size: int | None = None
    stride: int | None = None
    min_frames: int = 3
    events: Path | None = None
    snapshots: Path | None = None
    show: bool = False
    max_frames: int | None = None
    duration: float | None = None  # seconds
    reconnect_initial: float = 0.5
    reconnect_max: float = 10.0
    verbose: bool = False

    def validate(self) -> None:
        if self.min_frames < 1:
            raise UserError("--min-frames must be at least 1")
        if self.max_frames is not None and self.max_frames < 1:
            raise UserError("--max-frames must be at least 1")
        if self.duration is not None and self.duration <= 0:
            raise UserError("--duration must be positive")
        if self.threads is not None and self.threads < 1:
            raise UserError("--threads must be at least 1")
        if self.reconnect_initial <= 0 or self.reconnect_max < self.reconnect_initial:
            raise UserError("--reconnect-initial must be positive and at most --reconnect-max")


@dataclass
class StreamSummary:
    source: str
    frames: int = 0  # frames scored
    frames_read: int = 0  # frames read from the source (scored + dropped)
    dropped: int = 0  # live frames replaced by newer ones before the model got to them
    events: int = 0
    reconnects: int = 0
    elapsed_s: float = 0.0
    stop_reason: str = ""
    snapshot_paths: list[Path] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def exit_code(self) -> int:
        """0, or 1 when a live source could no longer be read (systemd's Restart=on-failure)."""
        return EXIT_RUNTIME if self.stop_reason == "source closed" else EXIT_OK

    def line(self) -> str:
        return (f"stream: {self.frames} frames from {self.source} in {self.elapsed_s:.1f} s "
                f"({self.fps:.1f} FPS), {self.events} event{'s' if self.events != 1 else ''}, "
                f"{self.dropped} dropped, {self.reconnects} reconnect{'s' if self.reconnects != 1 else ''}; "
                f"stopped by {self.stop_reason}")


class _StopFlag:
    """Set by a signal handler, the q key, or the caller's event; remembers the first reason."""

    def __init__(self, external: threading.Event | None) -> None:
        self.event = external or threading.Event()
        self._reason: str | None = None

    def set(self, reason: str) -> None:
        if self._reason is None:
            self._reason = reason
        self.event.set()

    @property
    def reason(self) -> str | None:
        if self._reason is None and self.event.is_set():
            return "stop request"  # the caller's event
        return self._reason

    def is_set(self) -> bool:
        return self.event.is_set()


@contextmanager
def _stop_on_signals(flag: _StopFlag) -> Iterator[None]:
    """SIGINT and SIGTERM set the stop flag instead of raising (main thread only: Python allows
    signal handlers nowhere else; a caller on another thread stops the run with its event)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame) -> None:
        flag.set(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _open_window() -> None:
    import cv2

    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    except cv2.error:
        raise UserError(
            "--show needs an OpenCV built with a GUI and opencv-python-headless has none; "
            "on a desktop install opencv-python instead, or run without --show"
        ) from None


def save_snapshot(directory: Path, event_id: int, frame_index: int, image) -> Path | None:
    """event_0001_frame_000123.jpg; a name left by an earlier run gets _2, _3, ... (event ids and
    frame indices start again at every run). None, logged, if the JPEG cannot be written."""
    import cv2

    stem = f"event_{event_id:04d}_frame_{frame_index:06d}"
    path, copy = directory / f"{stem}.jpg", 1
    while path.exists():
        copy += 1
        path = directory / f"{stem}_{copy}.jpg"
    if not cv2.imwrite(str(path), image):
        log.error("could not write snapshot %s", path)
        return None
    return path


def run_stream(options: StreamOptions, stop: threading.Event | None = None,
               on_frame: Callable[[int, float], None] | None = None) -> StreamSummary:
    """Run until the source ends, a bound is reached, or ``stop`` is set (SIGINT/SIGTERM set it
    too when called on the main thread). Returns what happened; never raises for a lost stream.
    ``on_frame(frame_index, probability)`` is called after each scored frame (bench times it)."""
    import cv2

    from edge.capture import Capture
    from edge.classifier import CrackClassifier
    from edge.events import Debouncer, EventWriter, Observation
    from edge.overlay import draw_overlay
    from edge.preprocess import frame_to_rgb
    from edge.sources import Backoff, parse_source
    from edge.tiling import TileGrid, score_frame

    options.validate()
    spec = parse_source(options.source)
    grid = TileGrid.parse(options.tiles, options.tile_size, options.stride)
    backoff = Backoff(options.reconnect_initial, options.reconnect_max)
    if options.show:
        _open_window()
    classifier = CrackClassifier(options.model, threads=options.threads)
    contract = classifier.contract
    if options.threshold is not None:
        contract = contract.with_threshold(options.threshold)
    threshold = contract.threshold
    log.info("model %s (input %d, threshold %.3f, %s), source %s", options.model, contract.input_size,
             threshold, classifier.backend.describe(), spec.describe())
    if options.snapshots is not None:
        options.snapshots.mkdir(parents=True, exist_ok=True)

    summary = StreamSummary(source=spec.describe())
    flag = _StopFlag(stop)
    debouncer = Debouncer(options.min_frames)
    writer: EventWriter | None = None
    capture = Capture(spec, backoff)
    done_times: deque[float] = deque(maxlen=FPS_WINDOW)
    last: Observation | None = None
    started = time.monotonic()

    def record(data: dict) -> None:
        if writer is not None:
            writer.write(data)

    try:
        with _stop_on_signals(flag):
            capture.start()  # a bad file, no picamera2, no GStreamer: UserError here
            if options.events is not None:
                writer = EventWriter(options.events)
            while not flag.is_set():
                if options.duration is not None and time.monotonic() - started >= options.duration:
                    flag.set("duration")
                    break
                frame = capture.get(timeout=POLL_SECONDS)
                if frame is None:
                    if capture.ended:
                        flag.set("end of video" if not spec.is_live else "source closed")
                        break
                    continue
                score = score_frame(classifier, frame_to_rgb(frame.image), grid)
                positive = score.probability >= threshold
                boxes = [[t.box.x0, t.box.y0, t.box.x1 - t.box.x0, t.box.y1 - t.box.y0]
                         for t in score.tiles if t.probability >= threshold]
                last = Observation(frame.index, score.probability, positive, boxes,
                                   datetime.fromtimestamp(frame.time, timezone.utc))
                change = debouncer.update(last)
                summary.frames += 1
                if on_frame is not None:
                    on_frame(frame.index, score.probability)
                done_times.append(time.monotonic())
                fps = ((len(done_times) - 1) / (done_times[-1] - done_times[0])
                       if len(done_times) > 1 and done_times[-1] > done_times[0] else None)
                if options.verbose:
                    log.debug("frame %d: p=%.4f%s", frame.index, score.probability, " crack" if positive else "")

                annotated = None
                if options.show or (change is not None and change.kind == "start" and options.snapshots):
                    annotated = draw_overlay(frame.image, score, threshold, contract.label_name(score.probability),
                                             fps, debouncer.current is not None)
                if change is not None and change.kind == "start":
                    event = change.event
                    summary.events += 1
                    start = event.start_record()
                    if options.snapshots is not None and annotated is not None:
                        path = save_snapshot(options.snapshots, event.event_id, frame.index, annotated)
                        if path is not None:
                            summary.snapshot_paths.append(path)
                            start["snapshot"] = path.name
                    record(start)
                    log.info("crack event %d started at frame %d (p=%.3f)", event.event_id,
                             event.opened.frame_index, event.opened.probability)
                elif change is not None:
                    record(change.event.end_record())
                    log.info("crack event %d ended at frame %d (peak p=%.3f, %d frames)",
                             change.event.event_id, frame.index, change.event.peak_probability,
                             change.event.frames)
                if options.show and annotated is not None:
                    cv2.imshow(WINDOW, annotated)
                    if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                        flag.set("q key")
                if options.max_frames is not None and summary.frames >= options.max_frames:
                    flag.set("max frames")
    finally:
        capture.stop()
        open_event = debouncer.finish(last, reason="shutdown")
        if open_event is not None:
            record(open_event.end_record())
            log.info("crack event %d closed at shutdown", open_event.event_id)
        if writer is not None:
            writer.close()
        if options.show:
            cv2.destroyAllWindows()
        summary.elapsed_s = time.monotonic() - started
        summary.frames_read = capture.frames_read
        summary.dropped = capture.dropped
        summary.reconnects = capture.reconnects
        summary.stop_reason = flag.reason or "an error"
    log.info("stopped by %s", summary.stop_reason)
    return summary
