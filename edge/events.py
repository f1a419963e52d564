"""Crack events from per-frame results: one crack in view is one event, not a flood of alerts.

``Debouncer``: an event opens on the ``min_frames``-th consecutive positive frame and closes on
the ``min_frames``-th consecutive negative one; shorter runs either way are noise. ``EventWriter``
appends one JSON object per line (flushed at once, so ``tail -f`` and a crash both see it):

    {"event": "crack_start", "id", "event_id", "time", "frame_index", "first_frame_index",
     "probability", "boxes": [[x, y, w, h], ...], "snapshot" (file name, with --snapshots)}
    {"event": "crack_end", "id", "event_id", "time", "frame_index", "first_frame_index",
     "last_frame_index", "peak_probability", "frames", "duration_s", "reason"}

``frame_index`` is the frame at which the event opened (start) or closed (end); ``first/last_frame
_index`` are its first and last positive frames; ``frames`` counts the frames processed from the
first to the last positive one; ``reason`` is "clear" (enough negative frames) or "shutdown".
``event_id`` counts events from 1 in every run; ``id`` is unique across runs and restarts (the
run's id, made from the start time and random bits, then the event number and start/end:
``20250101T120000Z-3fa9c2-0001-start``), so a receiver of delivered events drops repeats by it.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

log = logging.getLogger("crack.edge")


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Observation:
    """One processed frame."""

    frame_index: int
    probability: float
    positive: bool
    boxes: list[list[int]] = field(default_factory=list)  # [x, y, w, h] of the positive tiles
    time: datetime = field(default_factory=utc_now)


@dataclass
class CrackEvent:
    event_id: int
    first: Observation  # first positive frame of the run that opened it
    opened: Observation  # the frame on which it opened
    peak_probability: float
    last_positive: Observation
    frames: int  # processed frames from the first to the last positive one
    closed: Observation | None = None
    reason: str | None = None
    run_id: str = ""  # the Debouncer's run: makes ``id`` unique across restarts

    def record_id(self, kind: str) -> str:
        return f"{self.run_id}-{self.event_id:04d}-{kind}"

    def start_record(self) -> dict:
        return {
            "event": "crack_start",
            "id": self.record_id("start"),
            "event_id": self.event_id,
            "time": iso(self.opened.time),
            "frame_index": self.opened.frame_index,
            "first_frame_index": self.first.frame_index,
            "probability": round(self.opened.probability, 6),
            "boxes": self.opened.boxes,
        }

    def end_record(self) -> dict:
        assert self.closed is not None, "the event is still open"
        return {
            "event": "crack_end",
            "id": self.record_id("end"),
            "event_id": self.event_id,
            "time": iso(self.closed.time),
            "frame_index": self.closed.frame_index,
            "first_frame_index": self.first.frame_index,
            "last_frame_index": self.last_positive.frame_index,
            "peak_probability": round(self.peak_probability, 6),
            "frames": self.frames,
            "duration_s": round((self.last_positive.time - self.first.time).total_seconds(), 3),
            "reason": self.reason,
        }


@dataclass(frozen=True)
class EventChange:
    kind: Literal["start", "end"]
    event: CrackEvent


def new_run_id() -> str:
    """Unique per run, across restarts and devices: the UTC start time and 24 random bits."""
    return f"{utc_now():%Y%m%dT%H%M%SZ}-{os.urandom(3).hex()}"


class Debouncer:
    def __init__(self, min_frames: int = 3, run_id: str | None = None) -> None:
        if min_frames < 1:
            raise ValueError("min_frames must be at least 1")
        self.min_frames = min_frames
        self.run_id = run_id or new_run_id()
        self.events_opened = 0
        self.current: CrackEvent | None = None
        self._seen = 0  # frames observed so far
        self._run: list[tuple[int, Observation]] = []  # the positive run before an event opens
        self._negatives = 0  # consecutive negative frames while an event is open
        self._first_seen = 0  # when the open event's first positive frame was seen

    def update(self, observation: Observation) -> EventChange | None:
        self._seen += 1
        if self.current is None:
            return self._while_closed(observation)
        return self._while_open(observation)

    def finish(self, observation: Observation | None = None, reason: str = "shutdown") -> CrackEvent | None:
        """Close the open event, if any (at shutdown); ``observation`` is the last frame seen."""
        event = self.current
        if event is None:
            return None
        event.closed = observation or Observation(event.last_positive.frame_index, 0.0, False)
        event.reason = reason
        self.current = None
        self._negatives = 0
        return event

    def _while_closed(self, observation: Observation) -> EventChange | None:
        if not observation.positive:
            self._run.clear()
            return None
        self._run.append((self._seen, observation))
        if len(self._run) < self.min_frames:
            return None
        first_seen, first = self._run[0]
        self.events_opened += 1
        self.current = CrackEvent(
            event_id=self.events_opened, first=first, opened=observation,
            peak_probability=max(o.probability for _, o in self._run), last_positive=observation,
            frames=self._seen - first_seen + 1, run_id=self.run_id,
        )
        self._first_seen = first_seen
        self._run.clear()
        self._negatives = 0
        return EventChange("start", self.current)

    def _while_open(self, observation: Observation) -> EventChange | None:
        event = self.current
        assert event is not None
        if observation.positive:
            self._negatives = 0
            event.last_positive = observation
            event.peak_probability = max(event.peak_probability, observation.probability)
            event.frames = self._seen - self._first_seen + 1
            return None
        self._negatives += 1
        if self._negatives < self.min_frames:
            return None
        event.closed, event.reason = observation, "clear"
        self.current = None
        self._negatives = 0
        return EventChange("end", event)


class EventWriter:
    """Appends event records to a JSONL file, one line each, written with ``os.write`` at once
    (so ``tail -f`` and a crash both see it).

    A failed write (a full disk, an I/O error) never raises: it is logged and counted
    (``failures``), and the line stays queued and is written by the next ``write`` or ``retry``,
    from the byte where the failed write stopped, so a line is never torn or written twice. At
    most ``MAX_PENDING`` lines wait; beyond that the oldest are dropped and counted (``lost``).
    With ``rotate_bytes``, a file that has grown to that size is renamed to
    ``NAME.YYYYmmddTHHMMSSZ.jsonl`` (see ``rotated_files``) before the next line.
    """

    MAX_PENDING = 1000

    def __init__(self, path: str | Path, rotate_bytes: int | None = None) -> None:
        self.path = Path(path)
        self.rotate_bytes = rotate_bytes
        self.failures = 0
        self.lost = 0
        self.rotations = 0
        self._pending: deque[bytes] = deque()
        self._fd: int | None = None
        self._closed = False
        self._torn = False  # the file ends inside a line (a write stopped part way)
        self._open()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def write(self, record: dict) -> bool:
        """Queue one record and write what is queued; False if some of it is still waiting."""
        if self._closed:
            raise ValueError(f"{self.path} is closed")
        self._pending.append((json.dumps(record) + "\n").encode())
        while len(self._pending) > self.MAX_PENDING:
            self._pending.popleft()
            self.lost += 1
            log.error("event line dropped: %s could not be written for %d lines", self.path, self.MAX_PENDING)
        return self.retry()

    def retry(self) -> bool:
        """Write the queued lines; True when none is left."""
        while self._pending:
            try:
                if self._fd is None:
                    self._open()
                    if self._fd is None:
                        return False
                if not self._torn:
                    self._rotate_if_full()
                written = os.write(self._fd, self._pending[0])
            except OSError as exc:
                self.failures += 1
                log.warning("cannot write event to %s (%s); %d line(s) waiting, retried later "
                            "(failure %d)", self.path, exc.strerror or exc, len(self._pending), self.failures)
                return False
            if written < len(self._pending[0]):
                self._pending[0] = self._pending[0][written:]
                self._torn = True
            else:
                self._pending.popleft()
                self._torn = False
        return True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.retry():
            log.error("%d event line(s) could not be written to %s", len(self._pending), self.path)
            self.lost += len(self._pending)
            self._pending.clear()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _open(self) -> None:
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            self.failures += 1
            self._fd = None
            log.warning("cannot open %s (%s); events wait in memory and are retried",
                        self.path, exc.strerror or exc)

    def _rotate_if_full(self) -> None:
        if not self.rotate_bytes or self._fd is None:
            return
        info = os.fstat(self._fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size < self.rotate_bytes:
            return
        target = rotated_name(self.path, datetime.now(timezone.utc))
        os.close(self._fd)
        self._fd = None
        os.replace(self.path, target)
        self.rotations += 1
        log.info("events file reached %d bytes: moved to %s", info.st_size, target.name)
        self._open()

    def __enter__(self) -> "EventWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def rotated_name(path: Path, moment: datetime) -> Path:
    """events.jsonl -> events.20250101T120000Z.jsonl (_2, _3, ... within the same second)."""
    stamp = moment.strftime("%Y%m%dT%H%M%SZ")
    candidate, copy = path.with_name(f"{path.stem}.{stamp}{path.suffix}"), 1
    while candidate.exists():
        copy += 1
        candidate = path.with_name(f"{path.stem}.{stamp}_{copy}{path.suffix}")
    return candidate


def rotated_files(path: Path) -> list[Path]:
    """The files ``EventWriter`` rotated ``path`` to, oldest first."""
    return sorted(path.parent.glob(f"{path.stem}.*{path.suffix}"))
