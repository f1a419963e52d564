"""`crack-edge score --engine ray`: the same scoring on a Ray cluster, with Ray Data.

The driver (the machine where `crack-edge score` runs) does everything the single-process path
does (``edge.score.run_score``): it finds the files, opens and locks the results file (--resume
included), writes and flushes the rows, and prints the summary. Only the engine differs: instead
of ``edge.score.local_rows`` the files still to do go to a Ray Data pipeline,

    from_items([{index, path}]) -> map_batches(_ScoringActor, ActorPoolStrategy(size=N),
                                               batch_size=--ray-batch-size) -> iter_batches

where each actor holds one TFLite interpreter (``CrackClassifier``) and reads and decodes its
files itself with the same ``edge.score.scored_rows`` the single-process path runs, so a row is
the same row: same decode, same reduction, same tiles, same error texts, same probability.

Exactly once. Ray Data restarts a dead actor and retries its batch (``max_restarts`` and
``max_task_retries`` are -1 for actor pools), so a worker that dies mid-run costs time, not
files. A retried batch could still hand back rows the driver has already written, so the driver
keeps one byte per file (``_Written``) and writes a file's row only the first time it arrives;
after the pipeline ends, a file without a row is a failure (exit 1; --resume continues).

The model travels with the job: the driver reads the .tflite once, and each actor writes it
below the node's temporary folder (once per model and node) with the driver's contract, so the
workers need the photos (a shared file system or the same mount) but not the model. The photos'
paths are made absolute for the workers; the rows keep the paths as found on the driver.

Ray is imported only when this engine runs: the base edge install never needs it
(``pip install ".[cluster]"`` adds it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.atomic_files import write_bytes_atomic
from edge.classifier import CrackClassifier
from edge.contract import ModelContract
from edge.errors import RuntimeFailure, UserError, first_line
from edge.results_file import Row
from edge.score import ScoreOptions, ScoreSummary, run_score, scored_rows
from edge.tiling import TileGrid

ENGINES = ("local", "ray")
INSTALL_HINT = 'pip install ".[cluster]"'
DEFAULT_RAY_BATCH_SIZE = 32
MAX_RAY_BATCH_SIZE = 4096
MAX_ACTORS = 10_000
# Test hook (tests/test_ray_engine.py): the first actor to start its second batch writes its pid
# to DIR/paused and waits until DIR/go exists, so a test can kill it mid-run deterministically.
PAUSE_VARIABLE = "CRACK_EDGE_RAY_PAUSE_DIR"
PAUSE_LIMIT_S = 600.0


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide: ``address`` None lets Ray choose (``RAY_ADDRESS``, else the cluster
    last started on this machine with `ray start`, else a new local Ray); ``actors`` None: one
    per ``cpus_per_actor`` CPUs of the cluster."""

    address: str | None = None
    actors: int | None = None
    batch_size: int = DEFAULT_RAY_BATCH_SIZE  # files per actor call (a Ray Data batch)
    cpus_per_actor: float = 1.0

    def __post_init__(self) -> None:
        if self.address is not None and not self.address.strip():
            raise UserError("--ray-address is empty; give HOST:PORT, ray://HOST:PORT or auto")
        if self.actors is not None and not 1 <= self.actors <= MAX_ACTORS:
            raise UserError(f"--ray-actors must be between 1 and {MAX_ACTORS}, got {self.actors}")
        if not 1 <= self.batch_size <= MAX_RAY_BATCH_SIZE:
            raise UserError(f"--ray-batch-size must be between 1 and {MAX_RAY_BATCH_SIZE}, "
                            f"got {self.batch_size}")
        if not self.cpus_per_actor > 0:
            raise UserError(f"CPUs per actor must be positive, got {self.cpus_per_actor}")


def check_engine(engine: str, ray_options_given: bool) -> None:
    """One-line errors for ``--engine`` and Ray options without ``--engine ray``."""
    if engine not in ENGINES:
        raise UserError(f"unknown --engine {engine!r}; choose {' or '.join(ENGINES)}")
    if engine != "ray" and ray_options_given:
        raise UserError("--ray-address, --ray-actors and --ray-batch-size go with --engine ray")


def import_ray():
    """``ray`` with Ray Data, or a one-line UserError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401  (Ray Data needs pandas and pyarrow: ray[data])
    except ImportError as exc:
        raise UserError(f"--engine ray needs Ray with Ray Data, which is not installed here "
                        f"({first_line(exc)}): {INSTALL_HINT}") from None
    return ray


# --- the workers ------------------------------------------------------------------------------

@dataclass(frozen=True)
class _ActorSetup:
    """What each actor needs, sent once per actor: the model itself, not a path to it."""

    model_name: str
    model_bytes: bytes
    model_sha256: str
    contract: ModelContract  # the driver's, threshold override included
    threads: int
    grid: TileGrid
    batch_size: int
    decode_workers: int
    max_pixels: int
    pause_dir: str | None = None


def _local_model(setup: _ActorSetup) -> Path:
    """The model below this node's temporary folder, written once per model (by content)."""
    folder = Path(tempfile.gettempdir()) / "crack-edge-ray" / setup.model_sha256[:32]
    path = folder / setup.model_name
    if path.is_file() and path.stat().st_size == len(setup.model_bytes):
        return path
    write_bytes_atomic(path, setup.model_bytes)  # another actor on this node never sees half a model
    return path


