"""`crack-edge score`: classify folders of image files and write one row per file.

Files are decoded and resized in worker threads ahead of the interpreter (a bounded read-ahead
window), so the interpreter never waits for the disk or the JPEG decoder; the decoded images are
scored in batches through ``edge.classifier.CrackClassifier``. Rows are flushed per batch (see
``edge.results_file``), so a killed run loses nothing it reported and ``--resume`` goes on.
"""

from __future__ import annotations

import signal
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from edge.classifier import CrackClassifier
from edge.contract import folder_label
from edge.errors import ImageDecodeError, UserError
from edge.file_inputs import expand_inputs
from edge.metrics import binary_report
from edge.preprocess import load_for_model, load_image
from edge.results_file import ResultsFile, Row, open_for_resume
from edge.tiling import TileGrid, score_frame


@dataclass(frozen=True)
class ScoreOptions:
    model: Path
    inputs: tuple[str, ...]
    out: Path
    format: str = "csv"
    resume: bool = False
    overwrite: bool = False
    strict: bool = False
    labels_from_folders: bool = False
    threads: int | None = None
    threshold: float | None = None
    tiles: str | None = None
    tile_size: int | None = None
    stride: int | None = None
    batch_size: int = 4
    decode_workers: int = 2
    show_progress: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.decode_workers < 1:
            raise UserError("--batch-size and --decode-workers must be at least 1")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise UserError(f"--threshold must be between 0 and 1, got {self.threshold}")


@dataclass
class ScoreSummary:
    files: int = 0
    already_done: int = 0
    scored: int = 0
    errors: int = 0
    seconds: float = 0.0
    interpreter: str = ""
    threads: int = 0
    metrics: dict | None = None
    unlabelled: int = 0
    labels: list[int] = field(default_factory=list, repr=False)
    probabilities: list[float] = field(default_factory=list, repr=False)

    @property
    def images_per_second(self) -> float:
        return (self.scored + self.errors) / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        lines = [f"scored {self.scored} image(s), {self.errors} error(s)"
                 + (f", {self.already_done} already in the output (--resume)" if self.already_done else "")
                 + f" in {self.seconds:.1f} s ({self.images_per_second:.1f} images/s; "
                 f"{self.interpreter}, {self.threads} thread(s))"]
        if self.metrics is not None:
            m = self.metrics
            lines.append(f"against folder labels ({m['count']} images, threshold "
                         f"{m['threshold']:.3f}): accuracy {m['accuracy']:.4f}  precision "
                         f"{m['precision']:.4f}  recall {m['recall']:.4f}  F1 {m['f1']:.4f}")
            if self.unlabelled:
                lines.append(f"{self.unlabelled} scored image(s) had no crack/no_crack folder "
                             "and are not in these figures")
        return lines


Decoded = tuple[Path, "np.ndarray | None", str]


def decode_ahead(paths: Iterable[Path], decode: Callable[[Path], np.ndarray], workers: int,
                 window: int) -> Iterator[Decoded]:
    """(path, image or None, error) in input order, decoding up to ``window`` files ahead."""
    paths = iter(paths)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        pending: deque = deque()
        for path in paths:
            pending.append((path, pool.submit(decode, path)))
            if len(pending) >= window:
                break
        while pending:
            path, future = pending.popleft()
            following = next(paths, None)
            if following is not None:
                pending.append((following, pool.submit(decode, following)))
            try:
                yield path, future.result(), ""
            except ImageDecodeError as exc:
                yield path, None, str(exc)
            except OSError as exc:
                yield path, None, f"cannot read file: {exc}"
            except Exception as exc:  # e.g. a cv2.error from a decoder: this file fails, not the run
                yield path, None, f"cannot decode: {type(exc).__name__}: {exc}".splitlines()[0]


