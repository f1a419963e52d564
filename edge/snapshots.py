"""Snapshots of event starts: annotated JPEGs named after the event and frame.

A snapshot is encoded in memory and written atomically (``edge.atomic_files``), so a full disk
leaves no half JPEG. A failed write is logged and counted (``failures``) and the JPEG waits in
memory to be retried (``retry``); at most ``MAX_PENDING`` wait, older ones are dropped and counted
(``lost``).
"""

from __future__ import annotations

import logging
from collections import deque
from pathlib import Path

import cv2
import numpy as np

from edge.atomic_files import write_bytes_atomic

log = logging.getLogger("crack.edge")

JPEG_QUALITY = 90


class SnapshotWriter:
    MAX_PENDING = 8
    KEEP_NAMES = 100

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.written: deque[Path] = deque(maxlen=self.KEEP_NAMES)  # the newest snapshots written
        self.count = 0
        self.failures = 0
        self.lost = 0
        self._pending: deque[tuple[Path, bytes]] = deque()

    def save(self, event_id: int, frame_index: int, image: np.ndarray) -> str | None:
        """Write event_0001_frame_000123.jpg (a name left by an earlier run gets _2, _3, ...: event
        ids and frame indices start again at every run). Returns the file name, also when the
        write failed and waits for a retry; None if the image cannot be encoded."""
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            log.error("could not encode the snapshot of event %d", event_id)
            return None
        stem = f"event_{event_id:04d}_frame_{frame_index:06d}"
        path, copy = self.directory / f"{stem}.jpg", 1
        waiting = {pending for pending, _ in self._pending}
        while path.exists() or path in waiting:
            copy += 1
            path = self.directory / f"{stem}_{copy}.jpg"
        self._pending.append((path, encoded.tobytes()))
        while len(self._pending) > self.MAX_PENDING:
            dropped, _ = self._pending.popleft()
            self.lost += 1
            log.error("snapshot %s dropped: it could not be written", dropped.name)
        self.retry()
        return path.name

    def retry(self) -> bool:
        """Write the waiting snapshots; True when none is left."""
        while self._pending:
            path, payload = self._pending[0]
            try:
                write_bytes_atomic(path, payload)
            except OSError as exc:
                self.failures += 1
                log.warning("cannot write snapshot %s (%s); %d waiting, retried later (failure %d)",
                            path, exc.strerror or exc, len(self._pending), self.failures)
                return False
            self._pending.popleft()
            self.written.append(path)
            self.count += 1
        return True

    def close(self) -> None:
        if not self.retry():
            self.lost += len(self._pending)
            log.error("%d snapshot(s) could not be written to %s", len(self._pending), self.directory)
            self._pending.clear()
