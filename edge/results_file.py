"""The result rows of `crack-edge score`, defined once (described in edge/FORMATS.md, "Result rows").

A results file is CSV or JSON lines, UTF-8:

  line 1       the run's identity: a JSON object naming this format and its version, the model
               (file name and sha256), the threshold, the tile grid, the labels and input size.
               In CSV it is one quoted cell starting with ``#``; in JSONL it is the first object.
  CSV only     the column header: ``COLUMNS`` joined by commas
  then         one row per file (``COLUMNS``): the result, then the photo's EXIF fields
               (``edge.exif``) and, with --tiles, its tiles as compact JSON.

``path`` is the path as found. A name that is not valid UTF-8 is shown with U+FFFD in ``path``
and kept exactly in ``path_bytes`` (base64 of the raw bytes; empty for every other path). CSV
follows RFC 4180 with CRLF line ends, so a CR or LF inside a name is always inside quotes; a text
cell starting with ``= + - @``, tab, CR or ``'`` gets a ``'`` in front, so a spreadsheet shows it
as text instead of running it as a formula, and a reader drops one leading ``'``. JSONL keeps the
text as it is.

Rows are written whole and flushed to the operating system after every batch (``write``); the
file is fsynced when the run ends. ``open_results`` locks the file (``fcntl.flock``) for the whole
run, so a second process on the same output is refused. For ``--resume`` it first checks that the
file is a results file of this format and of the same model, threshold, tiles and labels, and
only then cuts a torn last row and drops error rows (they are retried): a file it refuses is never
modified.
"""

from __future__ import annotations

import base64
import binascii
import csv
import errno
import fcntl
import io
import json
import math
import os
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from edge.errors import RuntimeFailure, UserError

FORMAT_NAME = "crack-edge-results"
FORMAT_VERSION = 2  # 2 added the columns from capture_time on
COLUMNS = ("path", "probability", "label", "latency_ms", "error", "path_bytes",
           "capture_time", "gps_lat", "gps_lon", "gps_alt", "orientation", "tiles")
FORMATS = ("csv", "jsonl")
CSV_LINE_END = "\r\n"
IDENTITY_MARK = "#"  # the CSV identity cell starts with it
# A spreadsheet runs a cell starting with one of these as a formula; ``'`` is the escape itself,
# so that a name starting with ``'`` survives the round trip.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")
HEAD_BYTES = 4096  # how much of a file is read to recognise it before reading the rest


# --- the run's identity ------------------------------------------------------------------------

