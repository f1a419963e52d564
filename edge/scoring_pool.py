"""Where the stream's frames are scored: on the frame loop's own thread, or by several interpreters
side by side, the results handed back in the order the frames were taken.

One interpreter with N threads splits every layer N ways and, at the end of each layer, waits for
its slowest thread. On a small CPU that the capture thread shares (decoding, resizing), that thread
is often the one the capture thread has pushed aside, so the whole layer waits. Two interpreters
of N/2 threads each work on two frames at once and only wait for themselves. Measured on 2 cores
(Intel Xeon, int8 ResNet50V2 at 224 px): one interpreter of 2 threads 5.5 ms per invoke; two of 1
thread each, side by side, 5.0 ms per frame; with the capture thread beside them the stream went
from 150 to 175 frames per second, 1.08 of its limit (benchmarks/results/edge_throughput.json).
The price: each frame waits for a one-thread invoke (latency about 9 ms instead of 6 here), and
each interpreter holds its own packed weights (peak memory +59 MB for int8, +207 MB for fp32), so
by default a second interpreter is only started where it takes a small share of the memory.

``InlineScorer``: one interpreter, scored on the caller's thread (``--interpreters 1``).
``ScoringPool``: K worker threads, each with its own ``CrackClassifier`` (one interpreter is not
thread-safe), take frames from the capture in turn; ``get`` returns them in that order, so the
debouncer sees frames as the camera made them. A frame that failed to score raises its error from
``get``, on the caller's thread, as the inline scorer would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from edge.capture import Capture, Frame
from edge.classifier import CrackClassifier
from edge.tiling import FrameScore

WORKER_POLL_SECONDS = 0.25  # how often an idle worker looks at the stop flag
STOP_JOIN_SECONDS = 2.0  # how long stop() waits for a worker to finish the invoke it is in

ScoreFunction = Callable[[Frame, CrackClassifier], FrameScore]
# peak memory of one more interpreter / the model file's size: fp32 ResNet50V2 at 224 px (94 MB)
# +207 MB, int8 (24 MB) +59 MB, `crack-edge stream` on this machine (XNNPACK packs its own weights)
EXTRA_INTERPRETER_COST = 2.2
MEMORY_SHARE = 0.25  # of the memory available at start-up, the most a second interpreter may take


class ScoredFrame(NamedTuple):
    frame: Frame
    score: FrameScore


def interpreter_plan(interpreters: int | None, threads: int | None, default_threads: int,
                     model_mb: float = 0.0, available_mb: float | None = None) -> list[int]:
    """The threads of each of the stream's interpreters (one entry per interpreter).

    ``threads`` are the interpreter threads in all (default: ``default_threads``), shared among the
    interpreters as evenly as they go (3 over 2: 2 and 1), at least one each. ``interpreters`` not
    given: two when there are two or more threads to share and the second fits in memory (it costs
    about EXTRA_INTERPRETER_COST x the model file, and may take at most MEMORY_SHARE of the memory
    available; unknown memory counts as enough), else one."""
    total = threads if threads is not None else default_threads
    if interpreters is None:
        fits = available_mb is None or EXTRA_INTERPRETER_COST * model_mb <= MEMORY_SHARE * available_mb
        interpreters = 2 if total >= 2 and fits else 1
    share, extra = divmod(total, interpreters)
    return [max(1, share + (1 if n < extra else 0)) for n in range(interpreters)]


def plan_for(model: Path, interpreters: int | None, threads: int | None) -> list[int]:
    """``interpreter_plan`` on this machine: its default threads, the memory available now and the
    model file's size."""
    from edge.health import default_threads, memory_mb

    memory = memory_mb()  # (in use, total); None where /proc/meminfo is missing
    model_mb = model.stat().st_size / 2**20 if model.is_file() else 0.0
    return interpreter_plan(interpreters, threads, default_threads(), model_mb,
                            memory[1] - memory[0] if memory else None)


class InlineScorer:
    """One interpreter, used on the caller's thread: the lowest latency."""

    def __init__(self, capture: Capture, classifier: CrackClassifier, score: ScoreFunction) -> None:
        self.capture = capture
        self.classifier = classifier
        self._score = score

    def start(self) -> None:
        pass

    def get(self, timeout: float | None = None) -> ScoredFrame | None:
        frame = self.capture.get(timeout)
        return None if frame is None else ScoredFrame(frame, self._score(frame, self.classifier))

    @property
    def ended(self) -> bool:
        return self.capture.ended

    def stop(self) -> None:
        pass


class ScoringPool:
    """K interpreters on K worker threads; frames in, scores out in the order the frames were taken.

    At most ``len(classifiers)`` scored frames wait for the caller: a slow caller holds the workers
    back instead of letting results pile up."""

    def __init__(self, capture: Capture, classifiers: Sequence[CrackClassifier], score: ScoreFunction) -> None:
        if not classifiers:
            raise ValueError("a scoring pool needs at least one classifier")
        self.capture = capture
        self.classifiers = list(classifiers)
        self._score = score
        self._condition = threading.Condition()
        self._take_lock = threading.Lock()  # a frame and its ticket are taken together
        self._results: dict[int, ScoredFrame | Exception] = {}
        self._tickets = 0  # frames taken so far; a frame's ticket is its place in the output
        self._next = 0  # the ticket the caller gets next
        self._working = 0  # workers still running
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work, args=(classifier,), name=f"crack-score-{n}",
                                          daemon=True) for n, classifier in enumerate(self.classifiers)]

    def start(self) -> None:
        self._working = len(self._threads)
        for thread in self._threads:
            thread.start()

    def get(self, timeout: float | None = None) -> ScoredFrame | None:
        """The next frame in order with its score; None on timeout or when all is done. Raises the
        error a worker met scoring that frame."""
        with self._condition:
            self._condition.wait_for(lambda: self._next in self._results or self._working == 0, timeout)
            result = self._results.pop(self._next, None)
            if result is None:
                return None
            self._next += 1
            self._condition.notify_all()
        if isinstance(result, Exception):
            raise result
        return result

    @property
    def ended(self) -> bool:
        """The capture has ended, every worker has stopped and every scored frame was taken."""
        with self._condition:
            return self._working == 0 and not self._results

    def stop(self, timeout: float = STOP_JOIN_SECONDS) -> None:
        """Stop taking frames and wait for the workers (each finishes the invoke it is in)."""
        self._stop.set()
        with self._condition:
            self._condition.notify_all()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout)

    def _work(self, classifier: CrackClassifier) -> None:
        limit = len(self._threads)
        try:
            while not self._stop.is_set():
                with self._condition:
                    self._condition.wait_for(lambda: len(self._results) < limit or self._stop.is_set())
                with self._take_lock:
                    frame = self.capture.get(WORKER_POLL_SECONDS)
                    if frame is None:
                        if self.capture.ended:
                            return
                        continue
                    ticket = self._tickets
                    self._tickets += 1
                try:
                    result: ScoredFrame | Exception = ScoredFrame(frame, self._score(frame, classifier))
                except Exception as exc:  # handed to the caller, raised there
                    result = exc
                with self._condition:
                    self._results[ticket] = result
                    self._condition.notify_all()
        finally:
            with self._condition:
                self._working -= 1
                self._condition.notify_all()
