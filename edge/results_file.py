"""The output of `crack-edge score`: one row per file, CSV or JSON lines, written so that a killed
run loses nothing it has reported and `--resume` can go on from it.

Rows are ``path,probability,label,latency_ms,error``. Each row is written whole and flushed as
soon as its batch is scored; the file is fsynced when the run ends. A run killed mid-write can
leave a torn last line: ``open_for_resume`` cuts it off and returns the paths already done.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

from edge.errors import UserError

FIELDS = ("path", "probability", "label", "latency_ms", "error")
FORMATS = ("csv", "jsonl")


@dataclass(frozen=True)
class Row:
    path: str
    probability: float | None
    label: str
    latency_ms: float | None
    error: str = ""

    def as_dict(self) -> dict:
        return {"path": self.path,
                "probability": None if self.probability is None else round(self.probability, 6),
                "label": self.label,
                "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 3),
                "error": self.error}


class ResultsFile:
    """Appends rows to a CSV or JSONL file, one flush per ``write`` call."""

    def __init__(self, path: Path, fmt: str, append: bool) -> None:
        if fmt not in FORMATS:
            raise UserError(f"unknown --format {fmt!r}; choose csv or jsonl")
        self.path, self.format = Path(path), fmt
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not append or not self.path.exists() or self.path.stat().st_size == 0
        self._handle = self.path.open("a" if append else "w", encoding="utf-8", newline="")
        if new and fmt == "csv":
            self._handle.write(",".join(FIELDS) + "\n")
            self._handle.flush()

    def write(self, rows: list[Row]) -> None:
        buffer = io.StringIO()
        if self.format == "csv":
            writer = csv.writer(buffer, lineterminator="\n")
            for row in rows:
                values = row.as_dict()
                writer.writerow(["" if values[k] is None else values[k] for k in FIELDS])
        else:
            for row in rows:
                buffer.write(json.dumps(row.as_dict()) + "\n")
        self._handle.write(buffer.getvalue())
        self._handle.flush()

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()

    def __enter__(self) -> "ResultsFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_for_resume(path: Path, fmt: str) -> set[str]:
    """Paths already in ``path`` (after cutting off a torn last line); empty if there is no file."""
    path = Path(path)
    if not path.exists():
        return set()
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with path.open("r+b") as handle:
            handle.truncate(cut)
        data = data[:cut]
    text = data.decode("utf-8", errors="replace")
    done: set[str] = set()
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(text))
        if text and (reader.fieldnames is None or "path" not in reader.fieldnames):
            raise UserError(f"{path} is not a results CSV (no path column); cannot --resume it")
        done.update(row["path"] for row in reader)
    else:
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    done.add(json.loads(line)["path"])
                except (json.JSONDecodeError, KeyError):
                    raise UserError(f"{path} line {number} is not a results row; cannot --resume "
                                    "it") from None
    return done
