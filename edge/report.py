"""`crack-edge report results.csv --out report.html`: one self-contained HTML page for an inspector.

The page holds everything in one file (thumbnails as base64 JPEG, plots as inline SVG, no
script or style from elsewhere; its Content-Security-Policy forbids fetching anything), so it can
be mailed or opened offline:

- counts (photos, cracks, clear, errors) and the run's model, threshold and tiles;
- the probability histogram;
- the most likely cracks as thumbnails, with the tile heat map where the run used ``--tiles``
  (drawn by ``edge.annotate``, the overlay of ``--save-annotated`` and of the stream);
- the uncertain photos: those within ``margin`` of the threshold, nearest first, for review;
- totals per folder;
- where photos carry GPS, a map of their positions (``edge.report_svg``);
- the error rows.

Photos are read again for the thumbnails: relative paths are taken from ``base`` (default: the
current folder, as `score` wrote them from where it ran). A photo that is missing or unreadable
gets a placeholder naming why, never a failed report. Every text from the results file (paths of
any bytes, error messages) is escaped; a name that is not UTF-8 is shown with U+FFFD.

A small inline script counts, once the page has loaded, how many thumbnails the browser decoded
and how many map points it drew, and writes that at the foot of the page (``#render-check``): a
reader sees at once if the viewer blocked the images, and the browser test reads it.
"""

from __future__ import annotations

import base64
import html
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePath

import cv2

from edge.annotate import annotate, shrunk
from edge.atomic_files import write_bytes_atomic
from edge.errors import UserError, first_line
from edge.geojson import refuse_same_file
from edge.image_header import DEFAULT_MAX_PIXELS
from edge.output_paths import check_output_path
from edge.preprocess import load_image
from edge.report_svg import MapPoint, histogram, legend, point_map
from edge.results_file import ResultsContent, Row, display_path, read_results

THUMBNAIL_QUALITY = 80
MAX_SHOWN = 500  # thumbnails per section, at most
MAX_ERRORS_LISTED = 100


@dataclass(frozen=True)
class ReportOptions:
    results: Path
    out: Path
    format: str | None = None  # csv or jsonl; None: recognised from the file
    base: Path | None = None  # relative photo paths are under this folder; None: current folder
    top: int = 24  # most likely cracks shown
    uncertain: int = 24  # uncertain photos shown
    margin: float = 0.1  # |probability - threshold| at most this is uncertain
    thumbnail: int = 240  # long side of a thumbnail, pixels
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        for name in ("top", "uncertain"):
            if not 0 <= getattr(self, name) <= MAX_SHOWN:
                raise UserError(f"--{name} must be between 0 and {MAX_SHOWN}, "
                                f"got {getattr(self, name)}")
        if not 0 < self.margin <= 0.5:
            raise UserError(f"--margin must be above 0 and at most 0.5, got {self.margin}")
        if not 32 <= self.thumbnail <= 1024:
            raise UserError(f"--thumbnail must be between 32 and 1024 pixels, got {self.thumbnail}")


@dataclass
class ReportSummary:
    out: Path
    photos: int = 0
    cracks: int = 0
    errors: int = 0
    thumbnails: int = 0
    placeholders: int = 0
    map_points: int = 0

    def line(self) -> str:
        missing = f" ({self.placeholders} photo(s) could not be read)" if self.placeholders else ""
        return (f"wrote {self.out}: {self.photos} photo(s), {self.cracks} crack(s), {self.errors} "
                f"error(s); {self.thumbnails} thumbnail(s){missing}, {self.map_points} map point(s)")


def escape(text: str) -> str:
    """HTML text or attribute value from any string (lone surrogates become U+FFFD)."""
    return html.escape(text.encode("utf-8", errors="replace").decode("utf-8"), quote=True)


def shown_path(row: Row) -> str:
    return display_path(row.path)[0]


