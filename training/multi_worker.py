"""`crack train --strategy multi-worker`: the same command on every machine, each a worker of one
``tf.distribute.MultiWorkerMirroredStrategy`` cluster described by the TF_CONFIG environment
variable (the same ``cluster`` everywhere, each machine its own ``task``):

    TF_CONFIG='{"cluster": {"worker": ["host0:2222", "host1:2222"]},
                "task": {"type": "worker", "index": 0}}'

Every worker reads the same data path, trains on its share of each global batch and keeps a full
copy of the weights. One worker is the chief (the ``chief`` task when the cluster names one, else
worker 0); it alone writes the run folder: checkpoints, state.json, logs, TensorBoard, model.keras,
the evaluation and runs/latest. The other workers write the same files into a private temporary
folder (``WorkerRun``), deleted when they finish, so that every worker runs the same callbacks and
stays in step with the others, and no two processes write one file.

A signal to any worker stops them all after the same batch (``any_worker_stopped``); at the end
the other workers wait for the chief to write the run, and the chief leaves last
(``WorkerRun``), so that no TensorFlow reports a vanished peer.

Keras 3 does not support this strategy officially (keras-team/keras#20585); ``strategy`` and
``local_symbolic_build`` work around the two places where model.fit fails under it (Keras 3.15).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from edge.errors import RuntimeFailure, UserError, first_line

MULTI_WORKER = "multi-worker"
JOBS = ("chief", "worker")  # no parameter servers or evaluators in this strategy
CHIEF_KEY = "crackkit/chief"  # the chief's "wrote RUN" or "failed: ..." for the other workers
LEFT_KEY = "crackkit/left"    # + "/worker 1": that worker is leaving
LEAVE_TIMEOUT_MS = 60_000     # how long the chief waits for each worker's goodbye
_cluster_started = False      # set by strategy(): the coordination service is running
TF_CONFIG_EXAMPLE = ('TF_CONFIG=\'{"cluster": {"worker": ["host0:2222", "host1:2222"]}, '
                     '"task": {"type": "worker", "index": 0}}\'')


@dataclass(frozen=True)
class Worker:
    """This process's place in the cluster."""

    task_type: str
    index: int
    tasks: tuple[str, ...]  # every worker of the cluster, this one and the chief included
    chief: str              # "chief 0" when the cluster names a chief, else "worker 0"

    @property
    def name(self) -> str:
        return f"{self.task_type} {self.index}"

    @property
    def count(self) -> int:
        return len(self.tasks)

    @property
    def is_chief(self) -> bool:
        return self.name == self.chief


def cluster_worker(environ: Mapping[str, str] = os.environ) -> Worker:
    """This worker, from TF_CONFIG; UserError (one line) when TF_CONFIG is missing or malformed."""
    raw = environ.get("TF_CONFIG", "").strip()
    if not raw:
        raise UserError("--strategy multi-worker needs the TF_CONFIG environment variable on "
                        f"every machine, e.g. {TF_CONFIG_EXAMPLE}")
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UserError(f"TF_CONFIG is not valid JSON ({exc.msg} at character {exc.pos})"
                        ) from None
    if not isinstance(config, dict):
        raise UserError("TF_CONFIG must be a JSON object with \"cluster\" and \"task\"")
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise UserError('TF_CONFIG has no "cluster": {"worker": ["host:port", ...]}')
    for job, addresses in cluster.items():
        if job not in JOBS:
            raise UserError(f"TF_CONFIG cluster job {job!r} is not supported by --strategy "
                            f"multi-worker (only {' and '.join(JOBS)})")
        if (not isinstance(addresses, list) or not addresses
                or not all(isinstance(a, str) and _is_host_port(a) for a in addresses)):
            raise UserError(f"TF_CONFIG cluster {job!r} must be a list of \"host:port\" strings, "
                            f"got {json.dumps(addresses)}")
    if len(cluster.get("chief", [])) > 1:
        raise UserError("TF_CONFIG cluster may name only one chief")
    if not isinstance(task, dict):
        raise UserError('TF_CONFIG has no "task": {"type": "worker", "index": N}')
    task_type, index = task.get("type"), task.get("index")
    if not isinstance(task_type, str) or task_type not in cluster:
        raise UserError(f"TF_CONFIG task type {task_type!r} is not a job of its cluster "
                        f"({', '.join(cluster)})")
    if isinstance(index, bool) or not isinstance(index, int) \
            or not 0 <= index < len(cluster[task_type]):
        last = len(cluster[task_type]) - 1
        raise UserError(f"TF_CONFIG task index {index!r} is not in 0..{last} (the {task_type} "
                        "list of its cluster)")
    return Worker(task_type=task_type, index=index,
                  tasks=tuple(f"{job} {i}" for job, addresses in cluster.items()
                              for i in range(len(addresses))),
                  chief="chief 0" if "chief" in cluster else "worker 0")


