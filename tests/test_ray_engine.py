"""`crack-edge score --engine ray` on a real (local) Ray cluster: a head on 127.0.0.1 with 2 CPUs,
started once for the module (`ray start --head --block`, benchmarks.ray_scoring.local_ray_head),
and real photos from ../shared/data. The CLI runs as a subprocess, connecting with
--ray-address like a driver of a real cluster.

- the same rows (every column but the measured latency) as the single-process `score`;
- every file exactly once after a worker (an actor's process) is killed mid-run: the first actor
  to start its second batch writes its pid and waits (edge.ray_engine.PAUSE_VARIABLE), the test
  kills that pid, Ray restarts the actor and retries the batch;
- --resume across engines, both ways, over a torn last row;
- one-line errors (exit 2) without Ray and for an address nothing answers on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import PROJECT
from outside_programs import free_port, wait_for
from edge.results_file import read_results

EDGE = [sys.executable, "-m", "edge"]
RUN_TIMEOUT = 300  # seconds: an upper bound for a subprocess, never a measured duration
# Every field of a row but the measured latency.
COMPARED = ("path", "probability", "label", "error", "capture_time", "gps_lat", "gps_lon",
            "gps_alt", "orientation", "tiles")


def needs_ray() -> None:
    """Skip without Ray here; fail when CI=true (`make test-integration` installs the extra)."""
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        message = 'Ray is not installed (pip install ".[cluster]")'
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def ray_head():
    """(address, environment for drivers) of a 2-CPU Ray head on 127.0.0.1."""
    needs_ray()
    from benchmarks.ray_scoring import LOOPBACK_ENV, local_ray_head

    with local_ray_head(cpus=2) as address:
        yield address, {**os.environ, **LOOPBACK_ENV}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    """40 small real photos: 16 cracked and 16 clean concrete patches (227 px), 8 road photos
    (480x320), used in place; and one empty .jpg for an error row."""
    from conftest import shared_data_dir

    data = shared_data_dir()
    found = (sorted((data / "surface_crack" / "test" / "Positive").glob("*.jpg"))[:16]
             + sorted((data / "surface_crack" / "test" / "Negative").glob("*.jpg"))[:16]
             + sorted((data / "crackforest" / "image").glob("*.jpg"))[:8])
    assert len(found) == 40
    broken = tmp_path_factory.mktemp("broken") / "empty.jpg"
    broken.write_bytes(b"")
    return [*found, broken]


def listing(paths: list[Path], folder: Path, name: str = "photos.txt") -> str:
    path = folder / name
    path.write_text("".join(f"{p}\n" for p in paths))
    return f"@{path}"


def score(model: Path, inputs: str, out: Path, *extra: str, env: dict | None = None,
          engine: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([*EDGE, "score", "--model", str(model), inputs, "--out", str(out),
                           "--no-progress", *engine, *extra], capture_output=True, text=True,
                          timeout=RUN_TIMEOUT, cwd=PROJECT, env=env)


def ray_engine(address: str, *more: str) -> tuple[str, ...]:
    return ("--engine", "ray", "--ray-address", address, *more)


def rows_by_path(path: Path) -> dict[str, dict]:
    content = read_results(path)
    found: dict[str, dict] = {}
    for row in content.rows:
        assert row.path not in found, f"{row.path} is in {path.name} twice"
        found[row.path] = {name: getattr(row, name) for name in COMPARED}
    return found


class Reference(dict):
    """Rows by path, and the results file's identity line."""

    identity_line: bytes = b""


@pytest.fixture(scope="module")
def local_rows(edge_models, photos, tmp_path_factory) -> Reference:
    """The single-process engine's rows for ``photos``: the reference."""
    folder = tmp_path_factory.mktemp("local")
    out = folder / "local.csv"
    result = score(edge_models["int8"], listing(photos, folder), out)
    assert result.returncode == 0, result.stderr
    reference = Reference(rows_by_path(out))
    reference.identity_line = out.read_bytes().split(b"\r\n", 1)[0]
    return reference


@pytest.mark.integration
def test_the_ray_engine_writes_the_same_rows_as_the_single_process_score(
        ray_head, edge_models, photos, local_rows, tmp_path):
    address, env = ray_head
    out = tmp_path / "ray.csv"
    result = score(edge_models["int8"], listing(photos, tmp_path), out, env=env,
                   engine=ray_engine(address, "--ray-actors", "2", "--ray-batch-size", "8"))
    assert result.returncode == 0, result.stderr
    assert "in 2 Ray actor(s)" in result.stdout and "scored 40 image(s), 1 error(s)" in result.stdout
    assert rows_by_path(out) == local_rows  # probabilities, labels, errors, EXIF: all identical
    assert local_rows[str(photos[-1])]["error"] == "empty file"
    # the same identity line, so either engine can --resume the other's file
    assert out.read_bytes().split(b"\r\n", 1)[0] == local_rows.identity_line


