"""Several interpreters side by side in the stream (edge/scoring_pool.py): frames come back in the
order they were taken whichever interpreter finishes first, an error scoring a frame reaches the
frame loop, the pool ends with its source and stops while a camera still delivers, and a stream of
two interpreters gives the same probabilities and events as one."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading

import numpy as np
import pytest

from edge.capture import Capture
from edge.scoring_pool import InlineScorer, ScoringPool, interpreter_plan
from edge.sources import FrameSource, SourceSpec
from edge.stream import MAX_INTERPRETERS, StreamOptions, run_stream
from edge.tiling import Box, FrameScore, TileScore
from edge_models import write_video
from test_stream_pipeline import noise_frames, unverified_copy

WAIT = 60.0  # upper bound for waiting on a thread; never a measured duration


class ListSource(FrameSource):
    """A video file of the given frames (finite: the capture hands over every one)."""

    def __init__(self, frames: list[np.ndarray]) -> None:
        self.spec = SourceSpec("file", "frames.avi")
        self.frames = list(frames)
        self.frame_count = len(frames)

    def read(self):
        return (True, self.frames.pop(0)) if self.frames else (False, None)

    def close(self) -> None:
        pass


class EndlessCamera(FrameSource):
    """A live camera that always has a new frame."""

    def __init__(self) -> None:
        self.spec = SourceSpec("url", "rtsp://127.0.0.1:9/endless")

    def read(self):
        return True, np.zeros((4, 4, 3), np.uint8)

    def close(self) -> None:
        pass


def capture_of(source: FrameSource) -> Capture:
    return Capture(source.spec, opener=lambda spec: source)


def frames_numbered(count: int) -> list[np.ndarray]:
    """Frame i is filled with i, so a score function can tell frames apart."""
    return [np.full((4, 4, 3), i, np.uint8) for i in range(count)]


def score_of(value: float) -> FrameScore:
    return FrameScore(value, [TileScore(Box(0, 0, 4, 4), value)])


def drain(scorer) -> list:
    """Every (frame, score) the scorer gives until it has ended."""
    out = []
    while True:
        scored = scorer.get(timeout=WAIT)
        if scored is None:
            assert scorer.ended, "get returned nothing before the scorer ended"
            return out
        out.append(scored)


@pytest.mark.parametrize("interpreters, threads, default, expected", [
    (None, None, 2, [1, 1]),  # 2 cores: two interpreters of one thread
    (None, None, 1, [1]),  # 1 core: one
    (None, None, 3, [2, 1]),  # a Pi 4's default 3 threads, shared as evenly as they go
    (None, None, 8, [4, 4]),
    (1, None, 2, [2]),  # --interpreters 1: every default thread in one interpreter
    (4, None, 2, [1, 1, 1, 1]),  # at least one thread each
    (None, 3, 4, [2, 1]),  # --threads is the total, as before there were several interpreters
    (None, 1, 4, [1]),  # one thread: one interpreter
    (3, 8, 2, [3, 3, 2]),
])
def test_the_interpreter_plan(interpreters, threads, default, expected):
    assert interpreter_plan(interpreters, threads, default) == expected
    assert interpreter_plan(interpreters, threads, default, 24.0, 8000.0) == expected  # memory to spare


@pytest.mark.parametrize("model_mb, available_mb, expected", [
    (94.0, 700.0, [2]),  # fp32 on a Pi with 1 GB: a second interpreter would take too much
    (24.0, 700.0, [1, 1]),  # int8 there: two
    (24.0, 300.0, [1, 1]),  # int8 on a Pi Zero 2 W
    (94.0, 2000.0, [1, 1]),
])
def test_a_second_interpreter_only_where_it_takes_a_small_share_of_the_memory(model_mb, available_mb, expected):
    assert interpreter_plan(None, None, 2, model_mb, available_mb) == expected
    assert interpreter_plan(2, None, 2, model_mb, available_mb) == [1, 1]  # asked for: given


def test_frames_come_back_in_the_order_taken_even_when_a_later_one_finishes_first():
    later_done = threading.Event()
    finished: list[int] = []

    def score(frame, classifier):
        index = int(frame.image[0, 0, 0])
        if index == 0:  # frame 0 waits until frame 1 was scored by the other interpreter
            assert later_done.wait(WAIT), "frame 1 was never scored beside frame 0"
        finished.append(index)
        if index == 1:
            later_done.set()
        return score_of(index / 10)

    capture = capture_of(ListSource(frames_numbered(6)))
    pool = ScoringPool(capture, ["interpreter a", "interpreter b"], score)
    capture.start()
    pool.start()
    try:
        scored = drain(pool)
    finally:
        pool.stop()
        capture.stop()
    assert finished.index(1) < finished.index(0)  # really out of order inside the pool
    assert [s.frame.index for s in scored] == list(range(6))
    assert [s.score.probability for s in scored] == [i / 10 for i in range(6)]
    assert pool.ended


def test_each_interpreter_is_used_by_one_thread_only():
    users: dict[str, set[str]] = {}
    lock = threading.Lock()

    def score(frame, classifier):
        with lock:
            users.setdefault(classifier, set()).add(threading.current_thread().name)
        return score_of(0.0)

    capture = capture_of(ListSource(frames_numbered(20)))
    pool = ScoringPool(capture, ["a", "b", "c"], score)
    capture.start()
    pool.start()
    try:
        assert len(drain(pool)) == 20
    finally:
        pool.stop()
        capture.stop()
    assert all(len(threads) == 1 for threads in users.values())
    assert set().union(*users.values()) <= {"crack-score-0", "crack-score-1", "crack-score-2"}


def test_an_error_scoring_a_frame_is_raised_to_the_caller_in_its_place():
    def score(frame, classifier):
        index = int(frame.image[0, 0, 0])
        if index == 2:
            raise ValueError("frame 2 is broken")
        return score_of(0.5)

    capture = capture_of(ListSource(frames_numbered(4)))
    pool = ScoringPool(capture, ["a", "b"], score)
    capture.start()
    pool.start()
    try:
        assert [pool.get(WAIT).frame.index for _ in range(2)] == [0, 1]
        with pytest.raises(ValueError, match="frame 2 is broken"):
            pool.get(WAIT)
        assert pool.get(WAIT).frame.index == 3
    finally:
        pool.stop()
        capture.stop()


def test_the_pool_stops_while_a_camera_still_delivers():
    capture = capture_of(EndlessCamera())
    pool = ScoringPool(capture, ["a", "b"], lambda frame, classifier: score_of(0.1))
    capture.start()
    pool.start()
    try:
        first = pool.get(WAIT)
        assert first is not None and not pool.ended
    finally:
        pool.stop()
        capture.stop()
    assert not any(thread.is_alive() for thread in pool._threads)


def test_a_slow_caller_holds_the_workers_back():
    """At most one scored frame per interpreter waits for the caller: a camera's frames are then
    dropped in the capture's slot, not queued in the pool."""
    taken: queue.Queue = queue.Queue()

    def score(frame, classifier):
        taken.put(frame.index)
        return score_of(0.2)

    capture = capture_of(EndlessCamera())
    pool = ScoringPool(capture, ["a", "b"], score)
    capture.start()
    pool.start()
    try:
        for _ in range(2):
            taken.get(timeout=WAIT)
        with pool._condition:
            assert pool._condition.wait_for(lambda: len(pool._results) >= 2, WAIT)
        # the workers now wait for room: two results, and at most one frame that a worker took
        # while the second result was being made
        assert pool._tickets <= 3 and len(pool._results) <= 3
        assert pool.get(WAIT).frame.index < pool.get(WAIT).frame.index
    finally:
        pool.stop()
        capture.stop()