def _is_host_port(address: str) -> bool:
    host, _, port = address.rpartition(":")
    return bool(host) and port.isdigit()


class WorkerRun:
    """Where a worker writes its run: the chief in ``runs_dir`` as usual; any other worker in a
    private temporary folder, deleted on leaving the block (with the run of ``resume`` copied into
    it first, so that it continues from the same checkpoints as the chief)."""

    def __init__(self, worker: Worker | None) -> None:
        self.worker = worker
        self._temporary: Path | None = None
        self._trained = False

    @property
    def writes_run(self) -> bool:
        return self.worker is None or self.worker.is_chief

    def __enter__(self) -> "WorkerRun":
        if not self.writes_run:
            self._temporary = Path(tempfile.mkdtemp(prefix=f"crack-worker{self.worker.index}-"))
        return self

    def __exit__(self, kind, error, traceback) -> None:
        try:
            if self.worker is not None and self.worker.is_chief and error is not None:
                _tell(CHIEF_KEY, f"failed: {first_line(error)}")
            if self._temporary is not None:
                shutil.rmtree(self._temporary, ignore_errors=True)
            if self.worker is not None:
                self._explain_interruption(error)
        finally:
            self._leave_together()

    def _leave_together(self) -> None:
        """Each worker says it is leaving, and the chief (which runs the cluster's coordination
        service) leaves last, once the others have said so: a worker whose chief has gone, or a
        chief that outlives a worker for long, has TensorFlow log an error about the other."""
        if self.worker is None or not _cluster_started:
            return
        if not self.worker.is_chief:
            _tell(f"{LEFT_KEY}/{self.worker.name}", "left")
            return
        from tensorflow.python.eager import context

        for task in self.worker.tasks:
            if task != self.worker.name:
                with contextlib.suppress(Exception):  # gone already, or never came
                    context.context().get_config_key_value(f"{LEFT_KEY}/{task}",
                                                           timeout_in_ms=LEAVE_TIMEOUT_MS)

    def _explain_interruption(self, error) -> None:
        """A signal stops every worker after the same batch (training.signals, ``agree``); say
        so, and that every worker must resume from the chief's run."""
        from training.signals import TrainingInterrupted

        if not isinstance(error, TrainingInterrupted) or self._trained:
            return
        if self.worker.is_chief:
            raise TrainingInterrupted(error.layout, error.signal_name, (
                f"{error.signal_name}: training stopped on every worker; the last finished epoch "
                f"is kept in {error.layout.checkpoints}. Continue by starting every worker with: "
                f"crack train --resume {error.layout.root}")) from None
        # its own checkpoints were in the folder just deleted
        raise TrainingInterrupted(error.layout, error.signal_name, (
            f"{error.signal_name}: {self.worker.name} stopped with the others; "
            f"{self.worker.chief} keeps the run's last finished epoch. Continue by starting "
            "every worker with: crack train --resume RUN (the chief's run folder)")) from None

    def runs_dir(self, runs_dir: Path) -> Path:
        """The runs folder to create a new run in."""
        return runs_dir if self._temporary is None else self._temporary / "runs"

    def resume_from(self, run: Path) -> Path:
        """The run folder to resume: ``run`` itself, or a private copy of it (TensorBoard logs
        left out) that this worker may write to."""
        if self._temporary is None:
            return run
        if not run.is_dir():
            raise UserError(f"run not found: {run} (every worker must see the chief's run folder "
                            "to resume: a shared file system, or a copy at the same path)")
        copy = self._temporary / "runs" / run.resolve().name
        shutil.copytree(run, copy, ignore=shutil.ignore_patterns("tensorboard", "tflite"))
        return copy

    def chief_done(self, layout) -> None:
        """The chief has written the whole run: the waiting workers may go."""
        if self.worker is not None and self.worker.is_chief:
            _tell(CHIEF_KEY, f"wrote {layout.root}")

    def wait_for_chief(self, layout, stopper) -> str:
        """A worker other than the chief, its training done: what to tell the user, once the chief
        has evaluated and written the run. Waiting keeps both in the cluster until the end (a
        worker that left early would be reported by the chief's TensorFlow as crashed); a worker
        whose chief died gets an UnavailableError (``cluster_failures``); a signal stops the
        wait (the chief goes on)."""
        import tensorflow as tf
        from tensorflow.python.eager import context

        from training.run_log import say
        from training.signals import TrainingInterrupted

        self._trained = True
        say(f"{self.worker.name}: training finished; waiting for {self.worker.chief} to "
            "evaluate and write the run")
        while True:
            try:
                outcome = context.context().get_config_key_value(CHIEF_KEY, timeout_in_ms=1000)
                break
            except tf.errors.DeadlineExceededError:
                if stopper.received:
                    raise TrainingInterrupted(layout, stopper.received, (
                        f"{stopper.received}: {self.worker.name} had finished training and "
                        f"stopped waiting for {self.worker.chief}, which writes the run on its "
                        "own")) from None
        if not outcome.startswith("wrote "):
            raise RuntimeFailure(f"{self.worker.name} finished training, but {self.worker.chief} "
                                 f"{outcome}")
        return (f"{self.worker.name} of {self.worker.count} done: {self.worker.chief} "
                f"{outcome}")


