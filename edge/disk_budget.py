"""Keeping the stream's files within a disk budget: oldest first, never the file being written.

The events file is rotated by ``EventWriter``; its rotated parts and the snapshots are what
``prune`` may delete: first everything older than ``keep_days``, then the oldest files until the
whole (the live events file included) fits in ``max_bytes``. The defaults suit a small SD card.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("crack.edge")

DEFAULT_MAX_DISK_MB = 500.0
DEFAULT_KEEP_DAYS = 30.0
MB = 1024 * 1024
ROTATE_FRACTION = 20  # the events file is rotated at 1/20 of the budget...
ROTATE_MIN_BYTES, ROTATE_MAX_BYTES = 4096, 16 * MB  # ...within these bounds


@dataclass(frozen=True)
class DiskBudget:
    max_bytes: int | None = int(DEFAULT_MAX_DISK_MB * MB)
    keep_seconds: float | None = DEFAULT_KEEP_DAYS * 86400

    @classmethod
    def from_options(cls, max_disk_mb: float | None, keep_days: float | None) -> "DiskBudget":
        """0 or None turns a limit off."""
        return cls(int(max_disk_mb * MB) if max_disk_mb else None, keep_days * 86400 if keep_days else None)

    @property
    def rotate_bytes(self) -> int:
        if self.max_bytes is None:
            return ROTATE_MAX_BYTES
        return max(ROTATE_MIN_BYTES, min(ROTATE_MAX_BYTES, self.max_bytes // ROTATE_FRACTION))


@dataclass
class PruneResult:
    removed: int = 0
    freed_bytes: int = 0
    total_bytes: int = 0  # what is left, the protected files included


def prune(candidates: list[Path], protected: list[Path], budget: DiskBudget,
          now: float | None = None) -> PruneResult:
    """Delete ``candidates`` (files that may go) older than the budget's age, then the oldest
    until ``candidates`` and ``protected`` together fit in its size. A file that cannot be
    deleted is logged and skipped."""
    now = time.time() if now is None else now
    files = []
    for path in candidates:
        try:
            info = path.stat()
        except OSError:
            continue
        files.append((info.st_mtime, path.name, path, info.st_size))
    files.sort()
    total = sum(size for *_, size in files) + sum(_size(path) for path in protected)
    result = PruneResult()
    for mtime, _name, path, size in files:
        too_old = budget.keep_seconds is not None and now - mtime > budget.keep_seconds
        too_big = budget.max_bytes is not None and total > budget.max_bytes
        if not (too_old or too_big):
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("cannot delete %s to free disk space: %s", path, exc.strerror or exc)
            continue
        total -= size
        result.removed += 1
        result.freed_bytes += size
    result.total_bytes = total
    return result


def _size(path: Path) -> int:
    try:
        return path.stat().st_size if path.is_file() else 0
    except OSError:
        return 0
