"""The project's own demo data set: synthetic concrete / asphalt images with and without cracks.

`crack data demo --out DIR` writes ``DIR/crack/*.png`` and ``DIR/no_crack/*.png``, a
``README.txt`` and, last, ``DIR/.complete`` (an interrupted run has no marker and is redone).

The generator is deterministic: image ``i`` of a class is drawn from its own random stream
``(seed, class, i)``, so the same seed gives byte-identical files, and a smaller ``--count`` gives
a prefix of a larger one.

It is meant to be hard in the right way. Both classes share the same surfaces (concrete, asphalt,
smooth plaster), the same lighting and the same distractors, drawn equally often: straight joints
and saw-cuts (uniform, 2.5-6 px wide at 128 px, mostly square to the frame), step edges, shadows,
paint lines, stains, dark blobs and pores. Cracks are thin, tortuous dark polylines (a random walk
with a drift, lasting turns, zig-zag and kinks; 1.5-5.5 px wide at 128 px and tapering; branches;
one to three per image; sometimes faint) drawn anti-aliased, with a soft shaded band along them,
multiplied into the texture, and running through the middle of the image (as in a photo taken of
a crack), not only along a border. Every image's global brightness mean
and standard deviation are then set to targets drawn from one distribution for both classes, so
that brightness and contrast say nothing about the label: a model has to find the crack's shape.
Last, most images go through a JPEG encoder, like survey photos.

Made so that the default recipe (`make train convert`: ResNet50V2 from scratch at 64 px, see
DEMO_EPOCHS) learns a detector within 15 minutes on two CPU cores that also scores real photos of
concrete well above chance (see the README's first section).
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import re
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import cv2
import numpy as np

from edge.errors import UserError
from edge.progress import progress_bar

GENERATOR_VERSION = 4
CLASSES = ("crack", "no_crack")
COMPLETE_MARKER = ".complete"
README_NAME = "README.txt"
DEFAULT_COUNT = 1000  # per class: 2000 images, a test split of 300 at the default 15%
DEFAULT_SIZE = 128
# The recipe `make train convert` trains on the default set with (the Makefile's EPOCHS, IMG_SIZE
# and BATCH; tests/test_demo_data.py checks they agree): ResNet50V2 from random weights, the whole
# network at learning rate 1e-3 decaying along a cosine, batch 32 for 12 epochs. (With joints
# 2.5-6 px wide, generator version 3, it took 17 epochs for about the same test accuracy: README.)
DEMO_EPOCHS = 12
DEMO_IMG_SIZE = 64
DEMO_BATCH_SIZE = 32
MIN_SIZE = 32
MAX_SIZE = 1024
MAX_COUNT = 100_000

# Random stream ids per class: image i of class c uses SeedSequence([seed, _CLASS_STREAM[c], i]).
_CLASS_STREAM = {"no_crack": 0, "crack": 1}
_SUPERSAMPLE = 4  # line-like structures are drawn at 4x and area-averaged: anti-aliased coverage
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_NORMAL = NormalDist()  # the noise fields are ~N(0, 1): thresholds for a wanted area fraction
_FILE_RE = re.compile(r"^(crack|no_crack)_(\d+)\.png$")  # file_name's output
CENTRAL_BOX = (0.2, 0.8)  # every crack runs at least 0.2 x size pixels inside this box
JPEG_SHARE = 0.6  # images that go through a JPEG encoder (quality 55-95), in both classes


@dataclass(frozen=True)
class DemoOptions:
    out: Path
    count: int = DEFAULT_COUNT  # images per class
    size: int = DEFAULT_SIZE  # square images, pixels
    seed: int = 0


@dataclass(frozen=True)
class DemoSummary:
    out: Path
    per_class: dict[str, int]
    size: int
    seed: int
    seconds: float


@dataclass
class Sample:
    """One rendered image and, for the crack class, the crack's anti-aliased coverage (0..1)."""

    rgb: np.ndarray  # (size, size, 3) uint8
    crack_mask: np.ndarray  # (size, size) float32, all zero for no_crack
    # what else was drawn, in drawing order: names from DISTRACTORS (a name may repeat)
    distractors: tuple[str, ...] = ()


