"""`crack-edge score`: classify folders of image files and write one row per file.

Files are decoded and resized in worker threads ahead of the interpreter (a bounded read-ahead
window), so the interpreter never waits for the disk or the JPEG decoder; the decoded images are
scored in batches through ``edge.classifier.CrackClassifier``. Rows are written and flushed per
batch (``edge.results_file``), so a killed run loses nothing it reported and ``--resume`` goes on.

Bounded for an unattended device: every image's header is checked against ``--max-pixels``
before it is decoded, the decode workers share one memory budget (``edge.memory_budget``) so two
large photos are not decoded at once, and tiles are bounded (``edge.tiling``). Ctrl-C or SIGTERM
stops at once: queued decodes are cancelled and a row being written is finished first.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from edge.annotate import AnnotatedPhotos
from edge.classifier import CrackClassifier
from edge.collect import DEFAULT_COLLECT_MARGIN, DEFAULT_COLLECT_MB, CollectOptions, Collector
from edge.contract import ModelContract, folder_label
from edge.errors import ImageDecodeError, RuntimeFailure, UserError, first_line
from edge.exif import ExifFields
from edge.file_inputs import InputFile, Skipped, find_inputs
from edge.image_header import DEFAULT_MAX_PIXELS, memory_limit
from edge.memory_budget import MemoryBudget
from edge.metrics import binary_report
from edge.model_metadata import file_sha256
from edge.output_paths import check_output_path
from edge.preprocess import ImageFile
from edge.progress import progress_bar
from edge.results_file import FORMATS, Row, RunIdentity, open_results
from edge.tiling import TileGrid, TooManyTiles, frame_boxes, score_frame
from edge.verify import startup_check

MAX_BATCH_SIZE = 256
MAX_DECODE_WORKERS = 32


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
    max_pixels: int = DEFAULT_MAX_PIXELS
    show_progress: bool = True
    save_annotated: Path | None = None  # write each crack photo annotated below this folder
    require_verified: bool = False  # refuse to start unless the golden check passes (edge/verify.py)
    collect: Path | None = None  # link files near the threshold here, with a labels template (edge/collect.py)
    collect_margin: float = DEFAULT_COLLECT_MARGIN
    collect_max_mb: float = DEFAULT_COLLECT_MB

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise UserError(f"unknown --format {self.format!r}; choose csv or jsonl")
        if self.resume and self.overwrite:
            raise UserError("give either --resume or --overwrite, not both")
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise UserError(f"--batch-size must be between 1 and {MAX_BATCH_SIZE}, "
                            f"got {self.batch_size}")
        if not 1 <= self.decode_workers <= MAX_DECODE_WORKERS:
            raise UserError(f"--decode-workers must be between 1 and {MAX_DECODE_WORKERS}, "
                            f"got {self.decode_workers}")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"--threads must be at least 1, got {self.threads}")
        if self.threshold is not None and not (math.isfinite(self.threshold)
                                               and 0.0 <= self.threshold <= 1.0):
            raise UserError(f"--threshold must be between 0 and 1, got {self.threshold}")
        if self.max_pixels < 1:
            raise UserError(f"--max-pixels must be at least 1, got {self.max_pixels}")


@dataclass
class ScoreSummary:
    files: int = 0
    already_done: int = 0
    retried: int = 0  # error rows of an earlier run scored again (--resume)
    scored: int = 0
    errors: int = 0
    seconds: float = 0.0
    interpreter: str = ""
    threads: int = 0
    skipped: Skipped = field(default_factory=Skipped)
    annotated: str = ""  # --save-annotated: what was saved
    collected: str = ""  # --collect: what was collected
    metrics: dict | None = None
    unlabelled: int = 0
    labels: list[int] = field(default_factory=list, repr=False)
    probabilities: list[float] = field(default_factory=list, repr=False)

    @property
    def images_per_second(self) -> float:
        return (self.scored + self.errors) / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        resumed = ""
        if self.already_done:
            resumed = f", {self.already_done} already in the output (--resume)"
        if self.retried:
            resumed += f", {self.retried} earlier error row(s) retried"
        lines = [f"scored {self.scored} image(s), {self.errors} error(s){resumed} in "
                 f"{self.seconds:.1f} s ({self.images_per_second:.1f} images/s; "
                 f"{self.interpreter}, {self.threads} thread(s))"]
        lines.extend(self.skipped.lines())
        if self.annotated:
            lines.append(self.annotated)
        if self.collected:
            lines.append(self.collected)
        if self.metrics is not None:
            m = self.metrics
            lines.append(f"against folder labels ({m['count']} images, threshold "
                         f"{m['threshold']:.3f}): accuracy {m['accuracy']:.4f}  precision "
                         f"{m['precision']:.4f}  recall {m['recall']:.4f}  F1 {m['f1']:.4f}")
            if self.unlabelled:
                lines.append(f"{self.unlabelled} scored image(s) had no crack/no_crack folder "
                             "and are not in these figures")
        return lines


def decode_ahead(paths: Iterable[Path], decode: Callable[[Path], object], workers: int,
                 window: int) -> Iterator[tuple[Path, object, str]]:
    """(path, decoded or None, error) in input order, decoding up to ``window`` files ahead.
    Closing the generator early (an error, Ctrl-C, SIGTERM) cancels every queued decode; at most
    the ``workers`` decodes already running finish in the background."""
    paths = iter(paths)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
    pending: deque = deque()
    try:
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
                yield path, None, f"cannot read file: {exc.strerror or exc}"
            except MemoryError:
                yield path, None, "cannot decode: out of memory"
            except Exception as exc:  # e.g. a cv2.error from a decoder: this file fails, not the run
                yield path, None, f"cannot decode: {first_line(exc)}"
    finally:
        for _, future in pending:
            future.cancel()
        pool.shutdown(wait=False, cancel_futures=True)


class _Decoded(NamedTuple):
    pixels: np.ndarray  # the model's input, or for tiles the whole photo at 1/reduction scale
    held: int  # memory budget the consumer gives back once the tiles are scored
    exif: ExifFields
    reduction: int = 1
    full_size: tuple[int, int] | None = None  # (height, width) of a photo decoded reduced


class _Decoder:
    """Decodes one file under the shared memory budget, a large JPEG at the largest reduction that
    leaves the model its input size on the shorter side of the photo, or with tiles of the
    smallest tile (``edge.preprocess.jpeg_reduction``; at full resolution for a model whose
    contract says ``decode`` ``full``). For the model, the budget is given back as soon as the
    image is resized; for tiles, the whole image is kept and its budget is given back by the
    consumer once the tiles are scored."""

    def __init__(self, contract: ModelContract, grid: TileGrid, max_pixels: int,
                 budget: MemoryBudget) -> None:
        self.input_size, self.decode, self.grid = contract.input_size, contract.decode, grid
        self.max_pixels, self.budget = max_pixels, budget

    def __call__(self, path: Path) -> _Decoded:
        with ImageFile(path, self.max_pixels) as image:
            try:
                boxes = frame_boxes(self.grid, *image.upright_size)
            except TooManyTiles as exc:  # its error row, without decoding the photo
                raise ImageDecodeError(str(exc)) from None
            side = min(min(box.x1 - box.x0, box.y1 - box.y0) for box in boxes)
            reduction = image.reduction_for(side, self.input_size, self.decode)
            image.check(reduction)
            held = self.budget.acquire(image.cost(reduction))
            if not self.grid.is_whole_frame:
                try:
                    return _Decoded(image.decode(reduction), held, image.exif, reduction,
                                    image.upright_size if reduction > 1 else None)
                except BaseException:
                    self.budget.release(held)
                    raise
            try:  # the same reduction: load_for_model's, as in training
                return _Decoded(image.decode_for_model(self.input_size, self.decode), 0, image.exif)
            finally:
                self.budget.release(held)


def scored_rows(classifier: CrackClassifier, paths: list[Path], grid: TileGrid,
                batch_size: int = 4, workers: int = 2, max_pixels: int = DEFAULT_MAX_PIXELS,
                budget: MemoryBudget | None = None) -> Iterator[list[Row]]:
    """Rows for ``paths``, a batch at a time (errors in their own list, as soon as they are seen)."""
    contract = classifier.contract
    budget = budget or MemoryBudget(memory_limit(max_pixels))
    decode = _Decoder(contract, grid, max_pixels, budget)
    ahead = decode_ahead(paths, decode, workers, window=batch_size * 2 + workers)
    batch: list[tuple[Path, np.ndarray, ExifFields]] = []

    def row(path: Path, probability: float, latency_ms: float, exif: ExifFields,
            tiles: tuple | None = None) -> Row:
        if not math.isfinite(probability):
            return Row(str(path), None, "", None, "the model returned a non-finite probability")
        return Row(str(path), probability, contract.label_name(probability), latency_ms, "",
                   **asdict(exif), tiles=tiles)

    def run_batch() -> list[Row]:
        started = time.perf_counter()
        probabilities = _predict(classifier, np.stack([image for _, image, _ in batch]))
        each = (time.perf_counter() - started) * 1000.0 / len(batch)
        rows = [row(path, float(p), each, exif) for (path, _, exif), p in zip(batch, probabilities)]
        batch.clear()
        return rows

    try:
        for path, decoded, error in ahead:
            if decoded is None:
                yield [Row(str(path), None, "", None, error)]
                continue
            exif = decoded.exif
            if not grid.is_whole_frame:
                held = decoded.held
                try:
                    started = time.perf_counter()
                    frame = _score_tiles(classifier, decoded, grid)
                    latency = (time.perf_counter() - started) * 1000.0
                except TooManyTiles as exc:
                    yield [Row(str(path), None, "", None, str(exc))]
                    continue
                finally:
                    del decoded
                    budget.release(held)
                tiles = tuple((*t.box.as_list(), t.probability) for t in frame.tiles)
                yield [row(path, frame.probability, latency, exif, tiles)]
                continue
            batch.append((path, decoded.pixels, exif))
            if len(batch) >= batch_size:
                yield run_batch()
        if batch:
            yield run_batch()
    finally:
        ahead.close()  # cancels queued decodes
        budget.close()  # wakes decodes waiting for memory


def _predict(classifier: CrackClassifier, images: np.ndarray) -> np.ndarray:
    try:
        return classifier.predict(images)
    except (RuntimeError, ValueError) as exc:
        raise RuntimeFailure(f"the interpreter failed on {classifier.model_path.name}: "
                             f"{first_line(exc)}") from None


def _score_tiles(classifier: CrackClassifier, decoded: _Decoded, grid: TileGrid):
    try:
        return score_frame(classifier, decoded.pixels, grid, decoded.reduction, decoded.full_size)
    except TooManyTiles:
        raise
    except (RuntimeError, ValueError) as exc:
        raise RuntimeFailure(f"the interpreter failed on {classifier.model_path.name}: "
                             f"{first_line(exc)}") from None


def probabilities_for(model: Path, paths: list[Path], threads: int | None = None) -> list[float | None]:
    """Edge probabilities of image files, in order (None for unreadable files): for parity checks."""
    classifier = CrackClassifier(model, threads=threads)
    found = {row.path: row.probability for rows in scored_rows(classifier, paths, TileGrid())
             for row in rows}
    return [found[str(path)] for path in paths]


def truth_from_folders(path: Path, root: Path) -> int | None:
    """The label named by the nearest class folder (crack/no_crack, Positive/...) between the
    file and ``root``, ``root`` included: folders above what was given never count."""
    try:
        below = path.parent.relative_to(root).parts
    except ValueError:
        below = ()
    for name in reversed((root.name, *below)):
        label = folder_label(name)
        if label is not None:
            return label
    return None


RowSource = Callable[[CrackClassifier, list[Path], TileGrid, ScoreOptions], Iterable[list[Row]]]


def local_rows(classifier: CrackClassifier, paths: list[Path], grid: TileGrid,
               options: ScoreOptions) -> Iterator[list[Row]]:
    """The single-process engine: ``scored_rows`` in this process."""
    return scored_rows(classifier, paths, grid, options.batch_size, options.decode_workers,
                       options.max_pixels)


def run_score(options: ScoreOptions, say: Callable[[str], None] = print,
              rows_for: RowSource = local_rows) -> ScoreSummary:
    """Score ``options.inputs`` into ``options.out``. ``rows_for`` is the engine that turns the
    files still to do into rows (``local_rows``, or ``edge.ray_engine``'s on a Ray cluster); the
    results file, --resume, the summary, --save-annotated and --collect are the same for both."""
    grid = TileGrid.parse(options.tiles, options.tile_size, options.stride)
    out = Path(options.out)
    check_output_path(out)
    classifier = CrackClassifier(options.model, threads=options.threads)
    found = find_inputs(options.inputs)
    if not found.files:
        raise UserError("no image files found in the given paths"
                        + "".join(f"; {line}" for line in found.skipped.lines()))
    say(startup_check(classifier, options.require_verified).line)  # before the results file is opened
    if options.threshold is not None:
        classifier.contract = classifier.contract.with_threshold(options.threshold)
    contract = classifier.contract
    identity = RunIdentity(model=Path(options.model).name,
                           model_sha256=file_sha256(options.model),
                           threshold=contract.threshold, tiles=grid.describe(),
                           labels=tuple(contract.labels), input_size=contract.input_size)
    annotator = None if options.save_annotated is None else \
        AnnotatedPhotos(options.save_annotated, contract.threshold, options.max_pixels)
    collect = None if options.collect is None else \
        CollectOptions(options.collect, options.collect_margin, options.collect_max_mb)
    if collect is not None:
        collect.validate()  # before the results file is opened
    opened = open_results(out, options.format, identity, resume=options.resume,
                          overwrite=options.overwrite)
    collector = None if collect is None else Collector(collect, contract)
    todo = [file for file in found.files if os.fsencode(str(file.path)) not in opened.done]
    roots = {str(file.path): file.root for file in todo}
    summary = ScoreSummary(files=len(found.files), already_done=len(found.files) - len(todo),
                           retried=opened.retried, interpreter=classifier.backend.describe(),
                           threads=classifier.threads, skipped=found.skipped)
    started = time.perf_counter()
    stop = _StopOnSignals()
    try:
        with opened.writer as results, stop, \
                progress_bar("scoring", len(todo), options.show_progress) as advance:
            for rows in rows_for(classifier, [file.path for file in todo], grid, options):
                with stop.deferred():
                    results.write(rows)
                if annotator is not None:
                    annotator.add(rows)
                if collector is not None:
                    collector.offer_rows(rows)
                for row in rows:
                    if row.error:
                        summary.errors += 1
                        continue
                    summary.scored += 1
                    if options.labels_from_folders:
                        truth = truth_from_folders(Path(row.path), roots[row.path])
                        if truth is None:
                            summary.unlabelled += 1
                        else:
                            summary.labels.append(truth)
                            summary.probabilities.append(row.probability)
                advance(len(rows))
    finally:
        summary.seconds = time.perf_counter() - started
        if annotator is not None:
            summary.annotated = annotator.close()
        if collector is not None:
            collector.close()
            summary.collected = collector.line()
    if options.labels_from_folders:
        if not summary.labels:
            say("warning: --labels-from-folders found no crack/no_crack folder names in the paths")
        else:
            summary.metrics = binary_report(summary.labels, summary.probabilities,
                                            contract.threshold)
    return summary


class _StopOnSignals:
    """SIGTERM (and SIGINT) raise KeyboardInterrupt in the main thread, except inside
    ``deferred()`` (writing rows), where the stop waits for the block to end."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._deferring = False
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        self.requested = True
        if not self._deferring:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
        if self.requested:
            raise KeyboardInterrupt

    def __enter__(self) -> "_StopOnSignals":
        if threading.current_thread() is threading.main_thread():
            for number in self.SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