def _tell(key: str, value: str) -> None:
    """``key`` = ``value`` in the cluster's key-value store (that of TensorFlow's coordination
    service, which the strategy starts), once the cluster is up."""
    if not _cluster_started:
        return
    from tensorflow.python.eager import context

    with contextlib.suppress(Exception):  # the cluster is gone: nobody left to tell
        context.context().set_config_key_value(key, value)


@contextlib.contextmanager
def cluster_failures(worker: Worker | None) -> Iterator[None]:
    """A worker that loses the others (one died, was stopped, or cannot be reached) gets a
    collective-op error from TensorFlow; turn it into one line and exit code 1."""
    if worker is None:
        yield
        return
    import tensorflow as tf

    try:
        yield
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
            tf.errors.CancelledError, tf.errors.AbortedError,
            tf.errors.FailedPreconditionError) as exc:
        raise RuntimeFailure(f"{worker.name} lost the cluster ({_reason(exc)}); restart every "
                             "worker, with --resume RUN to continue from the chief's last "
                             "finished epoch") from None


def _reason(exc) -> str:
    """The line of a TensorFlow error that says what happened to the cluster (a graph execution
    error begins with the node and the stack it was traced from)."""
    lines = [line.strip() for line in (exc.message or str(exc)).splitlines() if line.strip()]
    words = ("aborted by", "unhealthy", "socket closed", "connection", "failed to connect",
             "deadline")
    telling = [line for line in lines if any(word in line.lower() for word in words)]
    return (telling or lines or [type(exc).__name__])[0][:200]


def strategy():
    """``tf.distribute.MultiWorkerMirroredStrategy`` (the cluster from TF_CONFIG), made usable by
    Keras 3's ``model.fit`` (see ``KerasMultiWorkerStrategy``)."""
    import tensorflow as tf

    class KerasMultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        """After every step Keras' TensorFlow trainer averages the step's metric values over the
        replicas with ``strategy.reduce("MEAN", value, axis=0)`` (keras backend/tensorflow
        trainer.py ``reduce_per_replica``, Keras 3.15). The values are scalars, and under this
        strategy with more than one worker a reduce along axis 0 of a scalar fails ("Invalid
        reduction dimension 0 for input with 0 dimensions"). The mean over the replicas of a
        scalar is the reduce with ``axis=None``. (The epoch's logs, which the checkpoint and
        early stopping read, come from the metric variables themselves, summed over every
        worker.)"""

        def reduce(self, reduce_op, value, axis):
            if axis is not None and all(
                    part.shape.rank == 0 for part in self.experimental_local_results(value)):
                axis = None
            return super().reduce(reduce_op, value, axis)

    global _cluster_started
    made = KerasMultiWorkerStrategy()
    _cluster_started = True
    return made


def any_worker_stopped(strategy):
    """``StopOnSignal.agree`` for the workers of ``strategy``: after every batch, each worker says
    whether it received a signal (one sum of a number over the workers), and all stop when any
    did."""
    import tensorflow as tf

    @tf.function
    def workers_with_a_signal(flag):
        flags = strategy.run(lambda flag: flag, args=(flag,))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, flags, axis=None)

    def agree(received: str | None) -> str | None:
        if float(workers_with_a_signal(tf.constant(1.0 if received else 0.0))) == 0.0:
            return None
        return received or "a signal to another worker"

    return agree


def local_symbolic_build(model, strategy) -> None:
    """Before its first step Keras' TensorFlow trainer (``_maybe_symbolic_build``, Keras 3.15)
    averages the first batch over all replicas with one ``strategy.reduce`` of the whole (x, y,
    sample_weight) tuple, to learn the shapes its metrics and loss are built for. Under this
    strategy with more than one worker the reduce cannot take a tuple ("Attempt to convert a value
    (PerReplica ...) to a Tensor", keras-team/keras#20585), and reduced one by one the workers'
    shares of a short last batch could differ in shape. Shapes are all the build needs, so this
    worker's own share of the batch will do: no reduce, no communication."""
    import tensorflow as tf
    from keras import tree

    def this_workers_share(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def maybe_symbolic_build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tree.map_structure(this_workers_share, next(batches))
                break
        with strategy.scope():
            model._symbolic_build(data_batch=data_batch)

    model._maybe_symbolic_build = maybe_symbolic_build
