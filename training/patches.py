"""Cut a segmentation data set (photos + binary crack masks) into labelled classification patches.

`crack data patches --images DIR --masks DIR --out DIR --size 96 --stride 48`

A photo and its mask share a name stem (``image/001.jpg`` + ``mask/001.png``); a mask pixel is
crack when it is non-zero in a 0/1 mask, or >= half the maximum value (128 in 8-bit) otherwise.
Square windows of ``size`` pixels are taken every ``stride`` pixels, plus one window flush with the
bottom and right edges so that the whole photo is covered. A window is labelled

- ``crack`` when at least ``crack_min_fraction`` of its area is crack pixels lying in its centre,
  i.e. at least ``crack_margin`` pixels away from its border (a crack that only grazes the
  border does not make a crack patch),
- ``no_crack`` when no crack pixel lies in it or within ``clearance`` pixels of it (masks are
  rarely pixel-exact, and a crack just outside the border often shows inside),
- and is dropped as ambiguous otherwise.

Output: ``OUT/crack/`` and ``OUT/no_crack/`` with ``<photo-stem>__y<Y>_x<X>.png`` (the training
code groups patches by the part before ``__`` so that a photo's patches stay in one split), and
``OUT/patches.csv`` with path (relative to OUT), source (photo stem), y, x, label,
crack_fraction (crack pixels / patch area, whole patch). Deterministic: photos are taken in name
order and the patches are the photo's pixels, losslessly.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge.errors import ImageDecodeError, UserError
from edge.preprocess import is_image_path, load_image, read_file_bytes
from edge.progress import progress_bar
from edge.tiling import window_starts

CLASSES = ("crack", "no_crack")
CSV_NAME = "patches.csv"
CSV_COLUMNS = ("path", "source", "y", "x", "label", "crack_fraction")
SOURCE_SEPARATOR = "__"
DEFAULT_SIZE = 96
DEFAULT_STRIDE = 48
DEFAULT_CRACK_MIN_FRACTION = 0.01
DEFAULT_CLEARANCE = 4


@dataclass(frozen=True)
class PatchOptions:
    images: Path
    masks: Path
    out: Path
    size: int = DEFAULT_SIZE
    stride: int = DEFAULT_STRIDE
    crack_min_fraction: float = DEFAULT_CRACK_MIN_FRACTION
    crack_margin: int | None = None  # None: size // 8
    clearance: int = DEFAULT_CLEARANCE
    overwrite: bool = False

    @property
    def margin(self) -> int:
        return self.size // 8 if self.crack_margin is None else self.crack_margin


@dataclass
class PatchSummary:
    out: Path
    photos: int = 0  # photos cut
    skipped_small: list[str] = field(default_factory=list)
    photos_without_mask: list[str] = field(default_factory=list)
    masks_without_photo: list[str] = field(default_factory=list)
    per_class: dict[str, int] = field(default_factory=lambda: {c: 0 for c in CLASSES})
    dropped: int = 0  # ambiguous windows, not written
    seconds: float = 0.0

    def lines(self) -> list[str]:
        total = sum(self.per_class.values()) + self.dropped
        out = [
            f"photos: {self.photos} cut"
            + (f", {len(self.skipped_small)} skipped (smaller than the patch)"
               if self.skipped_small else "")
            + (f", {len(self.photos_without_mask)} without a mask"
               if self.photos_without_mask else "")
            + (f" ({len(self.masks_without_photo)} masks have no photo)"
               if self.masks_without_photo else ""),
            f"patches: {self.per_class['crack']} crack, {self.per_class['no_crack']} no_crack, "
            f"{self.dropped} ambiguous dropped (of {total} windows)",
            f"written to {self.out} ({CSV_NAME} lists them) in {self.seconds:.1f} s",
        ]
        return out


@dataclass(frozen=True)
class WindowLabels:
    """Labels of all windows of one photo: ``label[i]`` is 'crack', 'no_crack' or None."""

    ys: list[int]
    xs: list[int]
    labels: list[str | None]  # row-major over (ys, xs)
    fractions: list[float]


# ---------------------------------------------------------------------------------------------
# pure functions (used by the tests with synthetic masks)


def binarize_mask(mask: np.ndarray) -> np.ndarray:
    """A decoded mask (any depth, grey or colour) -> bool crack map.

    0/1 masks: non-zero is crack. Otherwise (0/255, 16-bit, JPEG-compressed): >= half of full
    scale. Colour masks count a pixel as crack when any channel does."""
    if mask.ndim == 3:
        if mask.shape[2] == 4:
            mask = mask[..., :3]
        mask = mask.max(axis=2)
    peak = int(mask.max()) if mask.size else 0
    if peak <= 1:
        return mask > 0
    full = 65535 if mask.dtype == np.uint16 else 255
    return mask >= (full + 1) // 2


def _box_sums(integral: np.ndarray, ys: np.ndarray, xs: np.ndarray, h: int, w: int) -> np.ndarray:
    y0, x0 = ys[:, None], xs[None, :]
    return (integral[y0 + h, x0 + w] - integral[y0, x0 + w] - integral[y0 + h, x0]
            + integral[y0, x0])


def _integral(binary: np.ndarray) -> np.ndarray:
    return cv2.integral(binary.astype(np.uint8), sdepth=cv2.CV_32S)


def label_windows(crack: np.ndarray, size: int, stride: int, min_fraction: float, margin: int,
                  clearance: int) -> WindowLabels:
    """Label every window of a bool crack map (see the module docstring for the rule)."""
    height, width = crack.shape
    ys, xs = window_starts(height, size, stride), window_starts(width, size, stride)
    if not ys or not xs:
        return WindowLabels(ys, xs, [], [])
    ya, xa = np.array(ys), np.array(xs)
    integral = _integral(crack)
    whole = _box_sums(integral, ya, xa, size, size)
    centre = _box_sums(integral, ya + margin, xa + margin, size - 2 * margin,
                       size - 2 * margin)
    if clearance > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * clearance + 1,) * 2)
        near_map = cv2.dilate(crack.astype(np.uint8), kernel) > 0
    else:
        near_map = crack
    near = _box_sums(_integral(near_map), ya, xa, size, size)
    need = max(1, math.ceil(min_fraction * size * size - 1e-9))
    labels: list[str | None] = []
    for c, n in zip(centre.ravel(), near.ravel()):
        labels.append("crack" if c >= need else "no_crack" if n == 0 else None)
    fractions = (whole.ravel() / float(size * size)).tolist()
    return WindowLabels(ys, xs, labels, fractions)


def patch_name(stem: str, y: int, x: int) -> str:
    return f"{stem}{SOURCE_SEPARATOR}y{y}_x{x}.png"


# ---------------------------------------------------------------------------------------------
# files


def _validate(options: PatchOptions) -> None:
    if options.size <= 0:
        raise UserError(f"--size must be positive, not {options.size}")
    if options.stride <= 0:
        raise UserError(f"--stride must be positive, not {options.stride}")
    if not 0 < options.crack_min_fraction <= 1:
        raise UserError("--crack-min-fraction must be in (0, 1], not "
                        f"{options.crack_min_fraction}")
    if options.margin < 0 or 2 * options.margin >= options.size:
        raise UserError(f"--crack-margin must be 0 or more and less than half of --size "
                        f"({options.size}), not {options.margin}")
    inner = (options.size - 2 * options.margin) ** 2
    if options.crack_min_fraction * options.size ** 2 > inner:
        raise UserError(f"--crack-min-fraction {options.crack_min_fraction} asks for more crack "
                        f"pixels than the centre of a patch holds (size {options.size}, margin "
                        f"{options.margin}); lower it or the margin")
    if options.clearance < 0:
        raise UserError(f"--clearance must be 0 or more, not {options.clearance}")
    for name, folder in (("--images", options.images), ("--masks", options.masks)):
        if not Path(folder).exists():
            raise UserError(f"{name} folder not found: {folder}")
        if not Path(folder).is_dir():
            raise UserError(f"{name} is not a folder: {folder}")


def _images_by_stem(folder: Path, what: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or not is_image_path(path) or path.name.startswith("."):
            continue
        if path.stem in found:
            raise UserError(f"two {what} named {path.stem} in {folder}: {found[path.stem].name} "
                            f"and {path.name}; keep one")
        found[path.stem] = path
    return found


def find_pairs(images: Path, masks: Path) -> tuple[list[tuple[str, Path, Path]], list[str],
                                                   list[str]]:
    """(stem, photo, mask) pairs sorted by stem, photos without a mask, masks without a photo."""
    photos = _images_by_stem(Path(images), "photos")
    mask_files = _images_by_stem(Path(masks), "masks")
    pairs = [(stem, photos[stem], mask_files[stem]) for stem in sorted(photos)
             if stem in mask_files]
    if not pairs:
        raise UserError(
            f"no photo/mask pairs: {len(photos)} images in {images}, {len(mask_files)} in "
            f"{masks}, and no name stem in both (a mask needs its photo's name, e.g. 001.jpg "
            "and 001.png)")
    lonely_photos = [p.name for s, p in photos.items() if s not in mask_files]
    lonely_masks = [p.name for s, p in mask_files.items() if s not in photos]
    return pairs, lonely_photos, lonely_masks


def load_mask(path: Path) -> np.ndarray:
    data = read_file_bytes(path)
    if not data:
        raise ImageDecodeError("empty file")
    mask = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if mask is None or mask.size == 0:
        raise ImageDecodeError("not a decodable image")
    return binarize_mask(mask)


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    old = [p for cls in CLASSES if (out / cls).is_dir() for p in (out / cls).iterdir()]
    if (out / CSV_NAME).exists():
        old.append(out / CSV_NAME)
    if old and not overwrite:
        raise UserError(f"--out {out} already holds patches; give a new folder or add "
                        "--overwrite to replace them")
    for path in old:
        if path.is_file() and (path.suffix == ".png" or path.name == CSV_NAME):
            path.unlink()
    leftovers = [p for cls in CLASSES if (out / cls).is_dir() for p in (out / cls).iterdir()]
    if leftovers:
        raise UserError(f"--out {out} has files that are not patches in its class folders "
                        f"(e.g. {leftovers[0]}); move them away")
    try:
        for cls in CLASSES:
            (out / cls).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {out}: {exc.strerror or exc}") from None


def _write_png(path: Path, rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:  # pragma: no cover
        raise UserError(f"cannot encode {path.name}")
    path.write_bytes(buf.tobytes())


def cut_patches(options: PatchOptions, *, warn: Callable[[str], None] | None = None,
                progress: bool = True) -> PatchSummary:
    """Cut every photo/mask pair in ``options`` into patches; see the module docstring."""
    warn = warn or (lambda message: None)
    started = time.perf_counter()
    _validate(options)
    pairs, lonely_photos, lonely_masks = find_pairs(options.images, options.masks)
    out = Path(options.out)
    summary = PatchSummary(out=out, photos_without_mask=lonely_photos,
                           masks_without_photo=lonely_masks)
    if lonely_photos:
        warn(f"{len(lonely_photos)} photos have no mask and are skipped "
             f"(e.g. {lonely_photos[0]})")

    # Read and check every pair before writing anything, so that a bad pair leaves no output.
    # (Only the masks and sizes are kept; photos are decoded again when cut.)
    usable: list[tuple[str, Path, Path]] = []
    for stem, photo, mask_path in pairs:
        try:
            height, width = _image_size(photo)
        except ImageDecodeError as exc:
            raise UserError(f"cannot read photo {photo}: {exc}") from None
        try:
            mask = load_mask(mask_path)
        except ImageDecodeError as exc:
            raise UserError(f"cannot read mask {mask_path}: {exc}") from None
        if mask.shape != (height, width):
            raise UserError(f"size mismatch: mask {mask_path.name} is {mask.shape[1]}x"
                            f"{mask.shape[0]} but photo {photo.name} is {width}x{height} "
                            "(width x height); a mask must have its photo's size")
        if height < options.size or width < options.size:
            summary.skipped_small.append(f"{photo.name} ({width}x{height})")
            continue
        if SOURCE_SEPARATOR in stem:
            warn(f"{photo.name}: the name contains '{SOURCE_SEPARATOR}'; patches are grouped by "
                 f"the part before it ({stem.split(SOURCE_SEPARATOR)[0]!r})")
        usable.append((stem, photo, mask_path))
    if not usable:
        raise UserError(f"no photo is at least {options.size}x{options.size} pixels (e.g. "
                        f"{summary.skipped_small[0]}): lower --size")
    if summary.skipped_small:
        warn(f"skipping {len(summary.skipped_small)} photos smaller than --size {options.size}: "
             + ", ".join(summary.skipped_small[:5])
             + (", ..." if len(summary.skipped_small) > 5 else ""))

    _prepare_out(out, options.overwrite)
    rows: list[tuple] = []

    def cut(stem: str, photo: Path, mask_path: Path) -> None:
        try:
            rgb = load_image(photo)
        except ImageDecodeError as exc:
            raise UserError(f"cannot read photo {photo}: {exc}") from None
        windows = label_windows(load_mask(mask_path), options.size, options.stride,
                                options.crack_min_fraction, options.margin, options.clearance)
        k = 0
        for y in windows.ys:
            for x in windows.xs:
                label, fraction = windows.labels[k], windows.fractions[k]
                k += 1
                if label is None:
                    summary.dropped += 1
                    continue
                name = patch_name(stem, y, x)
                _write_png(out / label / name, rgb[y:y + options.size, x:x + options.size])
                summary.per_class[label] += 1
                rows.append((f"{label}/{name}", stem, y, x, label, f"{fraction:.6f}"))
        summary.photos += 1

    with progress_bar("patches", total=len(usable), enabled=progress, unit="photo") as advance:
        for item in usable:
            cut(*item)
            advance(1)

    with (out / CSV_NAME).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerows(rows)
    summary.seconds = time.perf_counter() - started
    return summary


def _image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file, decoding it (a check that it is readable)."""
    rgb = load_image(path)
    return rgb.shape[0], rgb.shape[1]