class _ScoringActor:
    """One per Ray actor: a TFLite interpreter, fed a batch of files at a time."""

    def __init__(self, setup: _ActorSetup) -> None:
        if hashlib.sha256(setup.model_bytes).hexdigest() != setup.model_sha256:
            raise RuntimeFailure("the model arrived damaged on this worker")
        self.setup = setup
        self.classifier = CrackClassifier(_local_model(setup), threads=setup.threads,
                                          contract=setup.contract)
        self.calls = 0

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls += 1
        if self.calls == 2 and self.setup.pause_dir:
            _pause_once(Path(self.setup.pause_dir))
        indices = [int(i) for i in batch["index"]]
        paths = [Path(os.fsdecode(bytes(p))) for p in batch["path"]]
        where = {str(path): index for path, index in zip(paths, indices)}
        found_index, found_row = [], []
        s = self.setup
        for rows in scored_rows(self.classifier, paths, s.grid, s.batch_size, s.decode_workers,
                                s.max_pixels):
            for row in rows:
                found_index.append(where[row.path])
                found_row.append(pickle.dumps(row, protocol=pickle.HIGHEST_PROTOCOL))
        rows_column = np.empty(len(found_row), dtype=object)
        rows_column[:] = found_row
        return {"index": np.asarray(found_index, dtype=np.int64), "row": rows_column}


