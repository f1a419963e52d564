"""`crack-edge geojson`: a results file (CSV or JSONL, finished or partial) -> a valid GeoJSON
FeatureCollection (RFC 7946) with one Point per scored photo that has a position."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import pytest

from conftest import PROJECT
from edge.geojson import GeoJsonOptions, run_geojson
from edge.results_file import Row
from photo_files import results_file

NOT_UTF8 = os.fsdecode(b"survey/caf\xe9.jpg")
ROWS = [
    Row("survey/a.jpg", 0.91, "crack", 1.0, "", "2024-05-01T10:20:30+02:00", 51.5, -0.125, 31.5,
        6, ((0, 0, 50, 50, 0.91), (50, 0, 100, 50, 0.2))),
    Row(NOT_UTF8, 0.12, "no_crack", 1.0, "", "", -33.865, 151.2094),
    Row("survey/no_gps.jpg", 0.4, "no_crack", 1.0),
    Row("survey/broken.jpg", None, "", None, "damaged JPEG: Corrupt JPEG data"),
]


def strict_json(text: str):
    def refuse(constant: str):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def check_feature_collection(document: dict) -> None:
    """The RFC 7946 rules a Point FeatureCollection must keep."""
    assert document["type"] == "FeatureCollection" and isinstance(document["features"], list)
    for item in document["features"]:
        assert item["type"] == "Feature" and isinstance(item["properties"], dict)
        geometry = item["geometry"]
        assert geometry["type"] == "Point" and len(geometry["coordinates"]) in (2, 3)
        lon, lat = geometry["coordinates"][:2]
        assert all(isinstance(v, (int, float)) for v in geometry["coordinates"])
        assert -180 <= lon <= 180 and -90 <= lat <= 90


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_one_point_per_scored_photo_with_a_position(tmp_path, suffix):
    results = results_file(tmp_path / f"results{suffix}", ROWS, tiles="2x2")
    out = tmp_path / "results.geojson"
    summary = run_geojson(GeoJsonOptions(results, out))
    assert (summary.points, summary.without_position, summary.errors) == (2, 1, 1)
    document = strict_json(out.read_text(encoding="utf-8"))
    check_feature_collection(document)
    first, second = document["features"]
    assert first["geometry"]["coordinates"] == [-0.125, 51.5, 31.5]  # lon, lat, altitude
    assert first["properties"] == {
        "path": "survey/a.jpg", "probability": 0.91, "label": "crack",
        "capture_time": "2024-05-01T10:20:30+02:00", "orientation": 6,
        "tiles": [[0, 0, 50, 50, 0.91], [50, 0, 100, 50, 0.2]]}
    assert second["geometry"]["coordinates"] == [151.2094, -33.865]
    assert second["properties"]["path"] == "survey/caf\ufffd.jpg"
    assert os.fsdecode(base64.b64decode(second["properties"]["path_bytes"])) == NOT_UTF8
    assert document["crack_edge"]["threshold"] == 0.5 and document["crack_edge"]["tiles"] == "2x2"


def test_a_partial_results_file_converts_what_it_holds(tmp_path):
    results = results_file(tmp_path / "results.csv", ROWS)
    with open(results, "ab") as handle:  # a run killed while writing a row
        handle.write(b'survey/torn.jpg,0.97,cra')
    out = tmp_path / "partial.geojson"
    assert run_geojson(GeoJsonOptions(results, out)).points == 2
    assert len(strict_json(out.read_text())["features"]) == 2


def edge(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge", *map(str, args)], capture_output=True,
                          text=True, timeout=120, cwd=PROJECT)


def test_the_command_converts_and_refuses_what_is_not_a_results_file(tmp_path):
    results = results_file(tmp_path / "results.csv", ROWS)
    done = edge("geojson", results, "--out", tmp_path / "map.geojson")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("wrote 2 photo(s) with a position")
    check_feature_collection(strict_json((tmp_path / "map.geojson").read_text()))

    notes = tmp_path / "notes.csv"
    notes.write_text("a,b\n1,2\n")
    before = results.read_bytes()
    for args, message in (((notes, "--out", tmp_path / "n.geojson"), "is not a csv results file"),
                          ((results, "--out", results), "is the results file itself"),
                          ((tmp_path / "missing.csv", "--out", tmp_path / "m.geojson"), "cannot read")):
        refused = edge("geojson", *args)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
        assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert results.read_bytes() == before
    assert not (tmp_path / "n.geojson").exists()
