"""Tiles and the overlay: grids cover the whole frame, tile scores go through one batched invoke
and the frame's probability is their maximum, --duration bounds a stream, and the overlay marks
only the crack tiles."""

from __future__ import annotations

import time

import numpy as np
import pytest
from edge_models import crack_frame, grey_frame, line_model_path, write_video

from edge.classifier import CrackClassifier
from edge.errors import UserError
from edge.overlay import draw_overlay, heat_colour
from edge.stream import StreamOptions, run_stream
from edge.tiling import Box, FrameScore, TileGrid, TileScore, score_frame


def coverage(boxes: list[Box], height: int, width: int) -> np.ndarray:
    counts = np.zeros((height, width), int)
    for box in boxes:
        assert 0 <= box.x0 < box.x1 <= width and 0 <= box.y0 < box.y1 <= height
        counts[box.y0:box.y1, box.x0:box.x1] += 1
    return counts


@pytest.mark.parametrize("rows, cols, height, width", [(1, 1, 10, 10), (2, 3, 480, 640), (3, 4, 1080, 1920),
                                                        (3, 3, 100, 101), (5, 2, 7, 3)])
def test_rows_by_cols_tiles_cover_every_pixel_exactly_once(rows, cols, height, width):
    boxes = TileGrid.parse(f"{rows}x{cols}").boxes(height, width)
    assert len(boxes) == rows * cols
    assert (coverage(boxes, height, width) == 1).all()
    widths = {b.x1 - b.x0 for b in boxes}
    assert max(widths) - min(widths) <= 1  # equal tiles, up to rounding


@pytest.mark.parametrize("size, stride, height, width, expected", [
    (224, 224, 480, 640, 9),      # 3 x 3: the last row and column are moved back to the edge
    (224, 112, 480, 640, 20),     # rows at 0, 112, 224, 256 x columns at 0, 112, 224, 336, 416
    (256, 256, 256, 512, 2),
    (300, 100, 200, 250, 1),      # a tile larger than the frame is clipped to it
])
def test_sliding_tiles_cover_every_pixel_and_stay_inside(size, stride, height, width, expected):
    boxes = TileGrid.parse(tile_size=size, stride=stride).boxes(height, width)
    assert len(boxes) == expected
    assert (coverage(boxes, height, width) >= 1).all()
    assert {b.x1 - b.x0 for b in boxes} == {min(size, width)}
    assert max(b.x1 for b in boxes) == width and max(b.y1 for b in boxes) == height


@pytest.mark.parametrize("kwargs, message", [
    ({"tiles": "3by4"}, "--tiles takes ROWSxCOLS"),
    ({"tiles": "0x2"}, "--tiles takes ROWSxCOLS"),
    ({"tiles": "2x2", "tile_size": 64}, "either --tiles RxC or --tile-size"),
    ({"stride": 32}, "--stride goes with --tile-size"),
    ({"tile_size": 64, "stride": 0}, "must be positive"),
])
def test_bad_tile_options_are_user_errors(kwargs, message):
    with pytest.raises(UserError, match=message):
        TileGrid.parse(**kwargs)


def test_score_frame_is_the_max_over_tiles_and_matches_scoring_each_tile():
    classifier = CrackClassifier(line_model_path(), threads=1)
    frame = grey_frame(64, 96)
    frame[:32, 64:] = crack_frame(32, 32)  # a crack in the top-right tile of a 2x3 grid
    rgb = frame[:, :, ::-1].copy()
    score = score_frame(classifier, rgb, TileGrid.parse("2x3"))
    probabilities = [tile.probability for tile in score.tiles]
    assert [tile.box.as_list() for tile in score.tiles][2] == [64, 0, 96, 32]
    assert max(range(6), key=probabilities.__getitem__) == 2
    assert probabilities[2] > 0.9 and max(probabilities[:2] + probabilities[3:]) < 0.1
    assert score.probability == max(probabilities)
    alone = score_frame(classifier, np.ascontiguousarray(rgb[:32, 64:]), TileGrid())
    assert alone.probability == pytest.approx(probabilities[2], abs=1e-6)


def test_overlay_marks_only_the_crack_tiles_and_leaves_the_frame_alone():
    frame = grey_frame(60, 90)
    before = frame.copy()
    tiles = [TileScore(Box(0, 0, 45, 60), 0.05), TileScore(Box(45, 0, 90, 60), 0.97)]
    canvas = draw_overlay(frame, FrameScore(0.97, tiles), threshold=0.5, label="crack", fps=12.3,
                          event_open=True)
    assert np.array_equal(frame, before) and canvas.shape == frame.shape
    below_banner = slice(30, 55)
    assert np.array_equal(canvas[below_banner, 5:40], frame[below_banner, 5:40])  # clear tile untouched
    tinted = canvas[below_banner, 50:85].reshape(-1, 3).mean(0)
    assert tinted[2] > tinted[0] + 40  # red side of the heat map (BGR) over the crack tile
    assert canvas[2:10, 2:40].mean() < frame[2:10, 2:40].mean()  # the dark banner with the text
    assert heat_colour(0.0)[0] > heat_colour(0.0)[2] and heat_colour(1.0)[2] > heat_colour(1.0)[0]


def test_duration_bounds_a_stream(tmp_path):
    # The bound counts from when the capture starts, before the first frame; holding that frame
    # past the bound stops the run right after it, however fast or slow this machine is.
    video = write_video(tmp_path / "long.avi", [grey_frame()] * 40)
    summary = run_stream(StreamOptions(model=line_model_path(), source=str(video), duration=0.3,
                                       threads=1), on_frame=lambda index, probability: time.sleep(0.35))
    assert summary.stop_reason == "duration" and summary.frames == 1


def test_window_starts_is_the_one_definition_for_tiles_and_patches():
    from edge.tiling import window_starts

    assert window_starts(288, 96, 48) == [0, 48, 96, 144, 192]
    assert window_starts(320, 96, 48) == [0, 48, 96, 144, 192, 224]  # the last one flush
    assert window_starts(96, 96, 48) == [0]
    assert window_starts(95, 96, 48) == []  # too short: no window
    assert TileGrid.parse(tile_size=224, stride=112).describe() == "tile 224 stride 112"
    assert TileGrid.parse("2x3").describe() == "2x3" and TileGrid().describe() == "whole"


def test_many_tiles_go_to_the_interpreter_a_batch_at_a_time():
    from edge.tiling import TILE_BATCH

    classifier = CrackClassifier(line_model_path(), threads=1)
    sizes = []
    predict = classifier.predict
    classifier.predict = lambda batch: (sizes.append(len(batch)), predict(batch))[1]
    frame = grey_frame(64, 64)
    frame[40:, 40:] = crack_frame(24, 24)
    score = score_frame(classifier, frame[:, :, ::-1].copy(), TileGrid.parse("6x6"))
    assert sizes == [TILE_BATCH, TILE_BATCH, 36 - 2 * TILE_BATCH]
    assert len(score.tiles) == 36 and score.probability == max(t.probability for t in score.tiles)
    assert score.tiles[0].probability < 0.1 < 0.9 < score.probability  # the crack is bottom right
