"""Drawing a frame's result on it: label, probability and FPS in a banner; every crack tile as a
translucent heat-map patch (colour by the tile's probability) with a box around it."""

from __future__ import annotations

import cv2
import numpy as np

from edge.tiling import FrameScore

HEAT_ALPHA = 0.4
CRACK_COLOUR = (0, 0, 255)  # BGR red
CLEAR_COLOUR = (0, 200, 0)  # BGR green


def heat_colour(probability: float) -> tuple[int, int, int]:
    """BGR colour of a probability on OpenCV's JET map (blue = 0 ... red = 1)."""
    level = np.uint8(round(min(max(probability, 0.0), 1.0) * 255))
    colour = cv2.applyColorMap(np.array([[level]], np.uint8), cv2.COLORMAP_JET)[0, 0]
    return int(colour[0]), int(colour[1]), int(colour[2])


def draw_overlay(frame_bgr: np.ndarray, score: FrameScore, threshold: float, label: str,
                 fps: float | None = None, event_open: bool = False) -> np.ndarray:
    """An annotated copy of ``frame_bgr``; the input is left untouched."""
    canvas = frame_bgr.copy()
    height, width = canvas.shape[:2]
    crack_tiles = [tile for tile in score.tiles if tile.probability >= threshold]
    if crack_tiles:
        heat = canvas.copy()
        for tile in crack_tiles:
            box = tile.box
            cv2.rectangle(heat, (box.x0, box.y0), (box.x1 - 1, box.y1 - 1), heat_colour(tile.probability), -1)
        canvas = cv2.addWeighted(heat, HEAT_ALPHA, canvas, 1 - HEAT_ALPHA, 0)
        thickness = max(1, round(min(height, width) / 300))
        for tile in crack_tiles:
            box = tile.box
            cv2.rectangle(canvas, (box.x0, box.y0), (box.x1 - 1, box.y1 - 1), CRACK_COLOUR, thickness)

    positive = score.probability >= threshold
    text = f"{label} {score.probability:.2f}"
    if fps is not None:
        text += f"  {fps:.1f} FPS"
    if event_open:
        text += "  EVENT"
    scale = max(0.35, min(height, width) / 800)
    thickness = max(1, round(scale * 2))
    (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = max(2, round(4 * scale))
    cv2.rectangle(canvas, (0, 0), (min(width - 1, text_w + 2 * pad), text_h + baseline + 2 * pad), (0, 0, 0), -1)
    cv2.putText(canvas, text, (pad, pad + text_h), cv2.FONT_HERSHEY_SIMPLEX, scale,
                CRACK_COLOUR if positive else CLEAR_COLOUR, thickness, cv2.LINE_AA)
    return canvas
