"""`crack-edge score --engine ray` against the single-process `score`, on the same real photos:

- the single-process `score` (``edge.score.run_score``, in this process, default options);
- the Ray engine (``edge.ray_engine.run_score_ray``) with 1 and with 2 actors, on a local Ray
  head started for the run (`ray start --head --block` on 127.0.0.1, as many CPUs as the machine
  has), connected to with --ray-address like a real cluster;
- for each, photos per second over the whole call (opening the output, the actors' start,
  scoring, writing) and over the scoring alone once the first row is written (the rate a long run
  approaches), and Ray's overhead: the whole-call seconds against the single-process ones, and the
  actors' start (first row) in seconds.

    python -m benchmarks.ray_scoring [--photos 600] [--rounds 3] [--model M.tflite]
        [--source both|crackforest|surface_crack] [--ray-address ADDR] [--out FILE]

The photos are the real ones in ../shared/data, used in place: by default CrackForest's 155
480x320 road photos (with the unlabelled ones), then surface_crack's 227x227 patches. The model
is edge_throughput's random-weight ResNet50V2 int8 at 224 px (converted when missing; weights do
not change the speed). The single-process run uses all cores in one interpreter, as `score`
does; each actor uses one thread on one CPU. Each round runs the three engines in turn, and the
medians over the rounds are reported with how many cores other processes kept busy (the machine
is shared; the Ray head's own processes are counted as the benchmark's). Needs Ray:
pip install ".[cluster]".
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks.machine import (
    RESULTS_DIR,
    SHARED_DATA,
    WORK_DIR,
    argument_parser,
    cpu_mark,
    describe_machine,
    machine_info,
    median_of,
    print_table,
)

DEFAULT_MODEL = WORK_DIR / "edge_throughput" / "resnet50v2_224_int8.tflite"
SOURCES = {"crackforest": ("crackforest/image", "crackforest/unlabelled"),  # 155, 480x320
           "surface_crack": ("surface_crack/test", "surface_crack/valid", "surface_crack/train"),
           "both": ("crackforest/image", "crackforest/unlabelled", "surface_crack/test",
                    "surface_crack/valid", "surface_crack/train")}  # 155 + 1,000 at 227x227
# Ray replaces 127.0.0.1 in an address with the machine's own network address unless clusters
# are "disabled" (its single-machine mode); with this, the head, its workers and the driver all
# stay on 127.0.0.1. A head that only 127.0.0.1 reaches runs without Ray's token authentication
# (which would otherwise write a token to ~/.ray of the user).
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
                "RAY_AUTH_MODE": "disabled"}
HEAD_START_TIMEOUT_S = 180.0
STOP_GRACE_S = 10.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ray_program() -> str:
    found = Path(sys.executable).parent / "ray"
    return str(found) if found.exists() else (shutil.which("ray") or "ray")


@contextlib.contextmanager
def local_ray_head(cpus: int = 2, env: dict[str, str] | None = None,
                   timeout: float = HEAD_START_TIMEOUT_S,
                   cpu_used: list[float] | None = None) -> Iterator[str]:
    """A Ray head on 127.0.0.1 for as long as the block runs: yields its address (HOST:PORT).

    `ray start --head --block` in its own session, every port chosen free (so it never meets
    another Ray on this machine), its own short temporary folder (Unix socket paths are short),
    no dashboard. Set ``LOOPBACK_ENV`` in the driver too (``os.environ`` or a subprocess's env).
    Stopped by signalling its process group, never with `ray stop` (which stops every Ray of
    the user). ``cpu_used``, when given, gets the CPU seconds the head's processes (GCS, raylet,
    workers and actors) used from its start, sampled (``SessionCpu``), appended when it stops."""
    temp = tempfile.mkdtemp(prefix="rayh", dir="/tmp")
    port = _free_port()
    command = [ray_program(), "start", "--head", "--block", "--disable-usage-stats",
               "--node-ip-address=127.0.0.1", f"--port={port}", f"--num-cpus={cpus}",
               "--include-dashboard=false", f"--temp-dir={temp}",
               f"--ray-client-server-port={_free_port()}",
               f"--dashboard-agent-listen-port={_free_port()}",
               f"--dashboard-agent-grpc-port={_free_port()}",
               f"--runtime-env-agent-port={_free_port()}",
               f"--metrics-export-port={_free_port()}",
               f"--node-manager-port={_free_port()}", f"--object-manager-port={_free_port()}"]
    log_path = Path(temp) / "head.log"
    sampler = None
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True,
                                   env={**os.environ, **LOOPBACK_ENV, "TMPDIR": temp,
                                        **(env or {})})  # the actors' model copies go with it
    try:
        deadline = time.monotonic() + timeout
        while b"Ray runtime started" not in log_path.read_bytes():
            if process.poll() is not None:
                raise RuntimeError(f"ray start --head exited with {process.returncode}: "
                                   f"{log_path.read_text(errors='replace')[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"ray start --head did not start within {timeout:g} s")
            time.sleep(0.1)
        sampler = SessionCpu(process.pid) if cpu_used is not None else None
        yield f"127.0.0.1:{port}"
    finally:
        if sampler is not None:
            cpu_used.append(sampler.stop())
        _stop_group(process)
        shutil.rmtree(temp, ignore_errors=True)


class SessionCpu:
    """CPU seconds used by the processes of a session (the Ray head's: GCS, raylet, workers,
    actors), sampled from /proc every ``interval`` seconds so that processes that have ended by
    the last sample (actors stopped after each run) still count."""

    def __init__(self, session: int, interval: float = 0.25) -> None:
        self.session, self.interval = session, interval
        self.seen: dict[tuple[int, int], float] = {}  # (pid, start time) -> CPU seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        ticks = os.sysconf("SC_CLK_TCK")
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # fields from the state on: state ppid pgrp session ... utime stime (11, 12) ...
            # starttime (19)
            if int(fields[3]) == self.session:
                key = (int(entry.name), int(fields[19]))
                self.seen[key] = (int(fields[11]) + int(fields[12])) / ticks

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self._sample()
        return sum(self.seen.values())


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to the head's process group (`ray start --block` stops its processes), then
    SIGKILL to whatever of that group is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


def photo_list(source: str, count: int) -> list[Path]:
    """The first ``count`` real photos of ``source``, used in place (each is a distinct file:
    `score` lists a file reached twice, by a link, once)."""
    photos = sorted(path for folder in SOURCES[source]
                    for path in (SHARED_DATA / folder).rglob("*.jpg"))
    if len(photos) < count:
        raise SystemExit(f"{source} has {len(photos)} photos in {SHARED_DATA}, not {count}")
    return photos[:count]


def _list_file(paths: list[Path], folder: Path) -> str:
    listing = folder / "photos.txt"
    listing.write_text("".join(f"{path}\n" for path in paths))
    return f"@{listing}"


class _FirstRow:
    """Wraps the single-process engine to note when its first rows came back."""

    def __init__(self) -> None:
        self.at: float | None = None
        self.rows = 0

    def __call__(self, *args):
        from edge.score import local_rows

        for part in local_rows(*args):
            if self.at is None and part:
                self.at, self.rows = time.perf_counter(), len(part)
            yield part


def time_engine(engine: str, model: Path, inputs: str, out: Path, address: str | None = None,
                actors: int = 1, ray_batch_size: int = 32) -> dict:
    """One run of `score` (in-process, default options, writing its CSV) on ``inputs``."""
    from edge.ray_engine import RayOptions, RayRun, run_score_ray
    from edge.score import ScoreOptions, run_score

    options = ScoreOptions(model=model, inputs=(inputs,), out=out, overwrite=True,
                           show_progress=False)
    say = lambda line: None  # noqa: E731
    started = time.perf_counter()
    if engine == "local":
        first = _FirstRow()
        summary = run_score(options, say, rows_for=first)
        first_at, first_rows = first.at, first.rows
    else:
        run = RayRun()
        summary = run_score_ray(options, RayOptions(address=address, actors=actors,
                                                    batch_size=ray_batch_size), say, run)
        first_at, first_rows = run.first_rows_at, run.first_rows
    ended = time.perf_counter()
    files = summary.scored + summary.errors
    steady = None
    if first_at is not None and files > first_rows:
        steady = (files - first_rows) / max(ended - first_at, 1e-9)
    return {"engine": engine, "actors": actors if engine == "ray" else None, "files": files,
            "errors": summary.errors, "seconds": ended - started,
            "photos_per_s": files / (ended - started),
            "first_row_s": None if first_at is None else first_at - started,
            "steady_photos_per_s": steady, "interpreter": summary.interpreter,
            "threads": summary.threads}


def ensure_model(model: Path, photos: list[Path]) -> Path:
    if model.is_file():
        return model
    if model != DEFAULT_MODEL:
        raise SystemExit(f"model not found: {model}")
    from benchmarks.survey_photos import int8_model

    return int8_model(224, photos)


def main(argv: list[str] | None = None) -> dict:
    parser = argument_parser("benchmarks.ray_scoring", __doc__)
    parser.add_argument("--photos", type=int, default=600, help="photos per run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three runs")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="the .tflite to score with")
    parser.add_argument("--source", choices=sorted(SOURCES), default="both")
    parser.add_argument("--ray-batch-size", type=int, default=32, help="files per actor call")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2,
                        help="CPUs of the local Ray head")
    parser.add_argument("--ray-address", help="run on this Ray cluster (HOST:PORT) instead of a "
                        "local head started for the benchmark")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "ray_scoring.json")
    args = parser.parse_args(argv)
    if not args.ray_address:  # before Ray is imported: it reads these once
        os.environ.update(LOOPBACK_ENV)  # the driver (this process) talks to the head on 127.0.0.1
    from edge.ray_engine import import_ray

    import_ray()  # one line and exit 2 when Ray is missing, before any work
    photos = photo_list(args.source, args.photos)
    model = ensure_model(args.model, photos)
    scratch = Path(tempfile.mkdtemp(prefix="ray_scoring_"))
    inputs = _list_file(photos, scratch)
    mark = cpu_mark()
    head_cpu: list[float] = []
    rounds = []
    try:
        head = contextlib.nullcontext(args.ray_address) if args.ray_address else \
            local_ray_head(cpus=args.cpus, cpu_used=head_cpu)
        with head as address:
            for number in range(args.rounds):
                figures = {}
                # threads=1 per actor is the engine's default; the single-process run gets the
                # machine's default (all cores), as `crack-edge score` does
                figures["local"] = time_engine("local", model, inputs, scratch / "local.csv")
                for actors in (1, 2):
                    figures[f"ray_{actors}"] = time_engine(
                        "ray", model, inputs, scratch / f"ray_{actors}.csv", address=address,
                        actors=actors, ray_batch_size=args.ray_batch_size)
                rounds.append(figures)
                print(f"round {number + 1}: " + ", ".join(
                    f"{name} {f['photos_per_s']:.1f}/s" for name, f in figures.items()), flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    machine = machine_info(since=mark)
    if head_cpu and machine.get("other_processes_cores") is not None:
        # the head's processes (raylet, actors) are this benchmark's, not other processes'
        elapsed = time.monotonic() - mark[1]
        machine["ray_head_cpu_s"] = round(head_cpu[0], 2)
        machine["other_processes_cores"] = round(
            max(machine["other_processes_cores"] - head_cpu[0] / elapsed, 0.0), 2)

    def median(name: str, key: str) -> float | None:
        values = [r[name][key] for r in rounds if r[name][key] is not None]
        return median_of(values) if values else None

    summary = {name: {key: median(name, key) for key in
                      ("seconds", "photos_per_s", "first_row_s", "steady_photos_per_s")}
               for name in ("local", "ray_1", "ray_2")}
    local_s = summary["local"]["seconds"]
    result = {
        "model": str(model), "photos": len(photos), "source": " + ".join(SOURCES[args.source]),
        "ray_batch_size": args.ray_batch_size, "ray_head_cpus": args.cpus,
        "engines": summary,
        "ray_overhead_s": {name: summary[name]["seconds"] - local_s for name in ("ray_1", "ray_2")},
        "ray_2_over_ray_1_steady": (summary["ray_2"]["steady_photos_per_s"] or 0)
        / max(summary["ray_1"]["steady_photos_per_s"] or 1e-9, 1e-9),
        "rounds": rounds, "machine": machine,
    }
    print(f"\n{len(photos)} photos ({' + '.join(SOURCES[args.source])}), {args.rounds} round(s), "
          f"{describe_machine(machine)}")
    print_table(["engine", "whole call s", "photos/s", "first row s", "photos/s after it"],
                [[name, f"{f['seconds']:.1f}", f"{f['photos_per_s']:.1f}",
                  "" if f["first_row_s"] is None else f"{f['first_row_s']:.1f}",
                  "" if f["steady_photos_per_s"] is None else f"{f['steady_photos_per_s']:.1f}"]
                 for name, f in summary.items()])
    print(f"Ray's overhead against the single-process score: "
          f"{result['ray_overhead_s']['ray_1']:+.1f} s (1 actor), "
          f"{result['ray_overhead_s']['ray_2']:+.1f} s (2 actors)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
