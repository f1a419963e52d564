"""The stream's pipeline: the capture thread makes the model's input (colour, resize, tiles) and the
scoring thread only invokes. What the scoring thread hands the interpreter is bit for bit what
edge.preprocess makes of the same decoded frame, with and without tiles, and a live source's
stale frames are dropped, never queued. With one interpreter (`--interpreters 1`) the frame loop's
own thread invokes; several interpreters side by side: tests/test_scoring_pool.py."""

from __future__ import annotations

import functools
import queue
import shutil
import threading

import numpy as np
import pytest

import edge.capture
import edge.tiling
from edge.classifier import CrackClassifier
from edge.preprocess import frame_to_rgb, resize_for_model
from edge.sources import FrameSource, SourceSpec, open_once, parse_source
from edge.stream import StreamOptions, run_stream
from edge.tiling import TileGrid, frame_boxes, prepare_frame
from edge_models import write_video

WAIT = 60.0  # upper bound for waiting on a thread; never a measured duration
CAPTURE_THREAD = "crack-capture"


def noise_frames(count: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    """Coloured noise: any mix-up of channels, pixels or tiles changes the model's input."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def reference_input(frame_bgr: np.ndarray, grid: TileGrid, size: int) -> np.ndarray:
    """edge.preprocess's path, the way the stream took it on its scoring thread before: the whole
    frame to RGB, then each tile cut and resized for the model."""
    rgb = frame_to_rgb(frame_bgr)
    return np.stack([resize_for_model(rgb[b.y0:b.y1, b.x0:b.x1], size)
                     for b in frame_boxes(grid, *rgb.shape[:2])])


def unverified_copy(model, folder):
    """The model alone (its card travels inside it), without its golden file: the stream's start-up
    check then makes no invoke, so every invoke a Spy records is a frame's."""
    copy = folder / model.name
    shutil.copyfile(model, copy)
    return copy


class Spy:
    """Records what the interpreter is given and where frames are prepared, with thread names."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, hold_first_invoke: bool = False) -> None:
        self.invokes: list[tuple[str, np.ndarray]] = []
        self.prepared: list[tuple[str, bool]] = []  # (thread, made ahead rather than left to scoring)
        self.first_invoke = threading.Event()
        self.release = threading.Event()
        if not hold_first_invoke:
            self.release.set()
        predict, prepare = CrackClassifier.predict, edge.tiling.prepare_frame

        def spy_predict(classifier, images):
            self.invokes.append((threading.current_thread().name, np.array(images, copy=True)))
            self.first_invoke.set()
            assert self.release.wait(WAIT), "the test never released the first invoke"
            return predict(classifier, images)

        def spy_prepare(*args, **kwargs):
            result = prepare(*args, **kwargs)
            self.prepared.append((threading.current_thread().name, result is not None))
            return result

        monkeypatch.setattr(CrackClassifier, "predict", spy_predict)
        monkeypatch.setattr(edge.tiling, "prepare_frame", spy_prepare)

    def model_input(self) -> np.ndarray:
        return np.concatenate([images for _, images in self.invokes])


def decoded_frames(video) -> list[np.ndarray]:
    """The video as the stream's source decodes it."""
    frames = []
    with open_once(parse_source(str(video))) as source:
        while True:
            ok, frame = source.read()
            if not ok:
                return frames
            frames.append(frame)


# whole frame and 2x3 tiles: each tile is resized, then colour-converted; 4x4: the tiles have more
# pixels than the frame, so the frame is colour-converted first; 8 px tiles: too many to hold at
# once, so the scoring thread makes them a batch at a time
@pytest.mark.parametrize("tiles, tile_size, ahead", [(None, None, True), ("2x3", None, True),
                                                     ("4x4", None, True), (None, 8, False)])
def test_the_scoring_thread_gets_exactly_what_preprocess_makes_of_each_frame(
        edge_models, tmp_path, monkeypatch, tiles, tile_size, ahead):
    video = write_video(tmp_path / "noise.avi", noise_frames(3, 96, 128))
    spy = Spy(monkeypatch)
    summary = run_stream(StreamOptions(model=unverified_copy(edge_models["int8"], tmp_path), source=str(video), tiles=tiles,
                                       tile_size=tile_size, threads=1, interpreters=1))
    assert summary.frames == 3 and summary.stop_reason == "end of video"

    grid = TileGrid.parse(tiles, tile_size)
    expected = np.concatenate([reference_input(frame, grid, 32) for frame in decoded_frames(video)])
    received = spy.model_input()
    assert received.shape == expected.shape and received.dtype == np.uint8
    assert np.array_equal(received, expected)
    assert {thread for thread, _ in spy.invokes} == {threading.current_thread().name}
    assert spy.prepared == [(CAPTURE_THREAD, ahead)] * 3
    if not ahead:
        assert len(spy.invokes) == 3 * 12  # 12x16 tiles of 8 px, 16 to an invoke


@pytest.mark.parametrize("frame", [
    np.random.default_rng(1).integers(0, 256, (40, 50), dtype=np.uint8),  # grey
    np.random.default_rng(2).integers(0, 4096, (40, 50, 3), dtype=np.uint16),  # 12-bit sensor
    np.random.default_rng(3).integers(0, 256, (40, 50, 4), dtype=np.uint8),  # BGRA
], ids=["grey", "16-bit", "bgra"])
def test_prepared_frames_of_other_layouts_match_preprocess(frame):
    grid = TileGrid.parse("2x2")
    prepared = prepare_frame(frame, grid, 16)
    assert np.array_equal(np.concatenate(prepared.batches), reference_input(frame, grid, 16))
    assert [b.as_list() for b in prepared.boxes] == [[0, 0, 25, 20], [25, 0, 50, 20],
                                                     [0, 20, 25, 40], [25, 20, 50, 40]]


class QueueSource(FrameSource):
    """A live camera whose frames the test hands over one by one; None ends the connection.
    ``reads`` counts the reads begun: the capture thread begins read n+1 only after it has put
    frame n into the slot."""

    def __init__(self, frames: queue.Queue, reads: threading.Semaphore) -> None:
        self.spec = SourceSpec("url", "rtsp://127.0.0.1:9/test")
        self.frames = frames
        self.reads = reads

    def read(self):
        self.reads.release()
        frame = self.frames.get(timeout=WAIT)
        if frame is None:
            self.frames.put(None)  # and every read after it: the camera is gone
            return False, None
        return True, frame

    def close(self) -> None:
        pass


def test_a_live_source_hands_the_scoring_thread_only_its_newest_frame(edge_models, tmp_path, monkeypatch):
    frames: queue.Queue = queue.Queue()
    reads = threading.Semaphore(0)
    source = QueueSource(frames, reads)
    monkeypatch.setattr(edge.capture, "Capture",
                        functools.partial(edge.capture.Capture, opener=lambda spec: source))
    spy = Spy(monkeypatch, hold_first_invoke=True)
    scored: list[int] = []
    second_scored, stop = threading.Event(), threading.Event()

    def on_frame(index: int, probability: float) -> None:
        scored.append(index)
        if len(scored) == 2:
            second_scored.set()

    result: dict = {}
    runner = threading.Thread(target=lambda: result.update(summary=run_stream(
        StreamOptions(model=unverified_copy(edge_models["int8"], tmp_path), source=source.spec.target, threads=1,
                                 interpreters=1), stop, on_frame)),
        name="scoring")
    runner.start()
    try:
        pictures = noise_frames(4, 48, 64, seed=7)
        frames.put(pictures[0])
        assert spy.first_invoke.wait(WAIT), "frame 0 never reached the interpreter"
        for picture in pictures[1:]:  # arrive while the interpreter is busy with frame 0
            frames.put(picture)
        for _ in range(5):  # read 5 begun: frames 1, 2 and 3 are in the slot, each replacing the last
            assert reads.acquire(timeout=WAIT), "the capture thread stopped reading"
        spy.release.set()
        assert second_scored.wait(WAIT), "the newest frame was never scored"
    finally:
        spy.release.set()
        stop.set()
        frames.put(None)
        runner.join(WAIT)
    assert not runner.is_alive()
    summary = result["summary"]
    assert scored == [0, 3]  # frames 1 and 2 went stale while frame 0 was being scored
    assert summary.frames == 2 and summary.frames_read == 4 and summary.dropped == 2
    assert np.array_equal(spy.model_input(),
                          np.concatenate([reference_input(pictures[i], TileGrid(), 32) for i in (0, 3)]))
    assert {thread for thread, _ in spy.invokes} == {"scoring"}
    assert {thread for thread, _ in spy.prepared} == {CAPTURE_THREAD}
