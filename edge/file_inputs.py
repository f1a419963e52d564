"""Turning command-line PATHS into a list of image files: files, folders (recursive), globs and
``@list.txt`` files (one path, folder or glob per line, ``#`` comments). Used by
`crack-edge score` and `crack predict`, so both read exactly the same files for the same arguments.

- A file named directly is kept whatever its suffix and whatever it is (so a broken upload, a
  dangling link or a FIFO gets an error row); inside folders and globs only image suffixes count.
- Folders are walked in name order, following links to folders, but each folder only once, so a
  link loop or a ``**`` glob through links cannot multiply files or run forever.
- Each real file is listed once, the first path that reaches it kept (same device and inode: a
  second link or hard link to a photo is a duplicate). A dangling link is listed, for its error
  row.
- Hidden entries (names starting with ``.``: ``.thumbnails/``, macOS ``._IMG_1.jpg``) are skipped
  inside folders.
- Everything skipped is counted by reason (``Skipped``), for the summary.
- Each file keeps the folder it was found under (``InputFile.root``): class labels come from that
  folder and the folders below it, never from folders above what was given.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from edge.errors import UserError
from edge.preprocess import is_image_path


@dataclass(frozen=True)
class InputFile:
    path: Path
    root: Path  # the folder given (or a glob's fixed part, or a named file's folder)


@dataclass
class Skipped:
    """Files found and not scored, by reason; folders that could not be listed."""

    not_images: Counter = field(default_factory=Counter)  # suffix -> count
    hidden: int = 0
    not_regular: int = 0
    duplicates: int = 0
    unlistable: list[str] = field(default_factory=list)  # "folder: reason"

    @property
    def total(self) -> int:
        return sum(self.not_images.values()) + self.hidden + self.not_regular + self.duplicates

    def lines(self) -> list[str]:
        parts = []
        if self.not_images:
            kinds = ", ".join(f"{suffix or 'no suffix'} {count}"
                              for suffix, count in sorted(self.not_images.items()))
            parts.append(f"{sum(self.not_images.values())} not images by name ({kinds})")
        if self.hidden:
            parts.append(f"{self.hidden} hidden")
        if self.not_regular:
            parts.append(f"{self.not_regular} not regular files")
        if self.duplicates:
            parts.append(f"{self.duplicates} reached again through another path (a link)")
        lines = [f"skipped {self.total} file(s): " + "; ".join(parts)] if parts else []
        if self.unlistable:
            lines.append(f"could not list {len(self.unlistable)} folder(s): "
                         + "; ".join(self.unlistable[:3])
                         + (" ..." if len(self.unlistable) > 3 else ""))
        return lines


@dataclass
class FoundInputs:
    files: list[InputFile]
    skipped: Skipped


def expand_inputs(arguments: list[str] | tuple[str, ...]) -> list[Path]:
    """Image files named by the arguments, in order, each once (see ``find_inputs``)."""
    return [found.path for found in find_inputs(arguments).files]


def find_inputs(arguments: list[str] | tuple[str, ...]) -> FoundInputs:
    """Image files named by the arguments, in order, each real file once, with what was skipped.
    A path that matches nothing is a UserError, because a typo should not silently score nothing."""
    skipped = Skipped()
    files: list[InputFile] = []
    seen: set = set()
    for argument in arguments:
        for found in _expand_one(argument, skipped):
            key = _identity(found.path)
            if key in seen:
                skipped.duplicates += 1
                continue
            seen.add(key)
            files.append(found)
    return FoundInputs(files, skipped)


def _identity(path: Path) -> object:
    """The real file behind a path: (device, inode), or the path itself when it cannot be
    followed (a dangling link keeps its own entry and gets an error row)."""
    try:
        info = os.stat(path)
    except OSError:
        return os.path.abspath(path)
    return info.st_dev, info.st_ino


def _expand_one(argument: str, skipped: Skipped, in_list: Path | None = None) -> list[InputFile]:
    if argument.startswith("@") and in_list is None:
        return _read_list(Path(argument[1:]), skipped)
    path = Path(argument)
    if path.is_dir():
        return [InputFile(file, path) for file in _walk(path, skipped)]
    if os.path.lexists(path):  # a file, a dangling link, a FIFO: named directly, so it gets a row
        return [InputFile(path, path.parent)]
    where = f" (in {in_list})" if in_list else ""
    if glob.has_magic(argument):
        found = _glob(argument, skipped)
        if not found:
            raise UserError(f"no image files match {argument}{where}")
        return found
    raise UserError(f"no such file or folder: {argument}{where}")


def _read_list(list_file: Path, skipped: Skipped) -> list[InputFile]:
    """Lines of a list file: paths, folders or globs (not further @lists). Any bytes are allowed
    in names (read as UTF-8 with surrogate escapes, like the file system's own names)."""
    if not list_file.is_file():
        raise UserError(f"list file not found: {list_file}")
    try:
        text = list_file.read_bytes().decode("utf-8", errors="surrogateescape")
    except OSError as exc:
        raise UserError(f"cannot read list file {list_file}: {exc.strerror or exc}") from None
    found: list[InputFile] = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            found.extend(_expand_one(line, skipped, in_list=list_file))
    return found


def _walk(folder: Path, skipped: Skipped) -> list[Path]:
    """Image files under ``folder`` in path order; each folder visited once."""
    candidates: list[Path] = []
    visited: set[tuple[int, int]] = set()
    pending = [folder]
    while pending:
        current = pending.pop()
        entries = _list_folder(current, visited, skipped)
        for entry in entries:
            kind = _kind(entry)
            if kind == "folder":
                pending.append(Path(entry.path))
            elif entry.name.startswith("."):
                skipped.hidden += 1
            elif not is_image_path(entry.name):
                skipped.not_images[Path(entry.name).suffix.lower()] += 1
            elif kind == "other":
                skipped.not_regular += 1
            else:  # a file, or a link that cannot be followed: listed for its error row
                candidates.append(Path(entry.path))
    return sorted(candidates, key=str)


def _list_folder(folder: Path, visited: set, skipped: Skipped) -> list[os.DirEntry]:
    """The entries of a folder not seen before (hidden sub-folders skipped), or []."""
    try:
        info = os.stat(folder)
        if (info.st_dev, info.st_ino) in visited:
            return []
        visited.add((info.st_dev, info.st_ino))
        with os.scandir(folder) as scan:
            entries = list(scan)
    except OSError as exc:
        skipped.unlistable.append(f"{folder}: {exc.strerror or exc}")
        return []
    kept = []
    for entry in entries:
        if entry.name.startswith(".") and _kind(entry) == "folder":
            skipped.hidden += 1
        else:
            kept.append(entry)
    return kept


def _kind(entry: os.DirEntry) -> str:
    """"folder", "file", "other" (FIFO, device, socket) or "unfollowable" (a dangling link)."""
    try:
        mode = entry.stat().st_mode  # follows links
    except OSError:
        return "unfollowable"
    if stat.S_ISDIR(mode):
        return "folder"
    return "file" if stat.S_ISREG(mode) else "other"


def _glob(argument: str, skipped: Skipped) -> list[InputFile]:
    """Like ``glob.glob(argument, recursive=True)`` (case-sensitive, ``**`` = any folders,
    hidden names not matched), but following each folder once; matched folders are walked."""
    parts = Path(argument).parts
    fixed = 0
    while fixed < len(parts) and not glob.has_magic(parts[fixed]):
        fixed += 1
    base = Path(*parts[:fixed]) if fixed else Path(".")
    if not base.is_dir():
        return []
    matches: list[Path] = []
    _match(base, parts[fixed:], matches, set(), skipped, top=not fixed)
    files: list[InputFile] = []
    for match in sorted(matches, key=str):
        if match.is_dir():
            files.extend(InputFile(file, base) for file in _walk(match, skipped))
        elif not is_image_path(match):
            skipped.not_images[match.suffix.lower()] += 1
        else:
            files.append(InputFile(match, base))
    return files


def _match(folder: Path, pattern: tuple[str, ...], matches: list[Path], visited: set,
           skipped: Skipped, top: bool = False) -> None:
    if not pattern:
        matches.append(folder)
        return
    head, rest = pattern[0], pattern[1:]
    try:
        info = os.stat(folder)
        with os.scandir(folder) as scan:
            entries = sorted((e for e in scan if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as exc:
        skipped.unlistable.append(f"{folder}: {exc.strerror or exc}")
        return
    if head == "**":
        key = (info.st_dev, info.st_ino, len(pattern))
        if key in visited:
            return
        visited.add(key)
        _match(folder, rest, matches, visited, skipped, top)
        for entry in entries:
            if _kind(entry) == "folder":
                _match(_joined(folder, entry.name, top), pattern, matches, visited, skipped)
        return
    for entry in entries:
        if fnmatch.fnmatchcase(entry.name, head):
            path = _joined(folder, entry.name, top)
            if not rest:
                matches.append(path)
            elif _kind(entry) == "folder":
                _match(path, rest, matches, visited, skipped)


def _joined(folder: Path, name: str, top: bool) -> Path:
    """``name`` under ``folder``; a relative glob's matches stay relative ("a.jpg", not "./a.jpg")."""
    return Path(name) if top else folder / name