# The distractors a sample may carry (Sample.distractors), as benchmarks/demo_errors.py reports
# a model's errors by them. "jpeg" is the JPEG round trip.
DISTRACTORS = ("joint_square", "joint_slanted", "step_edge", "paint_line", "dark_blob",
               "cast_shadow", "jpeg")


# ---------------------------------------------------------------------------------------------
# building blocks


def _smooth_noise(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Zero-mean, unit-std random field whose features are about ``scale`` pixels wide."""
    cells = max(2, int(math.ceil(size / max(scale, 0.5)))) + 3
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    big = int(round(cells * size / (cells - 3)))
    field = cv2.resize(grid, (big, big), interpolation=cv2.INTER_CUBIC)
    off = (big - size) // 2
    field = field[off:off + size, off:off + size]
    return (field - field.mean()) / (field.std() + 1e-6)


def _fractal(rng: np.random.Generator, size: int, scales: list[float],
             weights: list[float]) -> np.ndarray:
    out = np.zeros((size, size), np.float32)
    for scale, weight in zip(scales, weights):
        out += weight * _smooth_noise(rng, size, scale)
    return out


@functools.lru_cache(maxsize=4)
def _coords(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (read-only, shared)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    yy.flags.writeable = False
    xx.flags.writeable = False
    return yy, xx


def _line_distance(size: int, point: tuple[float, float], angle: float) -> np.ndarray:
    """Signed distance of every pixel to the line through ``point`` with direction ``angle``."""
    yy, xx = _coords(size)
    return (xx - point[0]) * -math.sin(angle) + (yy - point[1]) * math.cos(angle)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))


def _random_line_through(rng: np.random.Generator, size: int) -> tuple[tuple[float, float], float]:
    point = (float(rng.uniform(0.15, 0.85) * size), float(rng.uniform(0.15, 0.85) * size))
    return point, float(rng.uniform(0, math.pi))


class _Canvas:
    """A supersampled 8-bit canvas for thin structures; ``coverage()`` area-averages it to 0..1."""

    def __init__(self, size: int):
        self.size = size
        self.big = np.zeros((size * _SUPERSAMPLE, size * _SUPERSAMPLE), np.uint8)

    def _pt(self, p: np.ndarray) -> tuple[int, int]:
        return int(round(p[0] * _SUPERSAMPLE)), int(round(p[1] * _SUPERSAMPLE))

    def polyline(self, points: np.ndarray, widths: np.ndarray) -> None:
        """Segments ``points[k] -> points[k+1]`` with width ``widths[k]`` (pixels, >= 0)."""
        pts = np.rint(np.asarray(points) * _SUPERSAMPLE).astype(np.int64).tolist()
        thick = np.rint(np.asarray(widths) * _SUPERSAMPLE).astype(np.int64).tolist()
        for k, t in enumerate(thick[: len(pts) - 1]):
            if t >= 1:
                cv2.line(self.big, pts[k], pts[k + 1], 255, t, cv2.LINE_AA)

    def straight(self, p0: np.ndarray, p1: np.ndarray, width: float) -> None:
        self.polyline(np.stack([p0, p1]), np.array([width]))

    def coverage(self) -> np.ndarray:
        small = cv2.resize(self.big, (self.size, self.size), interpolation=cv2.INTER_AREA)
        return small.astype(np.float32) / 255.0


def _line_endpoints(size: int, point: tuple[float, float], angle: float) -> tuple[np.ndarray, ...]:
    d = np.array([math.cos(angle), math.sin(angle)])
    p = np.array(point)
    return p - 2 * size * d, p + 2 * size * d


# ---------------------------------------------------------------------------------------------
# surfaces


def _surface(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Reflectance (size, size) around 1.0 and an RGB tint (3,) for one surface type."""
    kind = rng.choice(["concrete", "asphalt", "plaster"], p=[0.45, 0.35, 0.20])
    s = size / 128.0
    if kind == "asphalt":
        tint = np.array([1.0, 1.0, 1.0]) + rng.normal(0, 0.015, 3) + [-0.015, 0.0, 0.02]
        base = 1.0 + _fractal(rng, size, [1.2, 3.0, 40 * s], [0.10, 0.07, 0.05])
        chip_scales, chip_density = [1.6, 2.8], rng.uniform(0.10, 0.22)
        light_chip_density = rng.uniform(0.06, 0.15)
        pores = int(rng.integers(10, 50) * s * s)
    elif kind == "concrete":
        tint = np.array([1.0, 1.0, 1.0]) + rng.normal(0, 0.015, 3) + [0.015, 0.0, -0.02]
        base = 1.0 + _fractal(rng, size, [1.0, 4.0, 30 * s], [0.05, 0.05, 0.05])
        chip_scales, chip_density = [1.3, 2.2], rng.uniform(0.03, 0.12)
        light_chip_density = rng.uniform(0.0, 0.06)
        pores = int(rng.integers(3, 30) * s * s)
    else:  # smooth plaster / trowelled concrete
        tint = np.array([1.0, 1.0, 1.0]) + rng.normal(0, 0.01, 3)
        base = 1.0 + _fractal(rng, size, [0.8, 2.5, 50 * s], [0.035, 0.03, 0.06])
        chip_scales, chip_density = [1.2, 2.0], rng.uniform(0.0, 0.04)
        light_chip_density = 0.0
        pores = int(rng.integers(0, 15) * s * s)

    # aggregate chips: thresholded band-limited noise -> irregular dark / light grains
    for scale in chip_scales:
        field = _smooth_noise(rng, size, scale)
        if chip_density > 0:
            t = _NORMAL.inv_cdf(1 - chip_density / len(chip_scales))
            depth = rng.uniform(0.15, 0.45)
            base *= 1 - depth * _sigmoid((field - t) * 6)
        if light_chip_density > 0:
            t = _NORMAL.inv_cdf(1 - light_chip_density / len(chip_scales))
            base *= 1 + rng.uniform(0.1, 0.3) * _sigmoid((-field - t) * 6)

    # pores: small round voids, darker inside
    if pores:
        canvas = _Canvas(size)
        for _ in range(pores):
            c = rng.uniform(0, size, 2)
            r = rng.uniform(0.5, 2.2)
            cv2.circle(canvas.big, canvas._pt(c), max(1, int(r * _SUPERSAMPLE)), 255, -1,
                       cv2.LINE_AA)
        base *= 1 - rng.uniform(0.3, 0.6) * canvas.coverage()
    return base.astype(np.float32), tint.astype(np.float32)


def _stains(rng: np.random.Generator, size: int, refl: np.ndarray) -> None:
    """Large soft damp patches or efflorescence (in place)."""
    for _ in range(int(rng.integers(0, 3))):
        field = _smooth_noise(rng, size, rng.uniform(0.2, 0.5) * size)
        soft = _sigmoid((field - rng.uniform(0.3, 1.2)) * rng.uniform(2, 6))
        refl *= 1 + rng.choice([-1, 1]) * rng.uniform(0.05, 0.2) * soft


# ---------------------------------------------------------------------------------------------
# distractors: drawn with the same probabilities in both classes


def _joint(rng: np.random.Generator, size: int, refl: np.ndarray) -> str:
    """A straight saw-cut or construction joint across the image: 4-7 px wide at 128 px,
    uniform, mostly square to the frame, as survey photos are usually taken. Narrower, a straight
    joint at the model's 64 px is a 1 px dark line, which even a person would take for a straight
    hairline crack; a quarter of the cracks are as wide at their widest, so width is no shortcut.
    Returns "joint_square" or "joint_slanted"."""
    point, angle = _random_line_through(rng, size)
    square = rng.random() < 0.7  # mostly axis-aligned, like real joints
    if square:
        angle = rng.choice([0.0, math.pi / 2]) + rng.normal(0, 0.05)
    canvas = _Canvas(size)
    p0, p1 = _line_endpoints(size, point, angle)
    canvas.straight(p0, p1, rng.uniform(4.0, 7.0) * size / 128)
    cov = cv2.GaussianBlur(canvas.coverage(), (0, 0), rng.uniform(0.3, 0.8))
    refl *= 1 - rng.uniform(0.25, 0.7) * cov
    if rng.random() < 0.4:  # worn lip along one side
        dist = _line_distance(size, point, angle)
        refl *= 1 + rng.uniform(0.04, 0.12) * np.exp(-((dist - rng.uniform(3, 6)) / 1.5) ** 2)
    return "joint_square" if square else "joint_slanted"


def _step_edge(rng: np.random.Generator, size: int, refl: np.ndarray) -> None:
    """Where two slabs or a kerb and the road meet: a straight brightness step."""
    point, angle = _random_line_through(rng, size)
    dist = _line_distance(size, point, angle)
    side = _sigmoid(dist / rng.uniform(0.4, 1.5))
    refl *= 1 + rng.uniform(-0.25, 0.25) * side


def _paint_line(rng: np.random.Generator, size: int, paint: np.ndarray) -> None:
    """A worn road marking: a wide straight bright band with rough edges (in place)."""
    point, angle = _random_line_through(rng, size)
    width = rng.uniform(5, 18) * size / 128
    dist = np.abs(_line_distance(size, point, angle))
    edge = dist - width / 2 + 1.2 * _smooth_noise(rng, size, 2.0)
    band = _sigmoid(-edge * 1.5)
    wear = np.clip(0.75 + 0.35 * _smooth_noise(rng, size, 3.0), 0, 1)
    paint += band * wear * rng.uniform(0.3, 0.7)


def _dark_blob(rng: np.random.Generator, size: int, refl: np.ndarray) -> None:
    """Oil spots, tar patches, wet stains: irregular dark blobs."""
    yy, xx = _coords(size)
    for _ in range(int(rng.integers(1, 4))):
        cx, cy = rng.uniform(0, size, 2)
        radius = rng.uniform(3, 22) * size / 128
        ratio, rot = rng.uniform(0.5, 1.0), rng.uniform(0, math.pi)
        dx, dy = xx - cx, yy - cy
        u = (dx * math.cos(rot) + dy * math.sin(rot)) / radius
        v = (-dx * math.sin(rot) + dy * math.cos(rot)) / (radius * ratio)
        r = np.sqrt(u * u + v * v) + 0.25 * _smooth_noise(rng, size, max(2.0, radius / 2))
        refl *= 1 - rng.uniform(0.2, 0.55) * _sigmoid((1 - r) * rng.uniform(3, 10))


def _illumination(rng: np.random.Generator, size: int) -> tuple[np.ndarray, bool]:
    """Lighting gradient, vignetting and sometimes a soft cast shadow (then True)."""
    yy, xx = _coords(size)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = ((xx - size / 2) * math.cos(angle) + (yy - size / 2) * math.sin(angle)) / size
    light = 1 + rng.uniform(0, 0.35) * ramp
    r2 = ((xx - size / 2) ** 2 + (yy - size / 2) ** 2) / (size / 2) ** 2
    light *= 1 - rng.uniform(0, 0.15) * r2
    shadow = rng.random() < 0.3
    if shadow:
        point, angle = _random_line_through(rng, size)
        dist = _line_distance(size, point, angle)
        light *= 1 - rng.uniform(0.15, 0.45) * _sigmoid(dist / rng.uniform(1.0, 12.0))
    return light.astype(np.float32), shadow


# ---------------------------------------------------------------------------------------------
# cracks


def _walk(rng: np.random.Generator, start: np.ndarray, drift: float, steps: int,
          wiggle: float) -> np.ndarray:
    """A crack path: unit steps whose heading is the drift plus slow meander, lasting turns (the
    crack changes course between aggregate grains: tortuous at every scale, never a straight
    line), fast zig-zag and rare kinks. Returns (steps + 1, 2) points (x, y)."""
    slow = np.empty(steps, np.float64)
    fast = np.empty(steps, np.float64)
    e_slow = rng.normal(0, 0.06, steps)
    e_fast = rng.normal(0, wiggle, steps)
    kinks = np.where(rng.random(steps) < 0.05, rng.normal(0, 0.6, steps), 0.0)
    turns = np.where(rng.random(steps) < 0.03,
                     rng.choice([-1.0, 1.0], steps) * rng.uniform(0.3, 0.8, steps), 0.0)
    s = f = 0.0
    for k in range(steps):
        s = 0.97 * s + e_slow[k] + turns[k]
        f = 0.5 * f + e_fast[k] + kinks[k]
        slow[k], fast[k] = s, f
    heading = drift + slow + fast
    step = np.stack([np.cos(heading), np.sin(heading)], axis=1)
    return np.concatenate([start[None], start + np.cumsum(step, axis=0)])


def _inside(points: np.ndarray, size: int, pad: float = 0.0) -> np.ndarray:
    return np.all((points >= -pad) & (points <= size + pad), axis=1)


def _central(points: np.ndarray, size: int) -> np.ndarray:
    """Which points lie in the middle 60% of the image, away from the borders."""
    return np.all((points >= CENTRAL_BOX[0] * size) & (points <= CENTRAL_BOX[1] * size), axis=1)


def _width_profile(rng: np.random.Generator, n: int, w_max: float, taper_start: bool,
                   taper_end: bool) -> np.ndarray:
    t = np.linspace(0, 1, n)
    knots = rng.uniform(0.55, 1.0, max(2, n // 25 + 2))
    along = np.interp(t, np.linspace(0, 1, len(knots)), knots)
    taper = np.ones(n)
    ramp = rng.uniform(0.15, 0.35)
    if taper_start:
        taper = np.minimum(taper, np.sqrt(np.clip(t / ramp, 0.05, 1)))
    if taper_end:
        taper = np.minimum(taper, np.sqrt(np.clip((1 - t) / ramp, 0.05, 1)))
    return w_max * along * taper


def _crack_path(rng: np.random.Generator, size: int) -> tuple[np.ndarray, bool, bool]:
    """Points of a main crack and whether its start / end lie inside the image (tapered)."""
    for _ in range(20):
        if rng.random() < 0.7:  # crosses the image: start just outside one border
            side = int(rng.integers(4))
            u = rng.uniform(0.1, 0.9) * size
            start = np.array([[u, -4.0], [size + 4.0, u], [u, size + 4.0], [-4.0, u]][side])
            inward = [math.pi / 2, math.pi, -math.pi / 2, 0.0][side]
            drift = inward + rng.uniform(-0.9, 0.9)
            pts = _walk(rng, start, drift, int(3 * size), rng.uniform(0.35, 0.75))
            inside = _inside(pts, size, pad=5)
            outside_after = np.nonzero(~inside[8:])[0]
            end = 8 + outside_after[0] if len(outside_after) else len(pts)
            pts, tapered = pts[:end], (False, not len(outside_after))
        else:  # starts and ends inside the image
            start = rng.uniform(0.15, 0.85, 2) * size
            length = int(rng.uniform(0.45, 0.9) * size)
            pts = _walk(rng, start, rng.uniform(0, 2 * math.pi), length, rng.uniform(0.35, 0.75))
            outside = np.nonzero(~_inside(pts, size))[0]
            pts = pts[: outside[0]] if len(outside) else pts
            tapered = (True, True)
        # a photo of a crack: a good part of it runs through the middle, not only along a border
        if _inside(pts, size).sum() >= 0.5 * size and _central(pts, size).sum() >= 0.2 * size:
            return pts, *tapered
    return pts, *tapered


def _draw_cracks(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Crack coverage (0..1) and per-pixel darkening depth (0..1) for one crack image."""
    canvas_cov = np.zeros((size, size), np.float32)
    depth_map = np.zeros((size, size), np.float32)
    n_cracks = 1 + int(rng.random() < 0.25) + int(rng.random() < 0.08)
    for _ in range(n_cracks):
        pts, taper_start, taper_end = _crack_path(rng, size)
        w_max = 1.5 + 4.0 * rng.random() ** 1.5
        widths = _width_profile(rng, len(pts) - 1, w_max, taper_start, taper_end)
        canvas = _Canvas(size)
        canvas.polyline(pts, widths)
        for _ in range(int(rng.random() < 0.45) + int(rng.random() < 0.15)):  # branches
            lo = int(0.2 * len(pts))
            k = int(rng.integers(lo, max(int(0.8 * len(pts)), lo + 1)))
            dx, dy = pts[min(k + 3, len(pts) - 1)] - pts[max(k - 3, 0)]
            drift = math.atan2(dy, dx) + rng.choice([-1, 1]) * rng.uniform(0.4, 1.1)
            branch = _walk(rng, pts[k], drift, int(rng.uniform(0.2, 0.55) * size),
                           rng.uniform(0.25, 0.55))
            bw = _width_profile(rng, len(branch) - 1, widths[min(k, len(widths) - 1)] * 0.8,
                                False, True)
            canvas.polyline(branch, bw)
        cov = canvas.coverage()
        faint = rng.random() < 0.06
        depth = rng.uniform(0.45, 0.6) if faint else rng.uniform(0.55, 0.9)
        # thin cracks still read as dark: less coverage, deeper shadow
        depth = min(0.93, depth * (1.0 + 0.25 * (5.5 - w_max) / 4.0))
        # broken, shaded lips: a soft darker band around the gap, as in photos of real cracks
        halo = cv2.GaussianBlur(cov, (0, 0), rng.uniform(1.2, 3.0) * size / 128)
        halo = np.minimum(1.0, halo / max(float(halo.max()), 1e-6))
        darkening = 1 - (1 - depth * cov) * (1 - rng.uniform(0.04, 0.2) * halo)
        canvas_cov = np.maximum(canvas_cov, cov)
        depth_map = np.maximum(depth_map, darkening)
    return canvas_cov, depth_map


# ---------------------------------------------------------------------------------------------
# one image


def render_sample(rng: np.random.Generator, size: int, crack: bool) -> Sample:
    """Render one image. Every random draw before the crack is the same code path for both
    classes, so backgrounds and distractors have identical distributions."""
    refl, tint = _surface(rng, size)
    _stains(rng, size, refl)
    paint = np.zeros((size, size), np.float32)
    drawn = []
    if rng.random() < 0.3:
        drawn.append(_joint(rng, size, refl))
    if rng.random() < 0.1:
        drawn.append(_joint(rng, size, refl))
    if rng.random() < 0.2:
        _step_edge(rng, size, refl)
        drawn.append("step_edge")
    if rng.random() < 0.15:
        _paint_line(rng, size, paint)
        drawn.append("paint_line")
    if rng.random() < 0.3:
        _dark_blob(rng, size, refl)
        drawn.append("dark_blob")
    light, shadow = _illumination(rng, size)
    if shadow:
        drawn.append("cast_shadow")
    paint_rgb = np.array([1.0, 1.0, 1.0]) if rng.random() < 0.6 else np.array([1.0, 0.85, 0.3])
    blur_sigma = rng.uniform(0.3, 0.8)
    noise_sigma = rng.uniform(0.008, 0.025)
    target_mean = rng.uniform(80.0, 195.0)
    target_std = rng.uniform(8.0, 32.0)
    jpeg_quality = int(rng.integers(55, 96)) if rng.random() < JPEG_SHARE else None

    # a worn marking lies on the surface: its colour, with the surface's grain showing through
    surface = refl[..., None] * tint[None, None, :]
    painted = 1.6 * paint_rgb[None, None, :] * (0.6 + 0.4 * refl[..., None])
    rgb = surface * (1 - paint[..., None]) + painted * paint[..., None]

    crack_mask = np.zeros((size, size), np.float32)
    if crack:  # a crack darkens whatever it runs through, multiplicatively (texture stays)
        crack_mask, depth = _draw_cracks(rng, size)
        rgb *= 1 - depth[..., None]
    rgb *= light[..., None]
    rgb = cv2.GaussianBlur(rgb.astype(np.float32), (0, 0), blur_sigma)
    rgb += noise_sigma * rng.standard_normal(rgb.shape, dtype=np.float32)

    # brightness / contrast carry no label information: set both to drawn targets
    # (the luma is set; each pixel keeps its colour ratios, so tints are not amplified; below half
    # the mean luma, as in a crack's core, colour is kept relative to half the mean instead, so
    # the noise of near-black pixels is not blown up into coloured specks when they are lifted)
    luma = np.maximum(rgb @ _LUMA, 1e-3)
    mean, std = float(luma.mean()), float(luma.std())
    new_luma = np.maximum((luma - mean) * (target_std / max(std, 1e-6)) + target_mean, 0.0)
    colour = (rgb - luma[..., None]) / np.maximum(luma, 0.5 * mean)[..., None]
    rgb = new_luma[..., None] * (1.0 + colour)
    out = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    if jpeg_quality is not None:  # survey photos are mostly JPEG: its block artefacts, both classes
        out = _jpeg_round_trip(out, jpeg_quality)
        drawn.append("jpeg")
    return Sample(rgb=out, crack_mask=crack_mask, distractors=tuple(drawn))


def _jpeg_round_trip(rgb: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 images
        raise RuntimeError("JPEG encoding failed")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def sample_rng(seed: int, cls: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, _CLASS_STREAM[cls], index]))


def render(seed: int, cls: str, index: int, size: int = DEFAULT_SIZE) -> Sample:
    """Image ``index`` of class ``cls`` exactly as `crack data demo --seed SEED` writes it."""
    return render_sample(sample_rng(seed, cls, index), size, crack=cls == "crack")


def file_name(cls: str, index: int) -> str:
    return f"{cls}_{index:05d}.png"


def parse_file_name(name: str) -> tuple[str, int] | None:
    """(class, index) of a ``file_name``, None for any other name."""
    match = _FILE_RE.match(name)
    return (match.group(1), int(match.group(2))) if match else None


def encode_png(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 RGB
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


# ---------------------------------------------------------------------------------------------
# writing the data set


def _validate(options: DemoOptions) -> None:
    if not 1 <= options.count <= MAX_COUNT:
        raise UserError(f"--count must be between 1 and {MAX_COUNT} images per class, "
                        f"not {options.count}")
    if not MIN_SIZE <= options.size <= MAX_SIZE:
        raise UserError(f"--size must be between {MIN_SIZE} and {MAX_SIZE} pixels, "
                        f"not {options.size}")
    if options.seed < 0:
        raise UserError(f"--seed must be 0 or positive, not {options.seed}")


def _prepare_out(out: Path) -> None:
    """Make ``out`` ready: new, empty, or an earlier demo data set (which is replaced).
    Refuses a folder holding anything else, so it never deletes a user's files."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    if out.is_dir():
        foreign = []
        for entry in out.iterdir():
            if entry.name in (COMPLETE_MARKER, README_NAME) and entry.is_file():
                continue
            if entry.name in CLASSES and entry.is_dir():
                foreign += [f for f in entry.iterdir() if not _FILE_RE.match(f.name)]
                continue
            foreign.append(entry)
        if foreign:
            raise UserError(f"--out {out} holds files that are not demo data (e.g. "
                            f"{foreign[0].name}); give a new or empty folder")
        (out / COMPLETE_MARKER).unlink(missing_ok=True)
        for cls in CLASSES:
            if (out / cls).is_dir():
                for f in (out / cls).iterdir():
                    f.unlink()
    try:
        for cls in CLASSES:
            (out / cls).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {out}: {exc.strerror or exc}") from None


def _package_version() -> str:
    try:
        from importlib.metadata import version

        return version("crackkit")
    except Exception:  # noqa: BLE001 - not installed: the README just says unknown
        return "unknown"


def _readme(options: DemoOptions) -> str:
    n = options.count
    return f"""Synthetic crack / no-crack demo data (crackkit)

WHAT: {2 * n} SYNTHETIC images, {n} in crack/ and {n} in no_crack/, {options.size}x{options.size}
RGB PNG. No photo was used: every pixel was computed by training/demo_data.py. It is the
project's default training set, for trying the pipeline end to end; a model trained on it is not
a crack detector for real surfaces. Train on real photos for that.

HOW: `crack data demo --out DIR --count {n} --size {options.size} --seed {options.seed}`
(generator version {GENERATOR_VERSION}, crackkit {_package_version()}). Image i of a class is drawn
from its own random stream (seed, class, i): the same command gives byte-identical files.

Each image is a procedural surface (concrete, asphalt or smooth plaster: grain and aggregate at
several scales, pores, stains), lit with a gradient, vignetting and sometimes a cast shadow, with
distractors drawn equally often in both classes: straight joints and saw-cuts, step edges, worn
paint lines, dark blobs. Images in crack/ also have one to three cracks: tortuous dark polylines
from a random walk with a drift and lasting turns, 1.5-5.5 px wide (at 128 px) and tapering,
sometimes branched or faint, drawn anti-aliased with a soft shaded band and multiplied into the
texture; each runs through the middle of the image. Each image's brightness mean and standard deviation are then set
to random targets drawn from the same distribution for both classes, so brightness and contrast
carry no information about the label. Finally {JPEG_SHARE:.0%} of the images in both classes go
through a JPEG encoder (quality 55-95) before they are saved as PNG.

Licence: same as crackkit (Apache-2.0); made by the project, no third-party content.
"""


def _render_file(job: tuple[int, str, int, int]) -> bytes:
    seed, cls, index, size = job
    return encode_png(render(seed, cls, index, size).rgb)


def _worker_count(jobs: int) -> int:
    if jobs < 100:  # starting processes costs more than it saves
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


def generate_demo(options: DemoOptions, *, progress: bool = True,
                  workers: int | None = None) -> DemoSummary:
    """Write the demo data set to ``options.out``; ``.complete`` is written last.

    Images are rendered in ``workers`` processes (default: one per CPU for big sets); the bytes
    do not depend on the number of workers."""
    _validate(options)
    out = Path(options.out)
    _prepare_out(out)
    started = time.perf_counter()
    jobs = [(options.seed, cls, i, options.size) for cls in CLASSES for i in range(options.count)]
    workers = _worker_count(len(jobs)) if workers is None else max(1, workers)

    with contextlib.ExitStack() as stack:
        if workers > 1:  # the pool starts before the progress bar's thread
            pool = stack.enter_context(ProcessPoolExecutor(max_workers=workers))
            results = pool.map(_render_file, jobs, chunksize=8)
        else:
            results = map(_render_file, jobs)
        advance = stack.enter_context(progress_bar("demo data", total=len(jobs), enabled=progress))
        for (_, cls, i, _), data in zip(jobs, results):
            (out / cls / file_name(cls, i)).write_bytes(data)
            advance(1)

    (out / README_NAME).write_text(_readme(options), encoding="utf-8")
    marker = {"generator_version": GENERATOR_VERSION, "count": options.count,
              "size": options.size, "seed": options.seed}
    (out / COMPLETE_MARKER).write_text(json.dumps(marker, sort_keys=True) + "\n",
                                       encoding="utf-8")
    return DemoSummary(out=out, per_class={cls: options.count for cls in CLASSES},
                       size=options.size, seed=options.seed,
                       seconds=time.perf_counter() - started)