class _Page:
    """Collects the parts of the page; thumbnails are made as they are added."""

    def __init__(self, options: ReportOptions, content: ResultsContent) -> None:
        self.options = options
        self.threshold = content.identity.threshold
        self.base = Path(options.base) if options.base is not None else Path.cwd()
        self.summary = ReportSummary(Path(options.out))
        self.parts: list[str] = []
        self._images: dict[str, str] = {}  # path -> base64 JPEG (a photo can be in two galleries)

    def add(self, text: str) -> None:
        self.parts.append(text)

    def thumbnail(self, row: Row) -> str:
        """A <figure>: the annotated thumbnail, or a placeholder saying why there is none."""
        caption = (f'<figcaption><b>{row.probability:.3f}</b> {escape(row.label)}'
                   f'<br><span class="path">{escape(shown_path(row))}</span>'
                   + (f"<br>{escape(row.capture_time)}" if row.capture_time else "")
                   + "</figcaption>")
        try:
            data = self._images.get(row.path) or self._image(row)
        except Exception as exc:  # a missing or damaged photo: a placeholder, never a failed page
            self.summary.placeholders += 1
            reason = str(exc) if isinstance(exc, ValueError) else first_line(exc)
            return (f'<figure class="missing"><div class="placeholder">no image: {escape(reason)}'
                    f"</div>{caption}</figure>")
        self.summary.thumbnails += 1
        self._images[row.path] = data
        return (f'<figure><img class="photo" alt="{escape(shown_path(row))}" '
                f'src="data:image/jpeg;base64,{data}">{caption}</figure>')

    def _image(self, row: Row) -> str:
        """The annotated thumbnail of the row's photo as base64 JPEG."""
        file = Path(row.path)
        if not file.is_absolute():
            file = self.base / file
        rgb = shrunk(load_image(file, self.options.max_pixels), self.options.thumbnail)
        ok, jpeg = cv2.imencode(".jpg", annotate(rgb, row, self.threshold),
                                [cv2.IMWRITE_JPEG_QUALITY, THUMBNAIL_QUALITY])
        if not ok:
            raise ValueError("JPEG encoding failed")
        return base64.b64encode(jpeg.tobytes()).decode("ascii")


def run_report(options: ReportOptions) -> ReportSummary:
    refuse_same_file(options.results, options.out)
    check_output_path(options.out)
    content = read_results(options.results, options.format)
    page = _Page(options, content)
    identity = content.identity
    scored = [row for row in content.rows if not row.error]
    errors = [row for row in content.rows if row.error]
    cracks = sorted((row for row in scored if row.probability >= page.threshold),
                    key=lambda row: (-row.probability, row.path))
    page.summary.photos, page.summary.cracks, page.summary.errors = (
        len(content.rows), len(cracks), len(errors))

    page.add(f"<h1>Crack report: {escape(Path(options.results).name)}</h1>")
    page.add(f'<p class="meta">model {escape(identity.model)} (sha256 '
             f"{escape(identity.model_sha256[:12])}), threshold {identity.threshold:.3f}, tiles "
             f"{escape(identity.tiles)}, input {identity.input_size} px; made "
             f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}</p>")
    page.add(_counts(len(content.rows), len(scored), len(cracks), len(errors), identity.labels))
    page.add("<h2>Probabilities</h2>")
    page.add(histogram([row.probability for row in scored], page.threshold))

    page.add(f"<h2>Most likely cracks</h2><p>{min(options.top, len(cracks))} of {len(cracks)} "
             "crack photo(s), highest probability first.</p>")
    page.add(_gallery(page, cracks[:options.top], "top"))

    near = sorted((row for row in scored
                   if abs(row.probability - page.threshold) <= options.margin),
                  key=lambda row: (abs(row.probability - page.threshold), row.path))
    page.add(f"<h2>Uncertain: for review</h2><p>{len(near)} photo(s) within "
             f"&plusmn;{options.margin:g} of the threshold {page.threshold:.3f}; the "
             f"{min(options.uncertain, len(near))} nearest are shown.</p>")
    page.add(_gallery(page, near[:options.uncertain], "uncertain"))

    page.add("<h2>Per folder</h2>")
    page.add(_folders(content.rows, page.threshold))

    located = [row for row in scored if row.gps_lat is not None and row.gps_lon is not None]
    page.add("<h2>Map</h2>")
    if located:
        page.summary.map_points = len(located)
        points = [MapPoint(row.gps_lat, row.gps_lon, row.probability,
                           row.probability >= page.threshold,
                           escape(f"{shown_path(row)}: {row.probability:.3f}"
                                  + (f", {row.capture_time}" if row.capture_time else "")))
                  for row in located]
        page.add(f"<p>{len(located)} of {len(scored)} scored photo(s) carry a GPS position.</p>")
        page.add(point_map(points) + legend(page.threshold))
    else:
        page.add("<p>No photo carries a GPS position.</p>")

    page.add(_errors(errors))
    write_bytes_atomic(options.out, _document(page.parts).encode("utf-8"))
    return page.summary