@pytest.mark.integration
def test_tiles_and_jsonl_are_the_same_on_ray_too(ray_head, edge_models, photos, tmp_path):
    address, env = ray_head
    some = [*photos[:4], *photos[32:36]]  # concrete patches and road photos
    options = ("--tiles", "2x2", "--format", "jsonl", "--threshold", "0.4")
    local = score(edge_models["fp32"], listing(some, tmp_path), tmp_path / "local.jsonl", *options)
    assert local.returncode == 0, local.stderr
    ray = score(edge_models["fp32"], listing(some, tmp_path), tmp_path / "ray.jsonl", *options,
                env=env, engine=ray_engine(address, "--ray-actors", "1"))
    assert ray.returncode == 0, ray.stderr
    expected = rows_by_path(tmp_path / "local.jsonl")
    assert all(len(row["tiles"]) == 4 for row in expected.values())
    assert rows_by_path(tmp_path / "ray.jsonl") == expected
    assert (tmp_path / "ray.jsonl").read_bytes().split(b"\n", 1)[0] == \
        (tmp_path / "local.jsonl").read_bytes().split(b"\n", 1)[0]


@pytest.mark.integration
def test_every_file_is_written_exactly_once_after_a_worker_is_killed_mid_run(
        ray_head, edge_models, photos, local_rows, tmp_path):
    address, env = ray_head
    pause = tmp_path / "pause"
    pause.mkdir()
    out = tmp_path / "ray.csv"
    command = [*EDGE, "score", "--model", str(edge_models["int8"]), listing(photos, tmp_path),
               "--out", str(out), "--no-progress",
               *ray_engine(address, "--ray-actors", "2", "--ray-batch-size", "4")]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=PROJECT, env={**env, "CRACK_EDGE_RAY_PAUSE_DIR": str(pause)})
    try:
        paused = pause / "paused"
        # the actor writes its pid once it has scored its first batch, then waits to be killed
        wait_for(lambda: paused.exists() and paused.read_text().strip().isdigit()
                 or driver.poll() is not None, "an actor to pause after its first batch",
                 timeout=RUN_TIMEOUT)
        assert driver.poll() is None, driver.communicate()[1]
        pid = int(paused.read_text())
        assert pid != driver.pid
        os.kill(pid, signal.SIGKILL)
        stdout, stderr = driver.communicate(timeout=RUN_TIMEOUT)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.communicate()
    assert driver.returncode == 0, stderr
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # that worker is gone: its batch was redone by a restarted actor
    assert "scored 40 image(s), 1 error(s)" in stdout
    rows = rows_by_path(out)  # fails on any file written twice
    assert rows == local_rows  # and every file once, with the same row


@pytest.mark.integration
@pytest.mark.parametrize("first,second", [("local", "ray"), ("ray", "local")])
def test_a_results_file_started_by_one_engine_is_resumed_by_the_other(
        ray_head, edge_models, photos, local_rows, tmp_path, first, second):
    address, env = ray_head
    engines = {"local": (), "ray": ray_engine(address, "--ray-actors", "2", "--ray-batch-size", "6")}
    out = tmp_path / "results.csv"
    half = photos[:20]
    started = score(edge_models["int8"], listing(half, tmp_path, "half.txt"), out, env=env,
                    engine=engines[first])
    assert started.returncode == 0, started.stderr
    data = out.read_bytes()
    out.write_bytes(data[:-7])  # a torn last row, as after a crash: cut off and scored again
    resumed = score(edge_models["int8"], listing(photos, tmp_path), out, "--resume", env=env,
                    engine=engines[second])
    assert resumed.returncode == 0, resumed.stderr
    assert "19 already in the output (--resume)" in resumed.stdout
    assert "scored 21 image(s), 1 error(s)" in resumed.stdout
    assert rows_by_path(out) == local_rows


def test_the_ray_engine_without_ray_is_one_line_and_exit_2(edge_models, photos, tmp_path):
    """Runs everywhere (no Ray needed): the import of ray is blocked."""
    out = tmp_path / "out.csv"
    code = (
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'ray':\n"
        "            raise ImportError('No module named ' + repr(name))\n"
        "sys.meta_path.insert(0, Block())\n"
        "from edge.cli import main\n"
        f"sys.argv = ['crack-edge', 'score', '--model', {str(edge_models['int8'])!r}, "
        f"{str(photos[0])!r}, '--out', {str(out)!r}, '--engine', 'ray']\n"
        "main()\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=RUN_TIMEOUT, cwd=PROJECT)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and 'pip install ".[cluster]"' in lines[0], result.stderr
    assert not out.exists()


@pytest.mark.integration
def test_an_address_nothing_answers_on_is_one_line_and_exit_2(edge_models, photos, tmp_path):
    needs_ray()
    out = tmp_path / "out.csv"
    for address, words in ((f"127.0.0.1:{free_port()}", "cannot reach the Ray cluster"),
                           ("no-port-here", "is not HOST:PORT")):
        result = score(edge_models["int8"], str(photos[0]), out, engine=ray_engine(address))
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and "Traceback" not in result.stderr
        assert not out.exists()


@pytest.mark.integration
def test_the_ray_benchmark_runs_at_tiny_size(ray_head, edge_models, tmp_path):
    address, env = ray_head
    out = tmp_path / "ray_scoring.json"
    result = subprocess.run([sys.executable, "-m", "benchmarks.ray_scoring", "--photos", "6",
                             "--rounds", "1", "--model", str(edge_models["int8"]),
                             "--ray-address", address, "--out", str(out)],
                            capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=PROJECT,
                            env=env)
    assert result.returncode == 0, result.stderr
    saved = json.loads(out.read_text())
    for name in ("local", "ray_1", "ray_2"):
        assert saved["engines"][name]["photos_per_s"] > 0
    assert saved["photos"] == 6 and saved["machine"]["other_processes_cores"] is not None
    assert set(saved["ray_overhead_s"]) == {"ray_1", "ray_2"}