def scored_rows(classifier: CrackClassifier, paths: list[Path], grid: TileGrid,
                batch_size: int = 4, workers: int = 2) -> Iterator[list[Row]]:
    """Rows for ``paths``, a batch at a time (errors in their own list, as soon as they are seen)."""
    contract = classifier.contract
    size = contract.input_size
    if grid.is_whole_frame:
        decode = lambda path: load_for_model(path, size)  # noqa: E731
    else:
        decode = load_image
    batch: list[tuple[Path, np.ndarray]] = []

    def run_batch() -> list[Row]:
        started = time.perf_counter()
        probabilities = classifier.predict(np.stack([image for _, image in batch]))
        each = (time.perf_counter() - started) * 1000.0 / len(batch)
        rows = [Row(str(path), float(p), contract.label_name(float(p)), each)
                for (path, _), p in zip(batch, probabilities)]
        batch.clear()
        return rows

    for path, image, error in decode_ahead(paths, decode, workers, window=batch_size * 2 + workers):
        if image is None:
            yield [Row(str(path), None, "", None, error)]
            continue
        if not grid.is_whole_frame:
            started = time.perf_counter()
            frame = score_frame(classifier, image, grid)
            yield [Row(str(path), frame.probability, contract.label_name(frame.probability),
                       (time.perf_counter() - started) * 1000.0)]
            continue
        batch.append((path, image))
        if len(batch) >= batch_size:
            yield run_batch()
    if batch:
        yield run_batch()


def probabilities_for(model: Path, paths: list[Path], threads: int | None = None) -> list[float | None]:
    """Edge probabilities of image files, in order (None for unreadable files): for parity checks."""
    classifier = CrackClassifier(model, threads=threads)
    found = {row.path: row.probability for rows in scored_rows(classifier, paths, TileGrid())
             for row in rows}
    return [found[str(path)] for path in paths]


def truth_from_folders(path: str) -> int | None:
    """The label named by the nearest enclosing class folder (crack/no_crack, Positive/...)."""
    for parent in Path(path).parents:
        label = folder_label(parent.name)
        if label is not None:
            return label
    return None


def run_score(options: ScoreOptions, say: Callable[[str], None] = print) -> ScoreSummary:
    classifier = CrackClassifier(options.model, threads=options.threads)
    paths = expand_inputs(options.inputs)
    if not paths:
        raise UserError("no image files found in the given paths")
    out = Path(options.out)
    done: set[str] = set()
    if options.resume:
        done = open_for_resume(out, options.format)
    elif out.exists() and out.stat().st_size > 0 and not options.overwrite:
        raise UserError(f"{out} exists; use --resume to continue it or --overwrite to replace it")
    if options.threshold is not None:
        classifier.contract = classifier.contract.with_threshold(options.threshold)
    grid = TileGrid.parse(options.tiles, options.tile_size, options.stride)
    todo = [path for path in paths if str(path) not in done]
    summary = ScoreSummary(files=len(paths), already_done=len(paths) - len(todo),
                           interpreter=classifier.backend.describe(), threads=classifier.threads)
    started = time.perf_counter()
    previous_term = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with ResultsFile(out, options.format, append=options.resume) as results, \
                _progress(len(todo), options.show_progress) as advance:
            for rows in scored_rows(classifier, todo, grid, options.batch_size,
                                    options.decode_workers):
                results.write(rows)
                for row in rows:
                    if row.error:
                        summary.errors += 1
                        continue
                    summary.scored += 1
                    if options.labels_from_folders:
                        truth = truth_from_folders(row.path)
                        if truth is None:
                            summary.unlabelled += 1
                        else:
                            summary.labels.append(truth)
                            summary.probabilities.append(row.probability)
                advance(len(rows))
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        summary.seconds = time.perf_counter() - started
    if options.labels_from_folders:
        if not summary.labels:
            say("warning: --labels-from-folders found no crack/no_crack folder names in the paths")
        else:
            summary.metrics = binary_report(summary.labels, summary.probabilities,
                                            classifier.contract.threshold)
    return summary


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


class _progress:
    """A rich progress bar with images per second, or nothing when disabled."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled:
            return lambda count: None
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self._progress = Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                                  TimeRemainingColumn(), transient=False)
        self._progress.__enter__()
        task = self._progress.add_task("score", total=self.total, rate="")
        started = time.perf_counter()
        done = [0]

        def advance(count: int) -> None:
            done[0] += count
            rate = done[0] / max(time.perf_counter() - started, 1e-9)
            self._progress.update(task, advance=count, rate=f"{rate:.1f} img/s")

        return advance

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._progress.__exit__(*exc)
