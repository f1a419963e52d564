"""`crack train --strategy multi-worker`: two real worker processes on 127.0.0.1, one
``tf.distribute.MultiWorkerMirroredStrategy`` cluster described by TF_CONFIG, train a tiny run;
only the chief writes the run folder, and the run converts; SIGTERM to one worker stops both, and
both resume from the chief's run. Plus the fast checks of TF_CONFIG.

Each worker plays a machine of its own: its own working directory, --runs-dir and TMPDIR, so the
tests see what each one leaves behind. Every wait is on a process or on a line in its output,
with a generous upper bound.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from outside_programs import free_port

from edge.errors import UserError

WORKER_TIMEOUT = 1200.0  # seconds for both workers; about 100 s on an idle 2-core machine
CONVERT_TIMEOUT = 900.0
TINY_SIZE = 32           # as tests/fixtures_training.py: ResNet50V2 at 32x32, random weights
PER_CLASS = 12           # 24 images: 16 train, 4 val, 4 test; 2 steps of a global batch of 8


def crack(*args) -> list[str]:
    return [sys.executable, "-m", "convert", *map(str, args)]


def tf_config(ports: list[int], index: int) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                       "task": {"type": "worker", "index": index}})


def two_free_ports() -> list[int]:
    ports = [free_port()]
    while len(ports) < 2:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


class Cluster:
    """Two `crack train --strategy multi-worker` processes on 127.0.0.1, each playing a machine
    of its own under tmp_path/machineN: its own working directory, --runs-dir and TMPDIR."""

    def __init__(self, root: Path):
        self.machines = [root / f"machine{index}" for index in (0, 1)]
        for machine in self.machines:
            (machine / "tmp").mkdir(parents=True, exist_ok=True)
        self.workers: list[subprocess.Popen] = []

    def start(self, *args, log: str = "worker.log") -> None:
        """Both workers with ``crack train ARGS``; ``--runs-dir`` is each machine's own."""
        ports = two_free_ports()
        self.log = log
        self.workers = []
        for index, machine in enumerate(self.machines):
            env = {**os.environ, "TF_CONFIG": tf_config(ports, index),
                   "TMPDIR": str(machine / "tmp"), "TF_CPP_MIN_LOG_LEVEL": "2"}
            with (machine / log).open("wb") as output:
                self.workers.append(subprocess.Popen(
                    crack("train", *args), cwd=machine, env=env, stdout=output,
                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))

    def wait(self, timeout: float = WORKER_TIMEOUT) -> list[int | None]:
        """Until both have exited or one has failed (the other would wait for it until its own
        collective timeouts), or ``timeout``; then no worker is left running. Exit codes."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                codes = [worker.poll() for worker in self.workers]
                if None not in codes or any(code not in (None, 0, 130) for code in codes):
                    break
                time.sleep(0.2)
        finally:
            self.kill()
        return [worker.returncode for worker in self.workers]

    def output(self, index: int) -> str:
        return (self.machines[index] / self.log).read_text(errors="replace")

    def logs(self) -> str:
        return "\n".join(f"----- worker {index} ({self.log}) -----\n{self.output(index)[-6000:]}"
                         for index in (0, 1))

    def kill(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()

    def assert_worker_1_left_nothing(self) -> None:
        assert not (self.machines[1] / "runs").exists(), self.logs()
        left = [path.name for path in (self.machines[1] / "tmp").iterdir()]
        assert not [name for name in left if name.startswith("crack-worker")], self.logs()
        assert not list((self.machines[1] / "tmp").rglob("*.keras")), left


@pytest.fixture
def data(tmp_path) -> Path:
    """The same path for both workers, as a shared file system would give."""
    from training.demo_data import DemoOptions, generate_demo

    folder = tmp_path / "data"
    generate_demo(DemoOptions(out=folder, count=PER_CLASS, size=48, seed=1), progress=False)
    return folder


def tiny_run(data: Path) -> list:
    # one epoch of each phase, as the suite's tiny run: the second phase recompiles the model
    # under the strategy and starts from the first phase's weights
    return ["--data", data, "--runs-dir", "runs", "--name", "cluster", "--img-size", TINY_SIZE,
            "--weights", "none", "--head-epochs", 1, "--epochs", 1, "--fine-tune-at", "conv5",
            "--batch-size", 4, "--strategy", "multi-worker"]


@pytest.mark.slow
@pytest.mark.integration
def test_two_workers_train_one_run_that_only_the_chief_writes_and_that_converts(tmp_path, data):
    cluster = Cluster(tmp_path)
    started = time.monotonic()
    cluster.start(*tiny_run(data))
    codes = cluster.wait()
    print(f"two workers trained in {time.monotonic() - started:.0f} s")
    assert codes == [0, 0], cluster.logs()

    # the chief (worker 0) wrote the whole run ...
    run = cluster.machines[0] / "runs" / "cluster"
    for name in ("model.keras", "contract.json", "metrics.json", "history.csv", "train.log",
                 "state.json", "splits/train.csv", "checkpoints/best.weights.h5"):
        assert (run / name).is_file(), f"{name} missing\n{cluster.logs()}"
    assert sorted(json.loads((run / "state.json").read_text())["done"]) == [
        "evaluate", "fine_tune", "head"]
    assert (cluster.machines[0] / "runs" / "latest").resolve() == run.resolve()
    log = (run / "train.log").read_text()
    assert "worker 0 of 2 workers (chief: writes the run)" in log
    assert "2 replicas: global batch 8 (4 each)" in log
    # ... the other worker trained with it but left nothing: no run folder, its temporary one gone
    cluster.assert_worker_1_left_nothing()
    output = cluster.output(1)
    assert f"worker 1 of 2 done: worker 0 wrote {run.resolve()}" in output, cluster.logs()
    # it waited for the chief, and the chief left last: no TensorFlow saw its peer vanish
    for index in (0, 1):
        assert "unhealthy" not in cluster.output(index), cluster.logs()
        assert "Failed to send RPC" not in cluster.output(index), cluster.logs()
    # one cluster, not two runs side by side: the worker printed the chief's (global) epoch metrics
    with (run / "history.csv").open() as handle:
        history = list(csv.DictReader(handle))
    assert [int(row["epoch"]) for row in history] == [0, 1]
    for row in history:
        assert f"val_loss: {float(row['val_loss']):.4f}" in output, cluster.logs()

    # The test split has 4 images, so one image that int8 scores across the threshold is a drop of
    # 25 points of accuracy and more of F1: no gate means anything on a run this small (a model
    # trained for two epochs from random weights scores near 0.5). The gate is tested elsewhere;
    # here the run must convert.
    converted = subprocess.run(crack("convert", "--run", cluster.machines[0] / "runs" / "latest",
                                     "--modes", "fp32,int8", "--max-drop", 100, "--no-recover",
                                     "--latency-runs", 2, "--reference-images", 0),
                               capture_output=True, text=True, timeout=CONVERT_TIMEOUT,
                               stdin=subprocess.DEVNULL, env={**os.environ,
                                                              "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert converted.returncode == 0, converted.stdout[-4000:] + converted.stderr[-4000:]
    for mode in ("fp32", "int8"):
        model = run / "tflite" / f"model_{mode}.tflite"
        assert model.is_file() and model.stat().st_size > 0, converted.stdout[-4000:]


@pytest.mark.slow
@pytest.mark.integration
def test_sigterm_to_one_worker_stops_both_and_both_resume_from_the_chiefs_run(tmp_path, data):
    cluster = Cluster(tmp_path)
    cluster.start(*tiny_run(data))
    try:  # phase 2 has begun (phase 1 is done and recorded): the signal lands inside an epoch
        deadline = time.monotonic() + WORKER_TIMEOUT
        while "Epoch 2/2" not in cluster.output(1):
            if any(worker.poll() is not None for worker in cluster.workers) \
                    or time.monotonic() > deadline:
                pytest.fail(f"phase 2 never began\n{cluster.logs()}")
            time.sleep(0.2)
        cluster.workers[1].send_signal(signal.SIGTERM)
    except BaseException:
        cluster.kill()
        raise
    assert cluster.wait() == [130, 130], cluster.logs()  # both stopped, after the same batch
    run = (cluster.machines[0] / "runs" / "cluster").resolve()
    assert ("a signal to another worker: training stopped on every worker; the last finished "
            f"epoch is kept in {run / 'checkpoints'}. Continue by starting every worker with: "
            f"crack train --resume {run}") in cluster.output(0), cluster.logs()
    assert ("SIGTERM: worker 1 stopped with the others; worker 0 keeps the run's last finished "
            "epoch") in cluster.output(1), cluster.logs()
    assert json.loads((run / "state.json").read_text())["done"] == ["head"]
    cluster.assert_worker_1_left_nothing()

    cluster.start("--resume", run, log="resume.log")  # the chief's run, seen by both
    assert cluster.wait() == [0, 0], cluster.logs()
    assert "phase 1 (head) already done; skipping" in cluster.output(1)
    assert sorted(json.loads((run / "state.json").read_text())["done"]) == [
        "evaluate", "fine_tune", "head"]
    assert f"worker 1 of 2 done: worker 0 wrote {run}" in cluster.output(1), cluster.logs()
    cluster.assert_worker_1_left_nothing()


# --- TF_CONFIG, checked before anything is written (no TensorFlow needed) ---

def config(cluster: dict, task: dict) -> dict[str, str]:
    return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": task})}


TWO = {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]}


@pytest.mark.parametrize("environ, message", [
    ({}, "needs the TF_CONFIG environment variable"),
    ({"TF_CONFIG": "  "}, "needs the TF_CONFIG environment variable"),
    ({"TF_CONFIG": "{cluster: 1"}, "TF_CONFIG is not valid JSON"),
    ({"TF_CONFIG": "[1, 2]"}, "must be a JSON object"),
    (config({}, {"type": "worker", "index": 0}), 'has no "cluster"'),
    (config({"worker": "10.0.0.1:2222"}, {"type": "worker", "index": 0}), '"host:port" strings'),
    (config({"worker": ["10.0.0.1"]}, {"type": "worker", "index": 0}), '"host:port" strings'),
    (config({**TWO, "ps": ["10.0.0.3:2222"]}, {"type": "worker", "index": 0}),
     "'ps' is not supported"),
    (config({**TWO, "chief": ["a:1", "b:1"]}, {"type": "chief", "index": 0}), "only one chief"),
    ({"TF_CONFIG": json.dumps({"cluster": TWO})}, 'has no "task"'),
    (config(TWO, {"type": "chief", "index": 0}), "task type 'chief' is not a job"),
    (config(TWO, {"type": ["worker"], "index": 0}), "task type ['worker'] is not a job"),
    (config(TWO, {"type": "worker", "index": 2}), "task index 2 is not in 0..1"),
    (config(TWO, {"type": "worker", "index": "1"}), "task index '1' is not in 0..1"),
    (config(TWO, {"type": "worker"}), "task index None"),
])
def test_a_missing_or_malformed_tf_config_is_a_user_error(environ, message):
    from training.multi_worker import cluster_worker

    with pytest.raises(UserError) as raised:
        cluster_worker(environ)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_the_chief_is_worker_0_unless_the_cluster_names_one():
    from training.multi_worker import cluster_worker

    first = cluster_worker(config(TWO, {"type": "worker", "index": 0}))
    second = cluster_worker(config(TWO, {"type": "worker", "index": 1}))
    assert (first.is_chief, second.is_chief, first.count) == (True, False, 2)
    assert second.tasks == ("worker 0", "worker 1")
    with_chief = {**TWO, "chief": ["10.0.0.9:2222"]}
    assert cluster_worker(config(with_chief, {"type": "chief", "index": 0})).is_chief
    worker0 = cluster_worker(config(with_chief, {"type": "worker", "index": 0}))
    assert (worker0.is_chief, worker0.chief, worker0.count) == (False, "chief 0", 3)


def test_crack_train_without_tf_config_stops_with_one_line_and_exit_2(tmp_path):
    from training.demo_data import DemoOptions, generate_demo

    data = tmp_path / "data"
    generate_demo(DemoOptions(out=data, count=4, size=32, seed=1), progress=False)
    env = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
    result = subprocess.run(crack("train", "--data", data, "--runs-dir", tmp_path / "runs",
                                  "--strategy", "multi-worker"),
                            capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("error: --strategy multi-worker needs the TF_CONFIG "
                                    "environment variable"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "runs").exists()  # checked before the run folder is made


def test_a_lost_worker_is_named_by_the_telling_line_of_tensorflows_error():
    from training.multi_worker import _reason

    class GraphError(Exception):
        message = ("Graph execution error:\n\nDetected at node Sum defined at (most recent call "
                   "last):\n  File train.py\n\nCollective ops is aborted by: Error reported from "
                   "/job:worker/task:1: The following tasks are unhealthy (stopped sending "
                   "heartbeats):\n/job:worker/replica:0/task:1")

    assert _reason(GraphError()).startswith("Collective ops is aborted by: Error reported from "
                                            "/job:worker/task:1")
