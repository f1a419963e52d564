"""Scoring a large frame as a grid of tiles: cracks are thin, and a 1080p frame squeezed to the
model's input hides them. The frame's probability is the maximum over its tiles."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from edge.classifier import CrackClassifier
from edge.errors import UserError
from edge.preprocess import resize_for_model


@dataclass(frozen=True)
class Box:
    x0: int
    y0: int
    x1: int
    y1: int

    def as_list(self) -> list[int]:
        return [self.x0, self.y0, self.x1, self.y1]


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
        match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", tiles)
        if not match or int(match.group(1)) < 1 or int(match.group(2)) < 1:
            raise UserError(f"--tiles takes ROWSxCOLS such as 2x3, not {tiles!r}")
        return cls(rows=int(match.group(1)), cols=int(match.group(2)))

    @property
    def is_whole_frame(self) -> bool:
        return self.tile_size is None and self.rows == 1 and self.cols == 1

    def boxes(self, height: int, width: int) -> list[Box]:
        """Tile boxes covering the whole frame (the last row/column is aligned to the edge)."""
        if self.tile_size is None:
            ys = np.linspace(0, height, self.rows + 1).round().astype(int)
            xs = np.linspace(0, width, self.cols + 1).round().astype(int)
            return [Box(int(xs[c]), int(ys[r]), int(xs[c + 1]), int(ys[r + 1]))
                    for r in range(self.rows) for c in range(self.cols)]
        size_y, size_x = min(self.tile_size, height), min(self.tile_size, width)
        return [Box(x, y, x + size_x, y + size_y)
                for y in _starts(height, size_y, self.stride)
                for x in _starts(width, size_x, self.stride)]


def _starts(length: int, size: int, stride: int) -> list[int]:
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] + size < length:
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


def score_frame(classifier: CrackClassifier, rgb: np.ndarray, grid: TileGrid) -> FrameScore:
    """Score an RGB frame: every tile resized for the model, all tiles in one batched invoke."""
    height, width = rgb.shape[:2]
    boxes = [Box(0, 0, width, height)] if grid.is_whole_frame else grid.boxes(height, width)
    batch = np.stack([
        resize_for_model(rgb[b.y0:b.y1, b.x0:b.x1], classifier.input_size) for b in boxes
    ])
    probabilities = classifier.predict(batch)
    tiles = [TileScore(box, float(p)) for box, p in zip(boxes, probabilities)]
    return FrameScore(float(probabilities.max()), tiles)
