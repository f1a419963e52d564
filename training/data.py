"""Finding the labelled images in a data folder and splitting them into train / val / test.

A data folder is either
  DIR/<class>/...                      one pool, split here (stratified, seeded, 70/15/15), or
  DIR/{train,val|valid,test}/<class>/  splits given by the folder layout (used as they are).
Class folders are recognised by name, case-insensitively (``edge.contract.folder_label``), or by ``--positive NAME`` when a data set uses other names. Images are found
recursively inside a class folder; files without an image suffix are ignored, and image files
that cannot be decoded are skipped and reported (``ScanResult.skipped``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.contract import folder_label
from edge.errors import ImageDecodeError, UserError
from edge.preprocess import is_image_path, load_image
from edge.progress import progress_bar

SPLIT_FOLDER_NAMES = {"train": ("train", "training"), "val": ("val", "valid", "validation"),
                      "test": ("test", "testing")}

Item = tuple[str, int]  # (absolute path, label 1 = crack)


@dataclass(frozen=True)
class SplitFractions:
    val: float = 0.15
    test: float = 0.15

    def __post_init__(self) -> None:
        if not (0.0 < self.val < 1.0 and 0.0 < self.test < 1.0 and self.val + self.test < 1.0):
            raise UserError(f"split fractions must be in (0, 1) with val + test < 1, got "
                            f"val {self.val}, test {self.test}")


@dataclass
class ScanResult:
    splits: dict[str, list[Item]]
    class_folders: dict[str, str]          # "crack"/"no_crack" -> the folder name found
    presplit: bool                         # True when train/val/test came from the folders
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def counts(self) -> dict[str, dict[str, int]]:
        return {name: {"crack": sum(label for _, label in items),
                       "no_crack": sum(1 - label for _, label in items),
                       "total": len(items)}
                for name, items in self.splits.items()}


def find_class_folders(root: Path, positive: str | None = None) -> dict[int, Path]:
    """The crack (1) and no-crack (0) folders directly under ``root``."""
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise UserError(f"{root} has no class folders; expected e.g. {root}/crack and "
                        f"{root}/no_crack (or Positive/Negative)")
    if positive is not None:
        names = [p.name for p in folders]
        if positive.lower() not in [n.lower() for n in names]:
            raise UserError(f"--positive {positive!r} is not a folder of {root} "
                            f"(folders: {', '.join(names)})")
        if len(folders) != 2:
            raise UserError(f"--positive needs exactly two class folders in {root}, found "
                            f"{len(folders)}: {', '.join(names)}")
    found: dict[int, Path] = {}
    unknown = []
    for folder in folders:
        label = folder_label(folder.name, positive)
        if label is None:
            unknown.append(folder.name)
        elif label in found:
            raise UserError(f"{root} has two {'crack' if label else 'no-crack'} folders: "
                            f"{found[label].name} and {folder.name}")
        else:
            found[label] = folder
    if unknown and len(found) < 2:
        raise UserError(f"unknown class folder name(s) in {root}: {', '.join(unknown)}; use "
                        "crack/no_crack, Positive/Negative, cracked/uncracked or 1/0, or name "
                        "the crack folder with --positive")
    if len(found) < 2:
        have = next(iter(found.values())).name
        raise UserError(f"{root} has only one class ({have}); training needs crack and "
                        "no-crack images")
    return found


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and is_image_path(p)
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def find_split_folders(root: Path, val_name: str | None = None, test_name: str | None = None
                       ) -> dict[str, Path] | None:
    """train/val/test folders under ``root``, or None when the data is one pool of classes."""
    children = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    wanted = {"train": None, "val": val_name, "test": test_name}
    found: dict[str, Path] = {}
    for split, explicit in wanted.items():
        if explicit is not None:
            folder = root / explicit
            if not folder.is_dir():
                raise UserError(f"--{split}-split folder not found: {folder}")
            found[split] = folder
            continue
        for name in SPLIT_FOLDER_NAMES[split]:
            if name in children and children[name] not in found.values():
                found[split] = children[name]
                break
    if "train" not in found:
        if val_name or test_name:
            raise UserError(f"--val-split/--test-split need a train/ folder in {root}")
        return None
    missing = [split for split in ("val", "test") if split not in found]
    if missing:
        raise UserError(f"{root} has a train folder but no {' or '.join(missing)} folder; "
                        "give all three (train, val or valid, test) or one folder per class")
    if len(set(found.values())) < 3:
        raise UserError("the train, val and test splits must be three different folders")
    return found


def scan(root: str | Path, positive: str | None = None, fractions: SplitFractions | None = None,
         seed: int = 0, group_by_source: bool = False, val_name: str | None = None,
         test_name: str | None = None, verify: bool = True, workers: int = 8) -> ScanResult:
    """Find, check and split the labelled images of a data folder."""
    root = Path(root)
    if not root.exists():
        raise UserError(f"data folder not found: {root}")
    if not root.is_dir():
        raise UserError(f"not a folder: {root}")
    split_folders = find_split_folders(root, val_name, test_name)
    skipped: list[tuple[str, str]] = []
    if split_folders is not None:
        splits, class_names = {}, {}
        for split, folder in split_folders.items():
            items, names = _collect(folder, positive)
            if not items:
                raise UserError(f"the {split} folder {folder} has no images")
            splits[split] = items
            class_names = class_names or names
    else:
        items, class_names = _collect(root, positive)
        splits = None
    if verify:
        every = [item for group in (splits.values() if splits else [items]) for item in group]
        bad = dict(check_readable([path for path, _ in every], workers))
        skipped = sorted(bad.items())
        if splits:
            splits = {name: [it for it in group if it[0] not in bad] for name, group in splits.items()}
        else:
            items = [it for it in items if it[0] not in bad]
    if splits is None:
        splits = split_items(items, fractions or SplitFractions(), seed, group_by_source)
    for name, group in splits.items():
        labels = {label for _, label in group}
        if not group:
            raise UserError(f"the {name} split is empty after skipping unreadable files")
        if name == "train" and len(labels) < 2:
            raise UserError("the train split has only one class; training needs crack and "
                            "no-crack images")
    return ScanResult(splits=splits, class_folders=class_names, presplit=split_folders is not None,
                      skipped=skipped)


def _collect(root: Path, positive: str | None) -> tuple[list[Item], dict[str, str]]:
    folders = find_class_folders(root, positive)
    items: list[Item] = []
    for label, folder in sorted(folders.items()):
        images = list_images(folder)
        if not images:
            raise UserError(f"class folder {folder} has no images")
        items.extend((str(path.resolve()), label) for path in images)
    names = {"crack": folders[1].name, "no_crack": folders[0].name}
    return items, names


def check_readable(paths: list[str], workers: int = 8) -> list[tuple[str, str]]:
    """(path, reason) for every file that cannot be decoded. Decodes in a thread pool, with a
    progress bar on a terminal."""
    def problem(path: str) -> str | None:
        try:
            load_image(path)
        except ImageDecodeError as exc:
            return str(exc)
        return None

    bad = []
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            progress_bar("checking images", total=len(paths)) as advance:
        for path, reason in zip(paths, pool.map(problem, paths)):
            advance(1)
            if reason is not None:
                bad.append((path, reason))
    return bad


_PATCH_SOURCE = re.compile(r"^(?P<source>.+?)__y\d+_x\d+$")       # crack data patches
_GRID_SOURCE = re.compile(r"^(?P<source>.+?)_\d+_\d+$")             # IMG_<photo>_<row>_<col>


def source_of(path: str) -> str:
    """The photo a patch was cut from, read from its file name (``001__y48_x96`` -> ``001``,
    ``IMG_1234_3_5`` -> ``IMG_1234``); a file that names no source is its own source."""
    stem = Path(path).stem
    for pattern in (_PATCH_SOURCE, _GRID_SOURCE):
        match = pattern.match(stem)
        if match:
            return match.group("source")
    return stem


def split_items(items: list[Item], fractions: SplitFractions, seed: int,
                group_by_source: bool = False) -> dict[str, list[Item]]:
    """Deterministic stratified split. With ``group_by_source`` whole source photos go to one
    split, so no photo is seen in training and again in validation or test."""
    rng = np.random.default_rng(seed)
    if group_by_source:
        return _split_groups(items, fractions, rng)
    splits: dict[str, list[Item]] = {"train": [], "val": [], "test": []}
    for label in (0, 1):
        members = sorted(item for item in items if item[1] == label)
        order = rng.permutation(len(members))
        n_test = int(round(len(members) * fractions.test))
        n_val = int(round(len(members) * fractions.val))
        splits["test"].extend(members[i] for i in order[:n_test])
        splits["val"].extend(members[i] for i in order[n_test:n_test + n_val])
        splits["train"].extend(members[i] for i in order[n_test + n_val:])
    for name in splits:
        splits[name].sort()
    for name in ("val", "test"):
        if len({label for _, label in splits[name]}) < 2:
            raise UserError(f"too few images to make a {name} split with both classes; add images "
                            "or give train/val/test folders")
    return splits


def _split_groups(items: list[Item], fractions: SplitFractions, rng: np.random.Generator
                  ) -> dict[str, list[Item]]:
    groups: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        groups[source_of(item[0])].append(item)
    if len(groups) < 3:
        raise UserError(f"--group-by-source found only {len(groups)} source photo(s); a split "
                        "by photo needs at least 3")
    names = sorted(groups)
    names = [names[i] for i in rng.permutation(len(names))]
    total = len(items)
    positives = sum(label for _, label in items)
    targets = {"test": fractions.test, "val": fractions.val}
    splits: dict[str, list[Item]] = {"train": [], "val": [], "test": []}
    # Fill test, then val, each up to its share of images, taking the groups whose crack share
    # keeps the split's crack share closest to the whole set's; the rest is training data.
    remaining = list(names)
    for split in ("test", "val"):
        want = max(1, round(total * targets[split]))
        while remaining and len(splits[split]) < want and len(remaining) > 1:
            best = min(remaining[:25], key=lambda name: _share_error(splits[split], groups[name],
                                                                     positives / total))
            splits[split].extend(groups[best])
            remaining.remove(best)
    for name in remaining:
        splits["train"].extend(groups[name])
    for name in splits:
        if not splits[name]:
            raise UserError(f"too few source photos to fill the {name} split")
        splits[name].sort()
    return splits


def _share_error(current: list[Item], adding: list[Item], target_share: float) -> float:
    together = current + adding
    return abs(sum(label for _, label in together) / len(together) - target_share)
