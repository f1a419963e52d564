"""`crack-edge stream`: a camera, video file, URL, GStreamer pipeline or picamera2 -> crack events.

Per frame: the capture thread decodes it and makes the model's input (``prepare_frame``: colour,
resize, tiles; the newest frame only for a live source), so that the interpreters go from invoke
to invoke -> the score (whole frame or tiles, one batched invoke; by two interpreters side by side
on 2+ cores, handed back in frame order: edge/scoring_pool.py) -> the debouncer. The
full-resolution frame stays with it for snapshots, the overlay and the preview. An event start writes a ``crack_start`` line to ``--events`` and the annotated frame to
``--snapshots``; its end writes ``crack_end``. SIGINT/SIGTERM, ``--max-frames``, ``--duration``,
the end of a video file, a stalled source (``--stall-timeout``) and (with ``--show``) the q key all
stop the run the same way: the capture thread is stopped, an open event is closed and written, and
a one-line summary is printed.

Unattended (see edge/DEVICE.md): systemd is told READY once the model is loaded and the first
frame scored, WATCHDOG only while frames are being scored, and a STATUS line; a status line with
the device's health goes to the log every ``--status-interval`` seconds; events and snapshots are
kept within ``--max-disk-mb`` and ``--keep-days``; a failed write is retried, never fatal.

OpenCV, the capture thread and the interpreter are imported inside ``run_stream`` so that
``crack-edge --help`` stays instant on a Raspberry Pi.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from edge.collect import DEFAULT_COLLECT_MARGIN, DEFAULT_COLLECT_MB
from edge.disk_budget import DEFAULT_KEEP_DAYS, DEFAULT_MAX_DISK_MB
from edge.outbox import DEFAULT_OUTBOX_MB
from edge.errors import EXIT_OK, EXIT_RUNTIME, EXIT_STALLED, UserError
from edge.output_paths import check_output_path

log = logging.getLogger("crack.edge")
WINDOW = "crack-edge"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
POLL_SECONDS = 0.25  # how often the loop looks at the stop flag, --duration and stalls while waiting
FPS_WINDOW = 30  # frames in the overlay's rolling FPS
HOUSEKEEPING_SECONDS = 5.0  # retry failed writes, send systemd's STATUS, this often
PRUNE_SECONDS = 60.0  # check the disk budget this often (and after every rotation)
ROTATIONS = (0, 90, 180, 270)
MAX_INTERPRETERS = 16  # each holds its own copy of the packed weights

# how a run ended -> the process's exit code (edge/FORMATS.md)
EXIT_CODES = {"source closed": EXIT_RUNTIME, "truncated video": EXIT_RUNTIME, "stalled": EXIT_STALLED}


@dataclass(frozen=True)
class StreamOptions:
    model: Path
    source: str
    threads: int | None = None  # interpreter threads in all, shared: edge.scoring_pool.interpreter_plan
    interpreters: int | None = None  # scoring side by side; None: 2 on 2+ cores (edge/scoring_pool.py)
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
    stall_timeout: float | None = None  # seconds without a frame -> exit EXIT_STALLED
    status_interval: float = 60.0  # seconds between status lines in the log
    max_disk_mb: float | None = DEFAULT_MAX_DISK_MB  # events + snapshots; 0/None: no limit
    keep_days: float | None = DEFAULT_KEEP_DAYS  # older events files and snapshots go; 0/None: keep
    rotate: int = 0  # degrees clockwise
    hflip: bool = False
    vflip: bool = False
    resolution: str | None = None  # camera capture size WIDTHxHEIGHT
    webhook: str | None = None  # event delivery through the outbox: edge/event_sinks.py
    webhook_snapshots: bool = False
    mqtt: str | None = None
    outbox: Path | None = None
    outbox_mb: float = DEFAULT_OUTBOX_MB
    serve: str | None = None  # the live preview page HOST:PORT: edge/preview_server.py
    serve_token: str | None = None
    verbose: bool = False
    require_verified: bool = False  # refuse to start unless the golden check passes (edge/verify.py)
    collect: Path | None = None  # frames to label: near the threshold and of events (edge/collect.py)
    collect_margin: float = DEFAULT_COLLECT_MARGIN
    collect_max_mb: float = DEFAULT_COLLECT_MB

    def collect_options(self):
        from edge.collect import CollectOptions

        return CollectOptions(self.collect, self.collect_margin, self.collect_max_mb)

    def sink_options(self):
        from edge.event_sinks import SinkOptions

        return SinkOptions(self.webhook, self.webhook_snapshots, self.mqtt, self.outbox, self.outbox_mb)

    def preview_options(self):
        from edge.preview_server import PreviewOptions

        return PreviewOptions(self.serve, self.serve_token)

    def validate(self) -> None:
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise UserError(f"--threshold must be between 0 and 1, got {self.threshold}")
        if self.min_frames < 1:
            raise UserError("--min-frames must be at least 1")
        if self.max_frames is not None and self.max_frames < 1:
            raise UserError("--max-frames must be at least 1")
        if self.duration is not None and self.duration <= 0:
            raise UserError("--duration must be positive")
        if self.threads is not None and self.threads < 1:
            raise UserError("--threads must be at least 1")
        if self.interpreters is not None and not 1 <= self.interpreters <= MAX_INTERPRETERS:
            raise UserError(f"--interpreters must be between 1 and {MAX_INTERPRETERS}, got {self.interpreters}")
        if self.reconnect_initial <= 0 or self.reconnect_max < self.reconnect_initial:
            raise UserError("--reconnect-initial must be positive and at most --reconnect-max")
        if self.stall_timeout is not None and self.stall_timeout <= 0:
            raise UserError("--stall-timeout must be positive")
        if self.status_interval <= 0:
            raise UserError("--status-interval must be positive")
        if (self.max_disk_mb or 0) < 0 or (self.keep_days or 0) < 0:
            raise UserError("--max-disk-mb and --keep-days must be 0 (no limit) or more")
        if self.rotate not in ROTATIONS:
            raise UserError(f"--rotate takes 0, 90, 180 or 270, not {self.rotate}")
        if self.resolution is not None:
            from edge.sources import parse_size

            parse_size(self.resolution, "--resolution")
        if self.events is not None:
            check_output_path(self.events, "--events")
        _check_snapshot_folder(self.snapshots)
        if self.collect is not None:
            self.collect_options().validate()
        self.sink_options().validate()
        if self.serve is not None:
            self.preview_options().validate()
        elif self.serve_token is not None:
            raise UserError("--serve-token needs --serve")


def _check_snapshot_folder(path: Path | None) -> None:
    """--snapshots must be (or become) a folder: not a file, not under one."""
    if path is None:
        return
    for candidate in (path, *path.parents):
        if candidate.exists():
            if not candidate.is_dir():
                raise UserError(f"--snapshots {path}: {candidate} is a file, not a folder")
            return


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
    truncated: tuple[int, int] | None = None  # (frames read, frames announced) of a cut-off video
    write_failures: int = 0  # failed attempts to write an event line or a snapshot (retried)
    lost_writes: int = 0  # event lines and snapshots given up on
    pruned_files: int = 0  # old events files and snapshots deleted for the disk budget
    collected: int = 0  # --collect: frames saved for labelling
    snapshot_paths: list[Path] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def exit_code(self) -> int:
        """0; 1 when a live source could no longer be read, a video was cut off or events or
        snapshots could not be written in the end (a full disk: systemd's Restart=on-failure
        starts it again); EXIT_STALLED (3) when no frame came in time."""
        code = EXIT_CODES.get(self.stop_reason, EXIT_OK)
        return EXIT_RUNTIME if code == EXIT_OK and self.lost_writes else code

    def line(self) -> str:
        text = (f"stream: {self.frames} frames from {self.source} in {self.elapsed_s:.1f} s "
                f"({self.fps:.1f} FPS), {self.events} event{'s' if self.events != 1 else ''}, "
                f"{self.dropped} dropped, {self.reconnects} reconnect{'s' if self.reconnects != 1 else ''}")
        if self.truncated is not None:
            text += f", video cut off after {self.truncated[0]} of {self.truncated[1]} frames"
        if self.write_failures or self.lost_writes:
            text += f", {self.write_failures} failed write(s), {self.lost_writes} lost"
        if self.pruned_files:
            text += f", {self.pruned_files} old file(s) pruned"
        if self.collected:
            text += f", {self.collected} frame(s) collected for labelling"
        return text + f"; stopped by {self.stop_reason}"


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


def opencv_gui() -> str | None:
    """The GUI backend OpenCV was built with (GTK, QT, ...), None for a headless build."""
    import re

    import cv2

    match = re.search(r"^\s*GUI:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    backend = match.group(1) if match else "NONE"
    return None if backend.upper() == "NONE" else backend


def _check_show_possible() -> None:
    """--show needs a GUI build of OpenCV and a display; say so before anything is loaded."""
    if opencv_gui() is None:
        raise UserError("--show needs an OpenCV built with a GUI and opencv-python-headless has none; "
                        "on a desktop install opencv-python instead, or run without --show")
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise UserError("--show needs a desktop session (neither DISPLAY nor WAYLAND_DISPLAY is set); "
                        "run without --show on a headless device")


def _open_window() -> None:
    import cv2

    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    except cv2.error as exc:
        raise UserError(f"--show cannot open a window: {str(exc).strip().splitlines()[-1]}") from None


def _model_image(frame):
    """The picture the model sees: the camera's lores frame when it has one, else the frame."""
    return frame.image if frame.small is None else frame.small