@dataclass(frozen=True)
class RunIdentity:
    """What produced a results file: --resume appends only to a file of the same identity."""

    model: str  # file name only: the hash identifies the model, paths differ between machines
    model_sha256: str
    threshold: float
    tiles: str  # ``TileGrid.describe()``: "whole", "2x3", "tile 224 stride 112"
    labels: tuple[str, str]
    input_size: int

    COMPARED = ("model_sha256", "threshold", "tiles", "labels", "input_size")

    def to_dict(self) -> dict:
        return {"format": FORMAT_NAME, "version": FORMAT_VERSION, "model": self.model,
                "model_sha256": self.model_sha256, "threshold": self.threshold,
                "tiles": self.tiles, "labels": list(self.labels), "input_size": self.input_size}

    @classmethod
    def from_dict(cls, data: object) -> "RunIdentity":
        """Raises ValueError naming what is wrong."""
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise ValueError("no results identity")
        if data.get("version") != FORMAT_VERSION:
            raise ValueError(f"results format version {data.get('version')!r}, from another "
                             f"crack-edge; this one reads version {FORMAT_VERSION} (version 2 "
                             "added the EXIF and tiles columns): score into a new --out")
        try:
            labels = tuple(str(label) for label in data["labels"])
            identity = cls(model=str(data["model"]), model_sha256=str(data["model_sha256"]),
                           threshold=float(data["threshold"]), tiles=str(data["tiles"]),
                           labels=labels, input_size=int(data["input_size"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"damaged identity line ({type(exc).__name__}: {exc})") from None
        if len(labels) != 2:
            raise ValueError("damaged identity line (labels)")
        return identity

    def differences(self, other: "RunIdentity") -> list[str]:
        """``'threshold 0.5 in the file, 0.7 now'`` for each compared field that differs."""
        found = []
        for name in self.COMPARED:
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                if name == "model_sha256":
                    found.append(f"model {self.model} (sha256 {mine[:12]}) in the file, "
                                 f"{other.model} (sha256 {theirs[:12]}) now")
                else:
                    found.append(f"{name.replace('_', ' ')} {_shown(mine)} in the file, "
                                 f"{_shown(theirs)} now")
        return found


def _shown(value: object) -> str:
    return "/".join(value) if isinstance(value, tuple) else str(value)


def identity_line(identity: RunIdentity, fmt: str) -> str:
    text = json.dumps(identity.to_dict())
    if fmt == "jsonl":
        return text + "\n"
    return _csv_line([IDENTITY_MARK + text])


# --- rows ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    """One file's result. ``path`` is the path as found, an ``os.fsdecode`` string: bytes that are
    not valid UTF-8 are kept as surrogates, so ``key`` gives the exact bytes back."""

    path: str
    probability: float | None
    label: str
    latency_ms: float | None
    error: str = ""
    capture_time: str = ""  # the photo's EXIF fields (edge.exif.ExifFields); empty without
    gps_lat: float | None = None
    gps_lon: float | None = None
    gps_alt: float | None = None
    orientation: int | None = None
    tiles: tuple[tuple[int, int, int, int, float], ...] | None = None  # --tiles: x0, y0, x1, y1, p

    @property
    def key(self) -> bytes:
        """The path's bytes: what --resume matches."""
        return os.fsencode(self.path)

    def to_record(self) -> dict:
        shown, raw = display_path(self.path)
        return {"path": shown,
                "probability": None if self.probability is None else round(self.probability, 6),
                "label": self.label,
                "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 3),
                "error": self.error,
                "path_bytes": raw,
                "capture_time": self.capture_time,
                "gps_lat": None if self.gps_lat is None else round(self.gps_lat, 7),
                "gps_lon": None if self.gps_lon is None else round(self.gps_lon, 7),
                "gps_alt": None if self.gps_alt is None else round(self.gps_alt, 2),
                "orientation": self.orientation,
                "tiles": None if self.tiles is None else [[*box, round(p, 4)] for *box, p in self.tiles]}

    @classmethod
    def from_record(cls, record: dict) -> "Row":
        """The inverse of ``to_record`` (after a reader has undone the CSV escapes)."""
        path = record["path"]
        if record.get("path_bytes"):
            path = os.fsdecode(base64.b64decode(record["path_bytes"], validate=True))
        return cls(path, record["probability"], record["label"], record["latency_ms"],
                   record["error"], record["capture_time"], record["gps_lat"], record["gps_lon"],
                   record["gps_alt"], record["orientation"], _tile_tuples(record["tiles"]))


def _tile_tuples(tiles: object) -> tuple[tuple[int, int, int, int, float], ...] | None:
    if tiles is None:
        return None
    if not isinstance(tiles, list) or not all(
            isinstance(tile, list) and len(tile) == 5 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in tile)
            for tile in tiles):
        raise ValueError("tiles is not a list of [x0, y0, x1, y1, probability]")
    return tuple((int(x0), int(y0), int(x1), int(y1), float(p)) for x0, y0, x1, y1, p in tiles)


def display_path(path: str) -> tuple[str, str]:
    """(the path as UTF-8 text, base64 of its bytes if they are not valid UTF-8 else "")."""
    raw = os.fsencode(path)
    try:
        return raw.decode("utf-8"), ""
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace"), base64.b64encode(raw).decode("ascii")


def spreadsheet_safe(text: str) -> str:
    """A CSV text cell that a spreadsheet shows as text: ``'`` before a formula start."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def from_spreadsheet_safe(text: str) -> str:
    return text[1:] if text.startswith("'") else text


def format_rows(rows: list[Row], fmt: str) -> str:
    if fmt == "jsonl":
        return "".join(json.dumps(row.to_record()) + "\n" for row in rows)
    return "".join(_csv_line(_csv_cells(row.to_record())) for row in rows)


def _csv_cells(record: dict) -> list[str]:
    probability, latency = record["probability"], record["latency_ms"]
    return [spreadsheet_safe(record["path"]),
            "" if probability is None else f"{probability:.6f}",
            spreadsheet_safe(record["label"]),
            "" if latency is None else f"{latency:.3f}",
            spreadsheet_safe(record["error"]),
            spreadsheet_safe(record["path_bytes"]),
            spreadsheet_safe(record["capture_time"]),
            *("" if record[name] is None else str(record[name])
              for name in ("gps_lat", "gps_lon", "gps_alt", "orientation")),
            "" if record["tiles"] is None else json.dumps(record["tiles"], separators=(",", ":"))]


def _csv_line(cells: list[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator=CSV_LINE_END).writerow(cells)
    return buffer.getvalue()


# --- reading -------------------------------------------------------------------------------------

@dataclass
class ResultsContent:
    """A parsed results file: its identity, its complete rows (with their byte spans) and where
    the complete part ends (anything after it is a torn last row)."""

    identity: RunIdentity
    rows: list[Row] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)  # bytes of each row in the file
    rows_start: int = 0  # bytes before the first row: identity (and the CSV header)
    complete: int = 0  # length of the complete part in bytes
    has_header: bool = True  # CSV: False when the file was torn inside its header


class NotResults(ValueError):
    """The bytes are not a results file of this format (the message says why)."""


def parse_results(data: bytes, fmt: str) -> ResultsContent | None:
    """Parse a whole results file. None: the file holds nothing but a torn identity line, so
    nothing was ever recorded in it. Raises NotResults for anything else that is not ours."""
    text = data.decode("utf-8", errors="surrogateescape")
    records = _csv_records(text) if fmt == "csv" else _jsonl_records(text)
    first = next(records, None)
    if first is None:
        return None
    fields, start, end, complete = first
    if not complete:
        if _torn_identity(text, fmt):
            return None
        raise NotResults("its first line is not a crack-edge results identity")
    identity = _parse_identity(fields, fmt)
    content = ResultsContent(identity, rows_start=_bytes(text, end), complete=_bytes(text, end))
    if fmt == "csv":
        header = next(records, None)
        if header is None or not header[3]:
            content.has_header = False
            return content
        if tuple(header[0]) != COLUMNS:
            raise NotResults("line 2 is not the header " + ",".join(COLUMNS))
        content.rows_start = content.complete = _bytes(text, header[2])
    for number, (fields, start, end, complete) in enumerate(records, 3 if fmt == "csv" else 2):
        if not complete:
            break  # a torn last row: cut off
        try:
            row = _row_from_csv(fields) if fmt == "csv" else _row_from_json(fields)
        except (ValueError, KeyError, TypeError) as exc:
            raise NotResults(f"record {number} is not a results row ({exc})") from None
        content.rows.append(row)
        content.spans.append((_bytes(text, start), _bytes(text, end)))
        content.complete = _bytes(text, end)
    return content


def _bytes(text: str, chars: int) -> int:
    return len(text[:chars].encode("utf-8", errors="surrogateescape"))


def _identity_start(fmt: str) -> str:
    start = json.dumps({"format": FORMAT_NAME})[:-1]  # '{"format": "crack-edge-results"'
    return start if fmt == "jsonl" else _csv_line([IDENTITY_MARK + start])[:-len(CSV_LINE_END) - 1]


def _torn_identity(text: str, fmt: str) -> bool:
    start = _identity_start(fmt)
    return "\n" not in text and (start.startswith(text) or text.startswith(start))


def _parse_identity(fields, fmt: str) -> RunIdentity:
    try:
        if fmt == "csv":
            if len(fields) != 1 or not fields[0].startswith(IDENTITY_MARK):
                raise ValueError("no results identity")
            fields = json.loads(fields[0][len(IDENTITY_MARK):])
        return RunIdentity.from_dict(fields)
    except ValueError as exc:
        raise NotResults(f"its first line is not a crack-edge results identity ({exc})") from None


Record = tuple[object, int, int, bool]  # (fields, start char, end char, ends with a newline)


class _Lines:
    """A text as lines that keep their "\\n", counting how far the csv reader has read."""

    def __init__(self, text: str) -> None:
        self.text, self.position = text, 0

    def __iter__(self) -> "_Lines":
        return self

    def __next__(self) -> str:
        if self.position >= len(self.text):
            raise StopIteration
        end = self.text.find("\n", self.position)
        end = len(self.text) if end < 0 else end + 1
        line, self.position = self.text[self.position:end], end
        return line

    @property
    def at_end(self) -> bool:
        return self.position >= len(self.text)


def _csv_records(text: str) -> Iterator[Record]:
    """Each CSV record with its span; a quoted CR or LF stays inside its record."""
    lines = _Lines(text)
    reader = csv.reader(lines, strict=True)
    start = 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if lines.at_end:  # the file ends inside a quoted field: a torn last record
                yield [], start, len(text), False
                return
            raise NotResults(f"broken CSV near character {lines.position}: {exc}") from None
        end = lines.position
        yield fields, start, end, text[end - 1] == "\n"
        start = end


def _jsonl_records(text: str) -> Iterator[Record]:
    lines = _Lines(text)
    start = 0
    for line in lines:
        end = lines.position
        complete = line.endswith("\n")
        if not complete:
            yield None, start, end, False
            return
        try:
            value = json.loads(line)
        except ValueError as exc:
            raise NotResults(f"line {text.count(chr(10), 0, start) + 1} is not JSON "
                             f"({exc})") from None
        yield value, start, end, True
        start = end


def _number(text: str) -> float | None:
    if text == "":
        return None
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {text}")
    return value


def _checked(row: Row) -> Row:
    if not row.path:
        raise ValueError("empty path")
    if (row.probability is None) == (not row.error):
        raise ValueError("a row has either a probability or an error")
    if row.probability is not None and not 0.0 <= row.probability <= 1.0:
        raise ValueError(f"probability {row.probability} outside 0..1")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in row.error + row.label):
        raise ValueError("not UTF-8")
    return row


def _row_from_csv(fields: list[str]) -> Row:
    if len(fields) != len(COLUMNS):
        raise ValueError(f"{len(fields)} cells, not {len(COLUMNS)}")
    cells = dict(zip(COLUMNS, fields))
    if any(0xD800 <= ord(c) <= 0xDFFF for c in cells["path"]):
        raise ValueError("not UTF-8")
    record = {"path": from_spreadsheet_safe(cells["path"]),
              "probability": _number(cells["probability"]),
              "label": from_spreadsheet_safe(cells["label"]),
              "latency_ms": _number(cells["latency_ms"]),
              "error": from_spreadsheet_safe(cells["error"]),
              "path_bytes": from_spreadsheet_safe(cells["path_bytes"]),
              "capture_time": from_spreadsheet_safe(cells["capture_time"]),
              "gps_lat": _number(cells["gps_lat"]),
              "gps_lon": _number(cells["gps_lon"]),
              "gps_alt": _number(cells["gps_alt"]),
              "orientation": int(cells["orientation"]) if cells["orientation"] else None,
              "tiles": _json_cell(cells["tiles"])}
    try:
        return _checked(Row.from_record(record))
    except binascii.Error as exc:
        raise ValueError(f"path_bytes is not base64: {exc}") from None


def _json_cell(text: str) -> object:
    try:
        return json.loads(text) if text else None
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _row_from_json(value: object) -> Row:
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    missing = [name for name in COLUMNS if name not in value]
    if missing:
        raise ValueError(f"no {', '.join(missing)}")
    for name in ("path", "label", "error", "path_bytes", "capture_time"):
        if not isinstance(value[name], str):
            raise ValueError(f"{name} is not text")
    for name in ("probability", "latency_ms", "gps_lat", "gps_lon", "gps_alt", "orientation"):
        if value[name] is not None and not isinstance(value[name], (int, float)):
            raise ValueError(f"{name} is not a number")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value["path"]):
        raise ValueError("not UTF-8")
    try:
        return _checked(Row.from_record(value))
    except binascii.Error as exc:
        raise ValueError(f"path_bytes is not base64: {exc}") from None


def read_results(path: str | Path, fmt: str | None = None) -> ResultsContent:
    """A results file's identity and complete rows (for reports and tests); never modifies it.
    ``fmt`` None: JSONL if the file starts with ``{``, else CSV."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    fmt = fmt or ("jsonl" if data.startswith(b"{") else "csv")
    try:
        content = parse_results(data, fmt)
    except NotResults as exc:
        raise UserError(f"{path} is not a {fmt} results file: {exc}") from None
    if content is None:
        raise UserError(f"{path} has no rows (only a torn identity line)")
    return content


# --- writing -------------------------------------------------------------------------------------

class ResultsWriter:
    """Appends rows to an open, locked results file: one write and flush per ``write`` call."""

    def __init__(self, path: Path, fmt: str, fd: int, rows_kept: int = 0) -> None:
        self.path, self.format, self._fd = path, fmt, fd
        self.rows_written = rows_kept

    def write(self, rows: list[Row]) -> None:
        if rows:
            self._write_text(format_rows(rows, self.format))
            self.rows_written += len(rows)

    def _write_text(self, text: str) -> None:
        view = memoryview(text.encode("utf-8"))
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            raise RuntimeFailure(
                f"cannot write {self.path}: {exc.strerror or exc}; the {self.rows_written} "
                "row(s) written before are kept (continue with --resume)") from None

    def close(self) -> None:
        if self._fd < 0:
            return
        fd, self._fd = self._fd, -1
        try:
            os.fsync(fd)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOTSUP):  # a pipe or device cannot sync
                raise RuntimeFailure(f"cannot write {self.path}: {exc.strerror or exc}") from None
        finally:
            os.close(fd)

    def __enter__(self) -> "ResultsWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class OpenedResults:
    writer: ResultsWriter
    done: set[bytes]  # paths already scored (rows without an error), as bytes
    retried: int = 0  # error rows dropped so that their files are scored again
    cut: bool = False  # a torn last row was cut off


def open_results(path: str | Path, fmt: str, identity: RunIdentity, resume: bool = False,
                 overwrite: bool = False) -> OpenedResults:
    """Open (create, replace or continue) a results file, locked for this process.

    New file: refused if it already holds something. ``overwrite``: emptied, but only once the
    lock is held. ``resume``: validated before anything is changed (see the module docstring).
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown --format {fmt!r}; choose csv or jsonl")
    path = Path(path)
    fd = _open_locked(path, resume)
    try:
        info = os.fstat(fd)
        regular = stat.S_ISREG(info.st_mode)
        if resume and info.st_size > 0:
            if not regular:
                raise UserError(f"{path} is not a regular file; only a results file can be resumed")
            return _resume(path, fmt, identity, fd)
        if info.st_size > 0 and not overwrite:
            raise UserError(f"{path} exists; use --resume to continue it or --overwrite to "
                            "replace it")
        if regular and info.st_size > 0:
            os.ftruncate(fd, 0)
        writer = ResultsWriter(path, fmt, fd)
        writer._write_text(_start_text(identity, fmt))
        return OpenedResults(writer, set())
    except BaseException:
        os.close(fd)
        raise


def _start_text(identity: RunIdentity, fmt: str, header: bool = True) -> str:
    text = identity_line(identity, fmt)
    return text + _csv_line(list(COLUMNS)) if fmt == "csv" and header else text


def _open_locked(path: Path, resume: bool) -> int:
    flags = (os.O_RDWR if resume else os.O_WRONLY) | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o666)
    except IsADirectoryError:
        raise UserError(f"--out {path} is a folder") from None
    except OSError as exc:
        raise UserError(f"cannot write --out {path}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOLCK, errno.ENOTSUP):
            return fd  # a file system without locks: go on unlocked
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise UserError(f"{path} is being written by another crack-edge process; wait for "
                            "it to finish or choose another --out") from None
        raise UserError(f"cannot lock --out {path}: {exc.strerror or exc}") from None
    return fd


def _read_all(fd: int) -> bytes:
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _resume(path: Path, fmt: str, identity: RunIdentity, fd: int) -> OpenedResults:
    """Validate ``path`` (held open and locked as ``fd``), then make it ready for appending."""
    head = os.pread(fd, HEAD_BYTES, 0)
    _recognise(path, head, fmt)
    data = _read_all(fd)
    try:
        content = parse_results(data, fmt)
    except NotResults as exc:
        raise UserError(f"cannot --resume {path}: it is not a {fmt} results file ({exc}); "
                        "nothing was changed") from None
    if content is None:  # only a torn identity line: nothing was recorded, start again
        os.ftruncate(fd, 0)
        writer = ResultsWriter(path, fmt, fd)
        writer._write_text(_start_text(identity, fmt))
        return OpenedResults(writer, set(), cut=True)
    differences = content.identity.differences(identity)
    if differences:
        raise UserError(f"cannot --resume {path}: it was written with {'; '.join(differences)}. "
                        "Use the same model and options, or write to a new --out")
    errors = [i for i, row in enumerate(content.rows) if row.error]
    done = {row.key for row in content.rows if not row.error}
    cut = content.complete < len(data)
    if errors:
        keep = [span for i, span in enumerate(content.spans) if i not in set(errors)]
        kept = data[:content.rows_start] + b"".join(data[a:b] for a, b in keep)
        fd = _replace_locked(path, fd, kept)
    elif cut:
        os.ftruncate(fd, content.complete)
    writer = ResultsWriter(path, fmt, fd, rows_kept=len(content.rows) - len(errors))
    if fmt == "csv" and not content.has_header:
        writer._write_text(_csv_line(list(COLUMNS)))
    return OpenedResults(writer, done, retried=len(errors), cut=cut)


def _recognise(path: Path, head: bytes, fmt: str) -> None:
    """Refuse a file that does not even start like a results file, naming what it looks like."""
    text = head.decode("utf-8", errors="replace")
    for kind in FORMATS:
        start = _identity_start(kind)
        if text.startswith(start) or (start.startswith(text) and "\n" not in text):
            if kind != fmt:
                raise UserError(f"cannot --resume {path}: it is a {kind} results file; resume it "
                                f"with --format {kind}")
            return
    if text.startswith(",".join(COLUMNS[:5])):
        raise UserError(f"cannot --resume {path}: it was written by an older crack-edge, without "
                        "the identity line that says which model and threshold made it; write "
                        "to a new --out. Nothing was changed")
    raise UserError(f"cannot --resume {path}: it is not a crack-edge results file (its first "
                    "line is not a results identity); nothing was changed")


def _replace_locked(path: Path, fd: int, content: bytes) -> int:
    """Atomically replace the file behind ``fd`` by ``content``; return a locked fd of the new
    file (the old one, still locked until now, is closed)."""
    target = Path(os.path.realpath(path))
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    try:
        new_fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                             dir=target.parent)
    except OSError as exc:
        raise UserError(f"cannot --resume {path}: retrying its error rows needs a new file "
                        f"beside it: {exc.strerror or exc}") from None
    try:
        os.fchmod(new_fd, mode)
        view = memoryview(content)
        while view:
            view = view[os.write(new_fd, view):]
        os.fsync(new_fd)
        fcntl.flock(new_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.replace(temporary, target)
    except OSError as exc:
        os.close(new_fd)
        Path(temporary).unlink(missing_ok=True)
        raise RuntimeFailure(f"cannot rewrite {path} for --resume: {exc.strerror or exc}; "
                             "it is unchanged") from None
    os.close(fd)
    flags = fcntl.fcntl(new_fd, fcntl.F_GETFL)
    fcntl.fcntl(new_fd, fcntl.F_SETFL, flags | os.O_APPEND)
    return new_fd