def test_the_inline_scorer_scores_on_the_callers_thread():
    threads: list[str] = []
    capture = capture_of(ListSource(frames_numbered(3)))
    scorer = InlineScorer(capture, "a", lambda frame, c: (threads.append(threading.current_thread().name),
                                                          score_of(0.3))[1])
    capture.start()
    try:
        assert [s.frame.index for s in drain(scorer)] == [0, 1, 2]
    finally:
        capture.stop()
    assert set(threads) == {threading.current_thread().name}


# --- the stream with two interpreters --------------------------------------------------------------

def dark_and_light_frames() -> list[np.ndarray]:
    """Light, then dark (a crack for the darkness model), then light: one event."""
    levels = [220] * 4 + [20] * 6 + [220] * 5
    rng = np.random.default_rng(3)
    return [np.clip(level + rng.integers(-8, 9, (48, 64, 3)), 0, 255).astype(np.uint8) for level in levels]


def events_without_times(path) -> list[dict]:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in ("id", "time", "duration_s")} for r in records]


@pytest.mark.parametrize("mode", ["fp32", "int8"])
def test_two_interpreters_give_the_stream_the_same_probabilities_and_events_as_one(edge_models, tmp_path, mode):
    video = write_video(tmp_path / "walk.avi", dark_and_light_frames())
    model = unverified_copy(edge_models[mode], tmp_path)
    runs = {}
    for interpreters in (1, 2):
        scored: list[tuple[int, float]] = []
        events = tmp_path / f"events_{interpreters}.jsonl"
        summary = run_stream(StreamOptions(model=model, source=str(video), interpreters=interpreters,
                                           threads=interpreters, min_frames=2, events=events),
                             on_frame=lambda index, probability: scored.append((index, probability)))
        assert summary.frames == 15 and summary.stop_reason == "end of video" and summary.events == 1
        runs[interpreters] = (scored, events_without_times(events))
    (one, one_events), (two, two_events) = runs[1], runs[2]
    assert [i for i, _ in two] == list(range(15))  # in frame order
    assert np.allclose([p for _, p in two], [p for _, p in one], atol=1e-6)
    assert two_events == one_events and [e["event"] for e in one_events] == ["crack_start", "crack_end"]


