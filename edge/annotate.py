"""Photos with their result drawn on them, for an inspector: the stream's overlay (``edge.overlay``:
label and probability in a banner, each crack tile as a translucent heat-map patch with a box).

- ``annotate(rgb, row, threshold)``: an annotated BGR copy of an upright photo (``edge.preprocess``
  turns photos upright, so the row's tile boxes fit it);
- ``AnnotatedPhotos``: ``crack-edge score --save-annotated DIR``, which writes each crack photo
  as a JPEG in a background thread while scoring goes on;
- ``annotated_path``: where a photo's annotated copy goes: its path below DIR (``/``, ``.`` and
  ``..`` dropped, so nothing lands outside DIR), ``.jpg`` added unless it ends in .jpg/.jpeg.

Tile boxes are in the pixels of the image that was scored; they are scaled to the image drawn on
by the extent they cover (tiles cover the whole image), so a thumbnail or a photo decoded at
another scale gets them in the right place.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path, PurePath

import cv2
import numpy as np

from edge.atomic_files import write_bytes_atomic
from edge.errors import UserError, first_line
from edge.image_header import DEFAULT_MAX_PIXELS
from edge.overlay import draw_overlay
from edge.preprocess import load_image
from edge.results_file import Row
from edge.tiling import Box, FrameScore, TileScore

MAX_SIDE = 4096  # an annotated photo is shrunk to this on its long side (a 48 MP photo to 12 MP)
JPEG_QUALITY = 90
QUEUE_SIZE = 4  # crack photos waiting for the writer; scoring waits when it is full


def scaled_tiles(row: Row, width: int, height: int) -> list[TileScore]:
    """The row's tiles in the pixels of a ``width`` x ``height`` picture of the same photo."""
    if not row.tiles:
        return []
    extent_x = max(tile[2] for tile in row.tiles) or 1
    extent_y = max(tile[3] for tile in row.tiles) or 1
    sx, sy = width / extent_x, height / extent_y
    return [TileScore(Box(round(x0 * sx), round(y0 * sy), round(x1 * sx), round(y1 * sy)), p)
            for x0, y0, x1, y1, p in row.tiles]


def shrunk(rgb: np.ndarray, longest: int) -> np.ndarray:
    """``rgb`` resized (INTER_AREA) so that its long side is at most ``longest``."""
    height, width = rgb.shape[:2]
    scale = longest / max(height, width)
    if scale >= 1:
        return rgb
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def annotate(rgb: np.ndarray, row: Row, threshold: float) -> np.ndarray:
    """An annotated BGR copy of the upright photo ``rgb``: banner and tile heat map."""
    height, width = rgb.shape[:2]
    score = FrameScore(row.probability or 0.0, scaled_tiles(row, width, height))
    return draw_overlay(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), score, threshold, row.label)


def annotated_path(folder: Path, photo: str) -> Path:
    parts = [part for part in PurePath(photo).parts if part not in ("/", ".", "..")]
    name = parts[-1] if parts else "photo"
    if not name.lower().endswith((".jpg", ".jpeg")):
        name += ".jpg"
    return Path(folder, *parts[:-1], name)


class AnnotatedPhotos:
    """Writes an annotated JPEG of every crack row given to ``add`` below ``folder``, one at a time
    in a background thread. A photo that cannot be read or written is counted, never fatal: the
    results file is what a run must deliver."""

    def __init__(self, folder: Path, threshold: float,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.folder, self.threshold, self.max_pixels = Path(folder), threshold, max_pixels
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create --save-annotated {folder}: "
                            f"{exc.strerror or exc}") from None
        self.saved = 0
        self.failed = 0
        self.first_failure = ""
        self._queue: queue.Queue[Row | None] = queue.Queue(maxsize=QUEUE_SIZE)
        self._thread: threading.Thread | None = None  # started by the first crack

    def add(self, rows: list[Row]) -> None:
        for row in rows:
            if not row.error and row.probability is not None and row.probability >= self.threshold:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._work, name="annotate", daemon=True)
                    self._thread.start()
                self._queue.put(row)

    def close(self) -> str:
        """Wait for the photos queued so far; the summary line."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        line = f"saved {self.saved} annotated crack photo(s) in {self.folder}"
        if self.failed:
            line += f"; {self.failed} could not be saved (first: {self.first_failure})"
        return line

    def _work(self) -> None:
        while (row := self._queue.get()) is not None:
            try:
                self.save(row)
                self.saved += 1
            except Exception as exc:  # unreadable photo, full disk: counted, the run goes on
                self.failed += 1
                self.first_failure = self.first_failure or f"{row.path}: {first_line(exc)}"

    def save(self, row: Row) -> Path:
        rgb = shrunk(load_image(row.path, self.max_pixels), MAX_SIDE)
        ok, jpeg = cv2.imencode(".jpg", annotate(rgb, row, self.threshold),
                                [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise ValueError("JPEG encoding failed")
        target = annotated_path(self.folder, row.path)
        write_bytes_atomic(target, jpeg.tobytes())
        return target
