"""Collecting what a user should label next: `score --collect DIR` and `stream --collect DIR`.

The images a model is least sure of, and the frames it raised events on, are the ones worth
labelling: a few dozen of them, sorted into crack/ and no_crack/, are the data `crack train --init`
adapts a model with (and `crack-edge calibrate` chooses a site's threshold from).

    score    each file whose probability is within ``margin`` of the threshold is linked into DIR
             (a hard link, or a copy where no link can be made)
    stream   frames within ``margin`` of the threshold, and the frames of each event (its first
             frame always), as JPEG; at most one frame every FRAME_INTERVAL_S seconds otherwise

Every saved image gets a row in ``DIR/labels.csv``, the labels template (columns ``path,
probability, label_guess, label``; path relative to DIR, ``label`` empty for the user to fill in
with crack or no_crack), flushed row by row. File names start with a running number, so they
never collide and never start with a spreadsheet formula character. Collection stops, with one
warning, when DIR holds ``max_mb`` megabytes; a run started again continues the numbering and the
template and counts what DIR already holds. A failed write is logged and counted, never fatal.
`crack data from-labels` (``sort_labelled``) copies the labelled rows into crack/ and no_crack/.
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from edge.atomic_files import write_bytes_atomic
from edge.contract import ModelContract, folder_label
from edge.errors import UserError
from edge.output_paths import check_output_path

log = logging.getLogger("crack.edge")

LABELS_FILE = "labels.csv"
TEMPLATE_COLUMNS = ("path", "probability", "label_guess", "label")
DEFAULT_COLLECT_MARGIN = 0.1
DEFAULT_COLLECT_MB = 100.0
FRAME_INTERVAL_S = 0.5
JPEG_QUALITY = 90


@dataclass(frozen=True)
class CollectOptions:
    folder: Path
    margin: float = DEFAULT_COLLECT_MARGIN
    max_mb: float = DEFAULT_COLLECT_MB

    def validate(self) -> None:
        if not (math.isfinite(self.margin) and 0 < self.margin <= 1):
            raise UserError(f"--collect-margin must be in (0, 1], got {self.margin}")
        if not (math.isfinite(self.max_mb) and self.max_mb > 0):
            raise UserError(f"--collect-max-mb must be positive, got {self.max_mb}")
        if self.folder.exists() and not self.folder.is_dir():
            raise UserError(f"--collect {self.folder} is a file, not a folder")
        check_output_path(self.folder / LABELS_FILE, "--collect")


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[-80:] or "image"


@dataclass
class Collector:
    """Saves near-threshold images and event frames into ``options.folder`` with the template."""

    options: CollectOptions
    contract: ModelContract  # the threshold and labels in use
    saved: int = 0  # images saved by this run
    failures: int = 0  # writes that failed
    full: bool = False  # the size limit was reached
    _bytes: int = 0
    _number: int = 0
    _last_frame_at: float = field(default=-math.inf)
    _event_saved: int | None = None  # the last event whose first frame was saved

    def __post_init__(self) -> None:
        self.options.validate()
        folder = self.options.folder
        folder.mkdir(parents=True, exist_ok=True)
        self._bytes = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())
        template = folder / LABELS_FILE
        if template.is_file() and template.stat().st_size:
            with template.open(newline="", encoding="utf-8", errors="replace") as handle:
                self._number = max(sum(1 for _ in handle) - 1, 0)
        else:
            template.write_text(",".join(TEMPLATE_COLUMNS) + "\r\n", encoding="utf-8")
        self._template = template.open("a", newline="", encoding="utf-8")
        self._writer = csv.writer(self._template)

    @property
    def limit_bytes(self) -> int:
        return int(self.options.max_mb * 1e6)

    def near(self, probability: float) -> bool:
        return abs(probability - self.contract.threshold) < self.options.margin

    # --- score: files --------------------------------------------------------------------------

    def offer_rows(self, rows) -> None:
        """Link every scored file of ``rows`` (``edge.results_file.Row``) near the threshold."""
        for row in rows:
            if not row.error and row.probability is not None and self.near(row.probability):
                self._save_file(Path(row.path), row.probability)

    def _save_file(self, source: Path, probability: float) -> None:
        try:
            size = source.stat().st_size
        except OSError as exc:
            self._failed(source.name, exc)
            return
        target = self._target(_safe_name(source.stem) + source.suffix.lower())
        if target is None or not self._room_for(size):
            return
        try:
            try:
                os.link(source, target)
            except OSError:  # another file system, or links not allowed: copy
                shutil.copyfile(source, target)
        except OSError as exc:
            target.unlink(missing_ok=True)
            self._failed(target.name, exc)
            return
        self._record(target, size, probability)

    # --- stream: frames ------------------------------------------------------------------------

    def offer_frame(self, image, probability: float, event_id: int | None, now: float | None = None) -> bool:
        """Save a BGR frame (numpy array) if it is near the threshold or inside an event (the first
        frame of an event always, others at most every FRAME_INTERVAL_S). True when saved."""
        import cv2  # here, so that the CLI's --help does not load OpenCV

        now = time.monotonic() if now is None else now
        first_of_event = event_id is not None and event_id != self._event_saved
        if not first_of_event:
            if event_id is None and not self.near(probability):
                return False
            if now - self._last_frame_at < FRAME_INTERVAL_S:
                return False
        if self.full:
            return False
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            return False
        payload = encoded.tobytes()
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        target = self._target(f"{stamp}_{'near' if event_id is None else f'event{event_id}'}.jpg")
        if target is None or not self._room_for(len(payload)):
            return False
        try:
            write_bytes_atomic(target, payload)
        except OSError as exc:
            self._failed(target.name, exc)
            return False
        self._last_frame_at = now
        if event_id is not None:
            self._event_saved = event_id
        self._record(target, len(payload), probability)
        return True

    # --- both ------------------------------------------------------------------------------------

    def _target(self, name: str) -> Path | None:
        """The next numbered path: 00001_NAME, never an existing file."""
        if self.full:
            return None
        while True:
            self._number += 1
            target = self.options.folder / f"{self._number:05d}_{name}"
            if not os.path.lexists(target):
                return target

    def _room_for(self, size: int) -> bool:
        if self._bytes + size <= self.limit_bytes:
            return True
        self.full = True
        log.warning("--collect %s holds %.1f MB: the limit (--collect-max-mb %g) is reached, no more "
                    "images are collected", self.options.folder, self._bytes / 1e6, self.options.max_mb)
        return False

    def _record(self, target: Path, size: int, probability: float) -> None:
        self._bytes += size
        self.saved += 1
        try:
            self._writer.writerow([target.name, f"{probability:.6f}", self.contract.label_name(probability), ""])
            self._template.flush()
        except OSError as exc:
            self._failed(LABELS_FILE, exc)

    def _failed(self, name: str, exc: OSError) -> None:
        self.failures += 1
        log.warning("--collect: cannot write %s (%s); going on", name, exc.strerror or exc)

    def line(self) -> str:
        text = f"collected {self.saved} image(s) for labelling in {self.options.folder} (template {LABELS_FILE})"
        if self.full:
            text += f"; stopped at the {self.options.max_mb:g} MB limit"
        if self.failures:
            text += f"; {self.failures} failed write(s)"
        return text

    def close(self) -> None:
        try:
            self._template.close()
        except OSError as exc:
            self._failed(LABELS_FILE, exc)


# --- crack data from-labels: the filled-in template -> crack/ and no_crack/ ---------------------

@dataclass
class SortedLabels:
    out: Path
    per_class: dict[str, int]
    unlabelled: int  # rows left empty
    missing: list[str]  # rows whose image is gone

    def lines(self) -> list[str]:
        lines = [f"copied {self.per_class['crack']} crack and {self.per_class['no_crack']} no_crack image(s) "
                 f"to {self.out}; {self.unlabelled} row(s) without a label skipped"]
        if self.missing:
            lines.append(f"warning: {len(self.missing)} labelled image(s) not found: {', '.join(self.missing[:5])}")
        return lines


def read_template(template: Path) -> list[dict[str, str]]:
    """The rows of a labels template; UserError when it is not one."""
    if not template.is_file():
        raise UserError(f"labels template not found: {template}")
    try:
        with template.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not set(TEMPLATE_COLUMNS) <= set(reader.fieldnames):
                raise UserError(f"{template} is not a labels template (columns {','.join(TEMPLATE_COLUMNS)})")
            return list(reader)
    except UnicodeDecodeError:
        raise UserError(f"{template} is not UTF-8 text") from None


def sort_labelled(templates: list[Path], out: Path) -> SortedLabels:
    """Copy every labelled row's image (its path relative to its template) into ``out``/crack or
    ``out``/no_crack. A label is a class-folder name (crack, no_crack, yes, no, 1, 0, ...)."""
    work = []
    for template in templates:
        for number, row in enumerate(read_template(template), start=2):
            text = (row.get("label") or "").strip()
            label = folder_label(text) if text else None
            if text and label is None:
                raise UserError(f"{template} line {number}: label {text!r} is neither crack nor no_crack")
            work.append((template.parent / row["path"], label))
    result = SortedLabels(out, {"crack": 0, "no_crack": 0}, unlabelled=0, missing=[])
    for source, label in work:
        if label is None:
            result.unlabelled += 1
            continue
        if not source.is_file():
            result.missing.append(str(source))
            continue
        name = "crack" if label == 1 else "no_crack"
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{source.parent.name}_{source.name}"
        if not target.exists():
            shutil.copyfile(source, target)
        result.per_class[name] += 1
    return result