def test_noise_frames_reach_both_interpreters_unchanged(edge_models, tmp_path):
    """What the pool's interpreters score is what one interpreter scores, frame for frame."""
    video = write_video(tmp_path / "noise.avi", noise_frames(8, 96, 128))
    model = unverified_copy(edge_models["int8"], tmp_path)
    probabilities = {}
    for interpreters in (1, 2):
        got: list[float] = []
        run_stream(StreamOptions(model=model, source=str(video), interpreters=interpreters,
                                 threads=interpreters, tiles="2x2"), on_frame=lambda index, p: got.append(p))
        probabilities[interpreters] = got
    assert len(probabilities[2]) == 8 and probabilities[2] == probabilities[1]


@pytest.mark.parametrize("value", ["0", str(MAX_INTERPRETERS + 1), "-1"])
def test_a_bad_interpreter_count_is_one_line_and_exit_2(edge_models, tmp_path, value):
    result = subprocess.run([sys.executable, "-m", "edge", "stream", "--model", str(edge_models["int8"]),
                             "--source", str(tmp_path / "none.avi"), "--interpreters", value],
                            capture_output=True, text=True, timeout=WAIT)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: --interpreters must be between 1 and {MAX_INTERPRETERS}, "
                                     f"got {value}")


def test_the_interpreter_count_comes_from_the_config_file_too(edge_models, tmp_path):
    config = tmp_path / "crackkit.toml"
    config.write_text(f'model = "{edge_models["int8"]}"\n[stream]\nsource = "{tmp_path / "none.avi"}"\n'
                      'interpreters = 0\n')
    result = subprocess.run([sys.executable, "-m", "edge", "stream", "--config", str(config)],
                            capture_output=True, text=True, timeout=WAIT)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: --interpreters must be between 1 and {MAX_INTERPRETERS}, got 0"