def _counts(rows: int, scored: int, cracks: int, errors: int, labels: tuple[str, str]) -> str:
    cells = (("photos", rows), (labels[1], cracks), (labels[0], scored - cracks), ("errors", errors))
    return '<div class="counts">' + "".join(
        f'<div><span class="number">{count}</span>{escape(name)}</div>' for name, count in cells
    ) + "</div>"


def _gallery(page: _Page, rows: list[Row], name: str) -> str:
    if not rows:
        return '<p class="none">none</p>'
    return f'<div class="gallery" id="{name}">' + "".join(map(page.thumbnail, rows)) + "</div>"


def _folders(rows: list[Row], threshold: float) -> str:
    totals: dict[str, list] = defaultdict(lambda: [0, 0, 0, 0.0])  # photos, cracks, errors, max
    for row in rows:
        entry = totals[str(PurePath(shown_path(row)).parent)]
        entry[0] += 1
        if row.error:
            entry[2] += 1
        else:
            entry[1] += row.probability >= threshold
            entry[3] = max(entry[3], row.probability)
    body = "".join(
        f"<tr><td>{escape(folder)}</td><td>{photos}</td><td>{cracks}</td><td>{errors}</td>"
        f"<td>{cracks / max(1, photos - errors):.0%}</td><td>{highest:.3f}</td></tr>"
        for folder, (photos, cracks, errors, highest) in sorted(totals.items()))
    return ('<table id="folders"><tr><th>folder</th><th>photos</th><th>cracks</th><th>errors</th>'
            f"<th>crack share</th><th>highest</th></tr>{body}</table>")


def _errors(errors: list[Row]) -> str:
    if not errors:
        return ""
    items = "".join(f'<li><span class="path">{escape(shown_path(row))}</span>: '
                    f"{escape(row.error)}</li>" for row in errors[:MAX_ERRORS_LISTED])
    more = f"<p>and {len(errors) - MAX_ERRORS_LISTED} more</p>" \
        if len(errors) > MAX_ERRORS_LISTED else ""
    return f'<h2>Errors</h2><ul id="errors">{items}</ul>{more}'


_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; max-width: 1200px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 18px; margin-top: 28px; }
.meta { color: #666; margin-top: 0; }
.counts { display: flex; gap: 12px; } .counts div { background: #f2f2f2; padding: 8px 16px; }
.number { display: block; font-size: 24px; font-weight: 600; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(200px, 1fr)); gap: 10px; }
figure { margin: 0; background: #fafafa; border: 1px solid #ddd; padding: 4px; }
figure img { max-width: 100%; display: block; margin: auto; }
figcaption { font-size: 12px; word-break: break-all; }
.placeholder { height: 120px; display: flex; align-items: center; justify-content: center;
  background: #eee; color: #777; font-size: 12px; text-align: center; padding: 4px; }
table { border-collapse: collapse; } td, th { border: 1px solid #ddd; padding: 3px 8px; }
td:not(:first-child) { text-align: right; } .path { color: #555; }
.legend .ramp span { display: inline-block; width: 14px; height: 10px; }
#render-check { color: #888; font-size: 12px; margin-top: 32px; }
"""

_CHECK = """
addEventListener("load", function () {
  var images = document.querySelectorAll("img.photo"), shown = 0;
  images.forEach(function (img) { if (img.complete && img.naturalWidth > 0) shown++; });
  var map = document.getElementById("map");
  var points = map ? map.querySelectorAll("circle").length : 0;
  var width = map ? Math.round(map.getBoundingClientRect().width) : 0;
  var check = document.getElementById("render-check");
  check.setAttribute("data-images", images.length);
  check.setAttribute("data-images-shown", shown);
  check.setAttribute("data-map-points", points);
  check.setAttribute("data-map-width", width);
  check.textContent = "shown: " + shown + " of " + images.length + " thumbnails, " +
    points + " map points";
});
"""


def _document(parts: list[str]) -> str:
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
            "img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Crack report</title><style>{_STYLE}</style></head><body>"
            + "\n".join(parts)
            + f'<p id="render-check">(the page check needs JavaScript)</p><script>{_CHECK}</script>'
            "</body></html>\n")
