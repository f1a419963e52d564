"""A run's folder as training goes: created with its splits and options.json, reopened for
--resume, state.json (which steps are done, the best validation loss so far), and the runs/latest
link once it has finished."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from pathlib import Path

from edge.atomic_files import write_json_atomic
from edge.errors import UserError
from training.data import ScanResult, SplitFractions, scan
from training.options import TrainOptions
from training.run_layout import SPLITS, RunLayout, open_run, read_split, write_split

Splits = dict[str, list[tuple[str, int]]]


def new_run_name(data: Path) -> str:
    return f"{dt.datetime.now():%Y%m%d-%H%M%S}-{data.resolve().name or 'data'}"


def create_run(options: TrainOptions) -> tuple[RunLayout, ScanResult]:
    """Create runs/NAME with its split files, options.json and state.json."""
    if options.data is None:
        raise UserError("--data is required (a folder of class folders)")
    name = options.name or new_run_name(options.data)
    layout = RunLayout((options.runs_dir / name).resolve())
    if layout.root.exists() and any(layout.root.iterdir()):
        raise UserError(f"run {layout.root} already exists; pick another --name, or continue it "
                        f"with --resume {layout.root}")
    scanned = scan(options.data, positive=options.positive,
                   fractions=SplitFractions(options.val_fraction, options.test_fraction),
                   seed=options.seed, group_by_source=options.group_by_source,
                   val_name=options.val_split, test_name=options.test_split)
    layout.root.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        write_split(layout.split_file(split), scanned.splits[split])
    write_json_atomic(layout.options, options.to_dict())
    write_json_atomic(layout.state, {"done": [], "best_val_loss": None,
                                     "class_folders": scanned.class_folders,
                                     "presplit": scanned.presplit,
                                     "skipped": [list(s) for s in scanned.skipped]})
    return layout, scanned


def reopen_run(path: Path) -> tuple[RunLayout, TrainOptions, Splits]:
    """An interrupted run with the options and splits it was started with."""
    layout = open_run(path)
    if not layout.options.is_file() or not layout.state.is_file():
        raise UserError(f"{layout.root} is not a run that can be resumed (no options.json or "
                        "state.json)")
    options = TrainOptions.from_dict(json.loads(layout.options.read_text()))
    splits = {split: read_split(layout.split_file(split)) for split in SPLITS}
    return layout, options, splits


def read_state(layout: RunLayout) -> dict:
    return json.loads(layout.state.read_text())


def update_state(layout: RunLayout, **changes) -> dict:
    state = read_state(layout)
    state.update(changes)
    write_json_atomic(layout.state, state)
    return state


def done_steps(layout: RunLayout) -> list[str]:
    """The finished steps: 'head', 'fine_tune', 'evaluate'."""
    return read_state(layout)["done"]


def mark_done(layout: RunLayout, step: str) -> None:
    done = done_steps(layout)
    if step not in done:
        update_state(layout, done=done + [step])


def point_latest(layout: RunLayout) -> None:
    """runs/latest -> this run (a relative symlink, replaced atomically)."""
    latest = layout.root.parent / "latest"
    temporary = layout.root.parent / f".latest-{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    temporary.symlink_to(layout.root.name)
    os.replace(temporary, latest)
