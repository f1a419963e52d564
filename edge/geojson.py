"""`crack-edge geojson results.csv --out results.geojson`: the scored photos that carry GPS, as one
GeoJSON FeatureCollection (RFC 7946) that QGIS, ArcGIS or a web map opens as it is.

A converter of a results file (finished, or partial: a running or killed `score` is fine), not a
second output of `score`: the results file is already what `score` flushes per batch, locks and
resumes, and a second live file would need the same promises kept in step with it. GeoJSON text
sequences (RFC 8142) could be appended as `score` goes, but QGIS opens a FeatureCollection
directly, and converting takes a second for tens of thousands of rows. The output is written
atomically (the old file or the whole new one).

One Point per scored photo with a position (``[lon, lat]``, or ``[lon, lat, alt]`` with an
altitude), properties: ``path`` (``path_bytes`` too for a name that is not UTF-8),
``probability``, ``label``, ``capture_time``, ``orientation`` and ``tiles`` (``[[x0, y0, x1, y1,
probability], ...]`` in the pixels of the upright photo, or null). The collection carries the
results file's identity (model, threshold, tiles) as the foreign member ``crack_edge``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from edge.atomic_files import write_bytes_atomic
from edge.errors import UserError
from edge.output_paths import check_output_path
from edge.results_file import Row, read_results


@dataclass(frozen=True)
class GeoJsonOptions:
    results: Path
    out: Path
    format: str | None = None  # csv or jsonl; None: recognised from the file


@dataclass
class GeoJsonSummary:
    out: Path
    points: int = 0
    without_position: int = 0
    errors: int = 0

    def line(self) -> str:
        return (f"wrote {self.points} photo(s) with a position to {self.out}; "
                f"{self.without_position} scored photo(s) without GPS and {self.errors} error "
                "row(s) left out")


def refuse_same_file(results: Path, out: Path) -> None:
    """An output must never replace the results file it is made from."""
    if os.path.exists(out) and os.path.exists(results) and os.path.samefile(results, out):
        raise UserError(f"--out {out} is the results file itself; choose another name")


def feature(row: Row) -> dict:
    record = row.to_record()
    position = [record["gps_lon"], record["gps_lat"]]
    if record["gps_alt"] is not None:
        position.append(record["gps_alt"])
    properties = {name: record[name] for name in ("path", "probability", "label", "capture_time",
                                                  "orientation", "tiles")}
    if record["path_bytes"]:
        properties["path_bytes"] = record["path_bytes"]
    return {"type": "Feature", "geometry": {"type": "Point", "coordinates": position},
            "properties": properties}


def run_geojson(options: GeoJsonOptions) -> GeoJsonSummary:
    refuse_same_file(options.results, options.out)
    check_output_path(options.out)
    content = read_results(options.results, options.format)
    summary = GeoJsonSummary(Path(options.out))
    features = []
    for row in content.rows:
        if row.error:
            summary.errors += 1
        elif row.gps_lat is None or row.gps_lon is None:
            summary.without_position += 1
        else:
            features.append(feature(row))
    summary.points = len(features)
    collection = {"type": "FeatureCollection", "crack_edge": content.identity.to_dict(),
                  "features": features}
    write_bytes_atomic(options.out, (json.dumps(collection) + "\n").encode("utf-8"))
    return summary
