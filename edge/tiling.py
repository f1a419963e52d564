"""Scoring a large frame as a grid of tiles: cracks are thin, and a 1080p frame squeezed to the
model's input hides them. The frame's probability is the maximum over its tiles.

Bounded on purpose: at most ``MAX_TILES`` tiles per frame (``--tiles 100x100`` is refused when
given; ``--tile-size`` that would cut one image into more is an error for that image), tiles go
to the interpreter ``TILE_BATCH`` at a time, and ``--tiles RxC`` on an image with fewer pixels
than that is clamped to one tile per pixel row/column."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from edge.classifier import CrackClassifier
from edge.errors import UserError
from edge.preprocess import frame_to_rgb, resize_for_model

# Per frame. Memory does not grow with the count (tiles go TILE_BATCH at a time), time does: 224 px
# tiles at stride 112 on a 48 MP photo are 3763; --tile-size 1 on 480x320 would be 153600.
MAX_TILES = 4096
TILE_BATCH = 16  # tiles per invoke: the interpreter's memory grows with its batch
PREPARE_AHEAD_TILES = 4 * TILE_BATCH  # at most this many tiles of a frame are prepared at once


class TooManyTiles(UserError):
    """``--tile-size``/``--stride`` would cut this image into more than MAX_TILES tiles."""


@dataclass(frozen=True)
class Box:
    x0: int
    y0: int
    x1: int
    y1: int

    def as_list(self) -> list[int]:
        return [self.x0, self.y0, self.x1, self.y1]

    def reduced(self, reduction: int) -> "Box":
        """This box in the image decoded at 1/``reduction`` scale (every pixel it touches)."""
        if reduction == 1:
            return self
        return Box(self.x0 // reduction, self.y0 // reduction,
                   -(-self.x1 // reduction), -(-self.y1 // reduction))


@dataclass(frozen=True)
class TileGrid:
    """Either rows x cols equal tiles, or square tiles of ``tile_size`` every ``stride`` pixels."""

    rows: int = 1
    cols: int = 1
    tile_size: int | None = None
    stride: int | None = None

    @classmethod
    def parse(cls, tiles: str | None = None, tile_size: int | None = None,
              stride: int | None = None) -> "TileGrid":
        if tiles and tile_size:
            raise UserError("give either --tiles RxC or --tile-size, not both")
        if tile_size is not None:
            if tile_size <= 0 or (stride is not None and stride <= 0):
                raise UserError("--tile-size and --stride must be positive")
            return cls(tile_size=tile_size, stride=stride or tile_size)
        if stride is not None:
            raise UserError("--stride goes with --tile-size")
        if not tiles:
            return cls()
        match = re.fullmatch(r"\s*(\d{1,6})\s*[xX]\s*(\d{1,6})\s*", tiles)
        if not match or int(match.group(1)) < 1 or int(match.group(2)) < 1:
            raise UserError(f"--tiles takes ROWSxCOLS such as 2x3, not {tiles!r}")
        rows, cols = int(match.group(1)), int(match.group(2))
        if rows * cols > MAX_TILES:
            raise UserError(f"--tiles {rows}x{cols} is {rows * cols} tiles per image; at most "
                            f"{MAX_TILES}")
        return cls(rows=rows, cols=cols)

    @property
    def is_whole_frame(self) -> bool:
        return self.tile_size is None and self.rows == 1 and self.cols == 1

    def describe(self) -> str:
        """"whole", "2x3" or "tile 224 stride 112" (the ``tiles`` of a results file's identity)."""
        if self.tile_size is not None:
            return f"tile {self.tile_size} stride {self.stride}"
        return "whole" if self.is_whole_frame else f"{self.rows}x{self.cols}"

    def boxes(self, height: int, width: int) -> list[Box]:
        """Tile boxes covering the whole frame (the last row/column is aligned to the edge).
        Raises TooManyTiles when ``tile_size`` would need more than MAX_TILES."""
        if self.tile_size is None:
            rows, cols = min(self.rows, height), min(self.cols, width)  # no empty tiles
            ys = np.linspace(0, height, rows + 1).round().astype(int)
            xs = np.linspace(0, width, cols + 1).round().astype(int)
            return [Box(int(xs[c]), int(ys[r]), int(xs[c + 1]), int(ys[r + 1]))
                    for r in range(rows) for c in range(cols)]
        size_y, size_x = min(self.tile_size, height), min(self.tile_size, width)
        ys = window_starts(height, size_y, self.stride)
        xs = window_starts(width, size_x, self.stride)
        if len(ys) * len(xs) > MAX_TILES:
            raise TooManyTiles(
                f"a {width}x{height} image needs {len(ys) * len(xs)} tiles of {self.tile_size} px "
                f"at stride {self.stride}, over the limit of {MAX_TILES}; use a larger "
                "--tile-size or --stride")
        return [Box(x, y, x + size_x, y + size_y) for y in ys for x in xs]


def window_starts(length: int, size: int, stride: int) -> list[int]:
    """Start offsets of windows of ``size`` every ``stride`` along ``length``, plus one flush with
    the far edge so that the whole length is covered; [] when ``length`` is shorter than ``size``.
    The one window-start function of the project (tiles here, training patches)."""
    if length < size or size < 1 or stride < 1:
        return []
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


@dataclass(frozen=True)
class TileScore:
    box: Box
    probability: float


@dataclass(frozen=True)
class FrameScore:
    probability: float  # max over tiles
    tiles: list[TileScore]


def frame_boxes(grid: TileGrid, height: int, width: int) -> list[Box]:
    """The boxes a frame is scored in: the whole frame, or the grid's tiles."""
    return [Box(0, 0, width, height)] if grid.is_whole_frame else grid.boxes(height, width)


def _tile_batches(rgb: np.ndarray, boxes: list[Box], size: int) -> Iterator[np.ndarray]:
    """The tiles resized for the model, TILE_BATCH at a time, each batch made when it is wanted."""
    for first in range(0, len(boxes), TILE_BATCH):
        yield np.stack([resize_for_model(rgb[b.y0:b.y1, b.x0:b.x1], size)
                        for b in boxes[first:first + TILE_BATCH]])


def score_frame(classifier: CrackClassifier, rgb: np.ndarray, grid: TileGrid, reduction: int = 1,
                full_size: tuple[int, int] | None = None) -> FrameScore:
    """Score an RGB frame: every tile resized for the model, TILE_BATCH tiles per invoke. A photo
    decoded at 1/``reduction`` scale (edge.preprocess) is scored in the boxes of its full
    ``full_size`` (height, width), which the result reports, each cut from ``rgb`` at that scale."""
    boxes = frame_boxes(grid, *(full_size or rgb.shape[:2]))
    cuts = [box.reduced(reduction) for box in boxes]
    return score_batches(classifier, boxes, _tile_batches(rgb, cuts, classifier.input_size))


def score_batches(classifier: CrackClassifier, boxes: list[Box], batches: Iterable[np.ndarray]) -> FrameScore:
    """Invoke the model on each batch of tile pixels: the frame's score, the max over ``boxes``."""
    probabilities = np.concatenate([classifier.predict(batch) for batch in batches])
    tiles = [TileScore(box, float(p)) for box, p in zip(boxes, probabilities)]
    return FrameScore(float(probabilities.max()), tiles)


@dataclass(frozen=True)
class ModelInput:
    """A frame made ready for the model ahead of scoring: its boxes and their pixels in (N, size,
    size, 3) uint8 RGB batches of at most TILE_BATCH tiles, what ``score_frame`` would invoke on."""

    boxes: list[Box]
    batches: list[np.ndarray]

    def score(self, classifier: CrackClassifier) -> FrameScore:
        return score_batches(classifier, self.boxes, self.batches)


def prepare_frame(frame_bgr: np.ndarray, grid: TileGrid, size: int,
                  max_tiles: int = PREPARE_AHEAD_TILES) -> ModelInput | None:
    """A BGR camera or video frame -> its ModelInput: the same pixels that ``score_frame`` makes of
    ``frame_to_rgb(frame_bgr)``, made wherever the caller likes (the stream: on its capture thread,
    so that the scoring thread goes from invoke to invoke).

    None for a frame of more than ``max_tiles`` tiles (or too many to score at all): holding all of
    them at once would take the memory that ``score_frame``'s batch at a time avoids, so such a
    frame is left to ``score_frame`` (which also raises TooManyTiles).

    An 8-bit frame whose model inputs have fewer pixels than the frame itself (almost always) is
    cut and resized first and colour-converted after: both steps work per pixel and channel, so
    the order changes no value (tests/test_stream_pipeline.py checks it), only the work."""
    height, width = frame_bgr.shape[:2]
    try:
        boxes = frame_boxes(grid, height, width)
    except TooManyTiles:
        return None
    if len(boxes) > max_tiles:
        return None
    if frame_bgr.dtype == np.uint8 and len(boxes) * size * size < height * width:
        tiles = [frame_to_rgb(resize_for_model(frame_bgr[b.y0:b.y1, b.x0:b.x1], size)) for b in boxes]
        return ModelInput(boxes, [np.stack(tiles[first:first + TILE_BATCH])
                                  for first in range(0, len(tiles), TILE_BATCH)])
    return ModelInput(boxes, list(_tile_batches(frame_to_rgb(frame_bgr), boxes, size)))