def run_stream(options: StreamOptions, stop: threading.Event | None = None,
               on_frame: Callable[[int, float], None] | None = None) -> StreamSummary:
    """Run until the source ends, a bound is reached, the source stalls, or ``stop`` is set
    (SIGINT/SIGTERM set it too when called on the main thread). Returns what happened; never
    raises for a lost stream or a failed write. ``on_frame(frame_index, probability)`` is called
    after each scored frame (bench times it)."""
    options.validate()
    if options.show:
        _check_show_possible()
    return _StreamRun(options, stop, on_frame).run()


class _StreamRun:
    """One run of the stream: the state the frame loop, the events and housekeeping share."""

    def __init__(self, options: StreamOptions, stop: threading.Event | None,
                 on_frame: Callable[[int, float], None] | None) -> None:
        from edge.capture import Capture
        from edge.classifier import CrackClassifier
        from edge.disk_budget import DiskBudget
        from edge.events import Debouncer
        from edge.health import cpu_info
        from edge.scoring_pool import InlineScorer, ScoringPool, plan_for
        from edge.sources import Backoff, check_source, frame_transform, parse_source, with_resolution
        from edge.systemd_notify import SystemdNotifier
        from edge.tiling import TileGrid
        from edge.verify import startup_check

        self.options = options
        self.on_frame = on_frame
        self.spec = with_resolution(parse_source(options.source), options.resolution)
        self.grid = TileGrid.parse(options.tiles, options.tile_size, options.stride)
        check_source(self.spec)  # a missing file, no GStreamer: before the model is loaded
        backoff = Backoff(options.reconnect_initial, options.reconnect_max)
        self.budget = DiskBudget.from_options(options.max_disk_mb, options.keep_days)
        plan = plan_for(options.model, options.interpreters, options.threads)  # threads of each
        self.classifier = CrackClassifier(options.model, threads=plan[0])
        self.verify = startup_check(self.classifier, options.require_verified)  # before any output
        (log.info if self.verify.passed else log.warning)("%s", self.verify.line)
        contract = self.classifier.contract
        if options.threshold is not None:
            contract = contract.with_threshold(options.threshold)
        self.contract = contract
        self.threshold = contract.threshold
        size = contract.input_size
        if self.spec.kind == "picamera2" and self.grid.is_whole_frame and size % 2 == 0:
            # the camera's ISP scales a lores stream to the model's input; the full frame is
            # kept for snapshots (tiles need the full frame: no lores with --tiles)
            self.spec = dataclasses.replace(self.spec, lores=(size, size))
        self.cpu = cpu_info()
        log.info("model %s (input %d, threshold %.3f, %s, %d interpreter(s), threads %s), source %s; %s",
                 options.model, contract.input_size, self.threshold, self.classifier.backend.describe(),
                 len(plan), "+".join(map(str, plan)), self.spec.describe(), self.cpu.line())
        self.summary = StreamSummary(source=self.spec.describe())
        self.flag = _StopFlag(stop)
        self.debouncer = Debouncer(options.min_frames)
        self.capture = Capture(self.spec, backoff,
                               transform=frame_transform(options.rotate, options.hflip, options.vflip),
                               prepare=self._model_input)
        if len(plan) == 1:  # scored on this thread
            self.scorer = InlineScorer(self.capture, self.classifier, self._model_score)
        else:  # the others are the same model: no second card read or start-up check
            more = [CrackClassifier(options.model, threads=threads, contract=self.classifier.contract,
                                    kernels=self.classifier.kernels) for threads in plan[1:]]
            self.scorer = ScoringPool(self.capture, [self.classifier, *more], self._model_score)
        self.notifier = SystemdNotifier.from_environment()
        self.writer = None
        self.snapshots = None
        self.sinks = None  # edge.event_sinks.EventSinks with --webhook/--mqtt
        self.preview = None  # edge.preview_server.PreviewServer with --serve
        self.collector = None  # edge.collect.Collector with --collect
        self.done_times: deque[float] = deque(maxlen=FPS_WINDOW)
        self.last = None  # the last Observation
        self.ready_sent = False
        self.last_ping = float("-inf")
        self.stalled_reported = False

    # --- the frame loop ------------------------------------------------------------------------

    def run(self) -> StreamSummary:
        import cv2

        options = self.options
        started = time.monotonic()
        try:
            with _stop_on_signals(self.flag):
                if options.show:
                    _open_window()
                self.capture.start()  # a bad file, no picamera2, no GStreamer: UserError here
                self.scorer.start()
                self._open_outputs()
                started = time.monotonic()  # --duration and --stall-timeout count from here
                next_housekeeping = started + HOUSEKEEPING_SECONDS
                next_status = started + options.status_interval
                next_prune = started + PRUNE_SECONDS
                while not self.flag.is_set():
                    now = time.monotonic()
                    if options.duration is not None and now - started >= options.duration:
                        self.flag.set("duration")
                        break
                    if now >= next_housekeeping:
                        self._housekeeping(started)
                        next_housekeeping = now + HOUSEKEEPING_SECONDS
                    if now >= next_status:
                        log.info("%s", self._status_line())
                        next_status = now + options.status_interval
                    if now >= next_prune:
                        self._prune()
                        next_prune = now + PRUNE_SECONDS
                    if self._stalled(now, started):
                        self.flag.set("stalled")
                        break
                    scored = self.scorer.get(timeout=POLL_SECONDS)
                    if scored is None:
                        if self.scorer.ended:
                            self.flag.set(self._end_reason())
                            break
                        continue
                    annotated = self._handle(*scored)
                    if options.show and annotated is not None:
                        cv2.imshow(WINDOW, annotated)
                        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                            self.flag.set("q key")
                    if options.max_frames is not None and self.summary.frames >= options.max_frames:
                        self.flag.set("max frames")
        finally:
            self._finish(started)
        log.info("stopped by %s", self.summary.stop_reason)
        return self.summary

    def _open_outputs(self) -> None:
        from edge.events import EventWriter
        from edge.snapshots import SnapshotWriter

        options = self.options
        if options.snapshots is not None:
            options.snapshots.mkdir(parents=True, exist_ok=True)
            self.snapshots = SnapshotWriter(options.snapshots)
        if options.events is not None:
            options.events.parent.mkdir(parents=True, exist_ok=True)
            self.writer = EventWriter(options.events, rotate_bytes=self.budget.rotate_bytes)
        if options.serve is not None:
            from edge.preview_server import PreviewServer

            self.preview = PreviewServer(options.preview_options(), options.snapshots, {
                "model": options.model.name, "source": self.spec.describe(), "threshold": round(self.threshold, 4),
                "verify": self.verify.status})
        if options.sink_options().enabled:
            from edge.event_sinks import EventSinks

            self.sinks = EventSinks(options.sink_options(), options.events, options.snapshots,
                                    self.preview.snapshot_url if self.preview is not None else None)
        if options.collect is not None:
            from edge.collect import Collector

            self.collector = Collector(options.collect_options(), self.contract)
        self._prune()

    def _model_input(self, frame):
        """On the capture thread, for every frame read: the model's input (colour, resize, tiles;
        ``edge.tiling.prepare_frame``), or None for a frame of many tiles, scored batch by batch."""
        from edge.tiling import prepare_frame

        return prepare_frame(_model_image(frame), self.grid, self.classifier.input_size)

    def _model_score(self, frame, classifier):
        """The model's score of one frame, on the scorer's thread (edge/scoring_pool.py)."""
        from edge.preprocess import frame_to_rgb
        from edge.tiling import score_frame

        if frame.model_input is not None:  # made on the capture thread (_model_input)
            return frame.model_input.score(classifier)
        # a frame of many tiles: made here, a batch at a time
        return score_frame(classifier, frame_to_rgb(_model_image(frame)), self.grid)

    def _handle(self, frame, score):
        """Feed the debouncer one scored frame, write what changed; the annotated frame when one
        was drawn (for --show and snapshots)."""
        from edge.events import Observation
        from edge.overlay import draw_overlay
        from edge.tiling import Box, FrameScore, TileScore

        options = self.options
        if frame.small is not None:  # the camera's lores stream, whole frame: its box is the full frame's
            height, width = frame.image.shape[:2]
            score = FrameScore(score.probability, [TileScore(Box(0, 0, width, height), score.probability)])
        positive = score.probability >= self.threshold
        boxes = [[t.box.x0, t.box.y0, t.box.x1 - t.box.x0, t.box.y1 - t.box.y0]
                 for t in score.tiles if t.probability >= self.threshold]
        self.last = Observation(frame.index, score.probability, positive, boxes,
                                datetime.fromtimestamp(frame.time, timezone.utc))
        change = self.debouncer.update(self.last)
        self.summary.frames += 1
        if self.on_frame is not None:
            self.on_frame(frame.index, score.probability)
        self.done_times.append(time.monotonic())
        self._frame_scored()
        if self.preview is not None:  # hands the frame over; drawn and encoded in the server's thread
            self.preview.offer(frame.image, score, self.threshold, self.contract.label_name(score.probability),
                               self._fps(), self.debouncer.current is not None)
        if options.verbose:
            log.debug("frame %d: p=%.4f%s", frame.index, score.probability, " crack" if positive else "")

        starts = change is not None and change.kind == "start"
        annotated = None
        if options.show or (starts and self.snapshots is not None):
            annotated = draw_overlay(frame.image, score, self.threshold,
                                     self.contract.label_name(score.probability), self._fps(),
                                     self.debouncer.current is not None)
        if starts:
            event = change.event
            self.summary.events += 1
            record = event.start_record()
            if self.snapshots is not None and annotated is not None:
                name = self.snapshots.save(event.event_id, frame.index, annotated)
                if name is not None:
                    record["snapshot"] = name
            self._record(record)
            log.info("crack event %d started at frame %d (p=%.3f)", event.event_id,
                     event.opened.frame_index, event.opened.probability)
        elif change is not None:
            self._record(change.event.end_record())
            log.info("crack event %d ended at frame %d (peak p=%.3f, %d frames)", change.event.event_id,
                     frame.index, change.event.peak_probability, change.event.frames)
        if self.collector is not None:  # frames to label: near the threshold, and each event's
            event = self.debouncer.current
            self.collector.offer_frame(frame.image, score.probability, event.event_id if event else None)
        return annotated

    def _record(self, data: dict) -> None:
        if self.sinks is not None:
            self.sinks.publish(data)
        if self.preview is not None:
            self.preview.add_event(data)
        if self.writer is not None:
            self.writer.write(data)
            if self.writer.rotations:
                self.writer.rotations = 0
                self._prune()

    def _fps(self) -> float | None:
        times = self.done_times
        if len(times) > 1 and times[-1] > times[0]:
            return (len(times) - 1) / (times[-1] - times[0])
        return None

    def _end_reason(self) -> str:
        if self.capture.truncated is not None:
            return "truncated video"
        if self.capture.finite:
            return "end of video" if self.spec.kind == "file" else "end of stream"
        return "source closed"

    # --- watchdog, status, disk ---------------------------------------------------------------

    def _frame_scored(self) -> None:
        """READY once (model loaded, first frame scored), then WATCHDOG=1 while frames come."""
        now = time.monotonic()
        if not self.ready_sent:
            self.ready_sent = True
            self.notifier.notify("READY=1", f"STATUS={self._status_short()}")
            log.info("first frame scored: ready")
        self.stalled_reported = False
        interval = self.notifier.watchdog_interval
        if interval is not None and now - self.last_ping >= interval:
            self.notifier.notify("WATCHDOG=1")
            self.last_ping = now

    def _stalled(self, now: float, started: float) -> bool:
        """True when --stall-timeout has passed without a frame from the source."""
        silent_for = now - (self.capture.last_frame_at or started)
        if silent_for >= max(2 * POLL_SECONDS, 1.0) and not self.stalled_reported:
            self.stalled_reported = True  # no WATCHDOG now; say why in systemctl status
            self.notifier.notify(f"STATUS=no frame from {self.spec.describe()} for {silent_for:.0f} s")
        timeout = self.options.stall_timeout
        if timeout is None or silent_for < timeout:
            return False
        log.error("no frame from %s for %.0f s (--stall-timeout %g): exiting with code %d so that the "
                  "service manager restarts it", self.spec.describe(), silent_for, timeout, EXIT_STALLED)
        return True

    def _housekeeping(self, started: float) -> None:
        if self.writer is not None:
            self.writer.retry()
        if self.snapshots is not None:
            self.snapshots.retry()
        if self.ready_sent and not self.stalled_reported:
            self.notifier.notify(f"STATUS={self._status_short()}")

    def _status_short(self) -> str:
        """systemd's STATUS: fps, the last probability, the temperature."""
        from edge.health import temperature_c

        fps = self._fps()
        temperature = temperature_c()
        return (f"{fps or 0.0:.1f} fps, last p={self.last.probability if self.last else 0.0:.3f}, "
                + (f"{temperature:.1f} C, " if temperature is not None else "")
                + f"{self.summary.events} event(s), {self.summary.frames} frames")

    def _status_line(self) -> str:
        """The periodic log line: progress, health and the disk."""
        from edge.health import read_health

        fps = self._fps()
        failures = self._write_counts()
        return (f"status: {self.summary.frames} frames, {fps or 0.0:.1f} FPS, last p="
                f"{self.last.probability if self.last else 0.0:.3f}, {self.summary.events} event(s), "
                f"{self.capture.dropped} dropped, {self.capture.reconnects} reconnect(s), "
                f"{failures[0]} failed write(s), verify {self.verify.state}; {read_health().line()}; "
                f"{self.cpu.line()}")

    def _write_counts(self) -> tuple[int, int]:
        failures = lost = 0
        for writer in (self.writer, self.snapshots):
            if writer is not None:
                failures += writer.failures
                lost += writer.lost
        return failures, lost

    def _prune(self) -> None:
        from edge.disk_budget import prune
        from edge.events import rotated_files

        candidates, protected = [], []
        if self.options.events is not None:
            candidates += rotated_files(self.options.events)
            protected.append(self.options.events)
        if self.options.snapshots is not None and self.options.snapshots.is_dir():
            candidates += list(self.options.snapshots.glob("event_*.jpg"))
        if self.sinks is not None:  # snapshots of events not yet delivered stay
            undelivered = set(self.sinks.protected_paths())
            candidates = [path for path in candidates if path not in undelivered]
            protected += undelivered
        if not candidates:
            return
        result = prune(candidates, protected, self.budget)
        if result.removed:
            self.summary.pruned_files += result.removed
            log.info("disk budget: deleted the %d oldest file(s) (%.1f MB); %.1f MB in use", result.removed,
                     result.freed_bytes / 2**20, result.total_bytes / 2**20)

    # --- the end -------------------------------------------------------------------------------

    def _finish(self, started: float) -> None:
        import cv2

        self.scorer.stop()  # each worker finishes the invoke it is in
        self.capture.stop()
        self.notifier.notify("STOPPING=1")
        open_event = self.debouncer.finish(self.last, reason="shutdown")
        if open_event is not None:
            self._record(open_event.end_record())
            log.info("crack event %d closed at shutdown", open_event.event_id)
        if self.writer is not None:
            self.writer.close()
        if self.snapshots is not None:
            self.snapshots.close()
            self.summary.snapshot_paths = list(self.snapshots.written)
        if self.collector is not None:
            self.collector.close()
            self.summary.collected = self.collector.saved
        self._prune()  # the last snapshots and rotations fit the budget too
        if self.sinks is not None:
            self.sinks.close()
        if self.preview is not None:
            self.preview.close()
        if self.options.show:
            cv2.destroyAllWindows()
        summary = self.summary
        summary.elapsed_s = time.monotonic() - started
        summary.frames_read = self.capture.frames_read
        summary.dropped = self.capture.dropped
        summary.reconnects = self.capture.reconnects
        summary.truncated = self.capture.truncated
        summary.write_failures, summary.lost_writes = self._write_counts()
        summary.stop_reason = self.flag.reason or "an error"
