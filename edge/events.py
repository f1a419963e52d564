"""Crack events from per-frame results: one crack in view is one event, not a flood of alerts.

``Debouncer``: an event opens on the ``min_frames``-th consecutive positive frame and closes on
the ``min_frames``-th consecutive negative one; shorter runs either way are noise. ``EventWriter``
appends one JSON object per line (flushed at once, so ``tail -f`` and a crash both see it):

    {"event": "crack_start", "event_id", "time", "frame_index", "first_frame_index",
     "probability", "boxes": [[x, y, w, h], ...], "snapshot" (file name, with --snapshots)}
    {"event": "crack_end", "event_id", "time", "frame_index", "first_frame_index",
     "last_frame_index", "peak_probability", "frames", "duration_s", "reason"}

``frame_index`` is the frame at which the event opened (start) or closed (end); ``first/last_frame
_index`` are its first and last positive frames; ``frames`` counts the frames processed from the
first to the last positive one; ``reason`` is "clear" (enough negative frames) or "shutdown".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Literal


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

    def start_record(self) -> dict:
        return {
            "event": "crack_start",
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


class Debouncer:
    def __init__(self, min_frames: int = 3) -> None:
        if min_frames < 1:
            raise ValueError("min_frames must be at least 1")
        self.min_frames = min_frames
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
            frames=self._seen - first_seen + 1,
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
    """Appends event records to a JSONL file, one flushed line each."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle: IO[str] | None = self.path.open("a", encoding="utf-8")

    def write(self, record: dict) -> None:
        if self._handle is None:
            raise ValueError(f"{self.path} is closed")
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> "EventWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