def _pause_once(folder: Path) -> None:
    """The test hook (``PAUSE_VARIABLE``): only the first actor of the run to get here pauses."""
    try:
        fd = os.open(folder / "paused", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as handle:
        handle.write(str(os.getpid()))
    deadline = time.monotonic() + PAUSE_LIMIT_S
    while not (folder / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


# --- the driver -------------------------------------------------------------------------------

class _Written:
    """One byte per file of the run (a million files: 1 MB): has its row been written?"""

    def __init__(self, count: int) -> None:
        self.bits = bytearray(count)
        self.count = 0

    def first_time(self, index: int) -> bool:
        if self.bits[index]:
            return False
        self.bits[index] = 1
        self.count += 1
        return True


@dataclass
class RayRun:
    """What the Ray engine did (for the summary line and the tests)."""

    actors: int = 0
    threads: int = 0  # interpreter threads per actor
    cluster_cpus: float = 0.0
    min_actors: int | None = None  # set: an autoscaling pool from this many up to ``actors``
    duplicates: int = 0  # rows that arrived a second time (a retried batch) and were not written
    started_at: float | None = None  # perf_counter when the pipeline was started
    first_rows_at: float | None = None  # ... and when its first rows came back
    first_rows: int = 0


class _RayRows:
    """``edge.score.RowSource`` on a connected Ray cluster."""

    def __init__(self, ray, ray_options: RayOptions, run: RayRun) -> None:
        self.ray, self.options, self.run = ray, ray_options, run

    def _pool(self, ray):
        if self.run.min_actors is None:
            return ray.data.ActorPoolStrategy(size=self.run.actors)
        return ray.data.ActorPoolStrategy(min_size=self.run.min_actors, max_size=self.run.actors)

    def __call__(self, classifier: CrackClassifier, paths: list[Path], grid: TileGrid,
                 options: ScoreOptions) -> Iterator[list[Row]]:
        if not paths:
            return
        ray = self.ray
        model = Path(options.model)
        data = model.read_bytes()
        setup = _ActorSetup(model_name=model.name, model_bytes=data,
                            model_sha256=hashlib.sha256(data).hexdigest(),
                            contract=classifier.contract, threads=self.run.threads, grid=grid,
                            batch_size=options.batch_size, decode_workers=options.decode_workers,
                            max_pixels=options.max_pixels,
                            pause_dir=os.environ.get(PAUSE_VARIABLE) or None)
        items = [{"index": index, "path": os.fsencode(os.path.abspath(path))}
                 for index, path in enumerate(paths)]
        dataset = ray.data.from_items(items).map_batches(
            _ScoringActor, fn_constructor_args=(setup,), batch_size=self.options.batch_size,
            batch_format="numpy", compute=self._pool(ray),
            num_cpus=self.options.cpus_per_actor)
        written = _Written(len(paths))
        self.run.started_at = time.perf_counter()
        try:
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                if self.run.first_rows_at is None:
                    self.run.first_rows_at, self.run.first_rows = time.perf_counter(), len(batch["index"])
                rows = []
                for index, blob in zip(batch["index"], batch["row"]):
                    index = int(index)
                    if not written.first_time(index):
                        self.run.duplicates += 1
                        continue
                    row = pickle.loads(blob)
                    rows.append(dataclasses.replace(row, path=str(paths[index])))
                yield rows
        except (KeyboardInterrupt, GeneratorExit):
            raise
        except Exception as exc:  # a Ray or worker failure: one line, the rows so far are kept
            raise RuntimeFailure(f"the Ray run failed after {written.count} of {len(paths)} "
                                 f"file(s): {_cause(exc)}; the rows written are kept (continue "
                                 "with --resume)") from None
        missing = len(paths) - written.count
        if missing:
            raise RuntimeFailure(f"the Ray run ended without a row for {missing} of {len(paths)} "
                                 "file(s); the rows written are kept (continue with --resume)")


def _cause(exc: BaseException) -> str:
    """The first line of the innermost error a Ray failure wraps (a worker's own error)."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (UserError, RuntimeFailure)):
            return str(exc)
        inner = getattr(exc, "cause", None) or exc.__cause__
        if not isinstance(inner, BaseException):
            break
        exc = inner
    text = str(exc).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    # Ray's task errors start with the task's name; the worker's error is the last line
    return f"{type(exc).__name__}: {lines[-1][:200]}" if lines else type(exc).__name__


def connect(ray, address: str | None) -> bool:
    """Connect to (or start) Ray; True when this process started it. One line on failure."""
    import logging

    started = not ray.is_initialized()
    if not started:
        return False
    _probe(address)
    try:
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=True, configure_logging=True)
    except Exception as exc:  # ConnectionError, ValueError, RuntimeError: Ray's own words
        where = f"at {address}" if address else "(no --ray-address: RAY_ADDRESS or a local Ray)"
        raise UserError(f"cannot connect to the Ray cluster {where}: "
                        f"{first_line(exc).splitlines()[0]}") from None
    return True


PROBE_TIMEOUT_S = 10.0


def _probe(address: str | None) -> None:
    """A HOST:PORT that nothing answers on is a one-line error at once (Ray itself would retry
    for minutes). Other forms (None, auto, local, ray://...) are left to Ray."""
    import socket

    if address is None or "://" in address or address in ("auto", "local"):
        return
    host, colon, port = address.rpartition(":")
    host = host.strip("[]")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--ray-address {address!r} is not HOST:PORT (the head's GCS port, "
                        "6379 by default), ray://HOST:PORT, auto or local")
    try:
        with socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__ if not isinstance(exc, TimeoutError) else \
            f"no answer within {PROBE_TIMEOUT_S:g} s"
        raise UserError(f"cannot reach the Ray cluster at {address}: {reason} (is `ray start "
                        "--head` running there, and is this its GCS port?)") from None


def run_score_ray(options: ScoreOptions, ray_options: RayOptions,
                  say: Callable[[str], None] = print, run: RayRun | None = None) -> ScoreSummary:
    """``edge.score.run_score`` with the rows made on a Ray cluster; ``run``, when given, is
    filled in with what the engine did (benchmarks, tests)."""
    ray = import_ray()
    _quiet_ray_data(ray)
    run = run if run is not None else RayRun()
    started = connect(ray, ray_options.address)
    try:
        cpus = float(ray.cluster_resources().get("CPU", 0.0))
        run.cluster_cpus = cpus
        per_actor = ray_options.cpus_per_actor
        run.threads = options.threads or max(1, int(per_actor))
        if ray_options.actors is None:
            if cpus < per_actor:
                raise UserError(f"the Ray cluster has {cpus:g} CPUs, too few for one actor; for a "
                                "cluster that scales up, give --ray-actors N")
            run.actors = int(cpus // per_actor)
        else:
            run.actors = ray_options.actors
            if run.actors * per_actor > cpus:  # an autoscaling cluster grows; others wait
                run.min_actors = 1
                say(f"the Ray cluster has {cpus:g} CPUs now, fewer than --ray-actors "
                    f"{run.actors} need: starting with the actors that fit, up to {run.actors} "
                    "as the cluster grows")
        summary = run_score(options, say, rows_for=_RayRows(ray, ray_options, run))
    finally:
        if started:
            ray.shutdown()
    summary.interpreter += f" in {run.actors} Ray actor(s)"
    summary.threads = run.threads  # per actor
    if run.duplicates:
        say(f"{run.duplicates} row(s) came back twice from retried Ray batches and were written once")
    return summary


def _quiet_ray_data(ray) -> None:
    """No Ray Data progress bars or per-run log lines: `score` has its own progress bar."""
    import logging

    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "bars disabled"
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
