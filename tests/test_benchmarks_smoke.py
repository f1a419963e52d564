"""Each benchmark script on a tiny input, so they do not rot. No timing is asserted; only that
the scripts run and write the figures they promise."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_input_pipeline_benchmark(tmp_path):
    from benchmarks import input_pipeline

    out = tmp_path / "input_pipeline.json"
    result = input_pipeline.main(["--img-size", "32", "--batch-size", "4", "--images", "8",
                                  "--steps", "1", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["images"] == 8 and saved["img_size"] == 32
    for key in ("pipeline_first_pass_img_per_s", "pipeline_cached_img_per_s", "model_train_img_per_s"):
        assert saved[key] > 0 and saved[key] == pytest.approx(result[key])
    assert saved["machine"]["cores"] >= 1 and saved["machine"]["interpreter"]["package"]


@pytest.mark.slow
def test_conversion_and_edge_throughput_benchmarks(tmp_path):
    from benchmarks import bench_convert, edge_throughput

    out = tmp_path / "convert.json"
    assert bench_convert.main(["--size", "32", "--runs", "2", "--modes", "fp32,int8",
                               "--calibration", "4", "--no-builtin-comparison", "--out", str(out)]) == 0
    variants = {v["mode"]: v for v in json.loads(out.read_text())["variants"]}
    assert variants["int8"]["integer_only"] and variants["int8"]["size_ratio"] < 0.5

    out = tmp_path / "edge.json"
    edge_throughput.main(["--size", "32", "--images", "4", "--repeats", "1", "--runs", "3",
                          "--keras-images", "2", "--out", str(out)])
    result = json.loads(out.read_text())
    assert set(result["variants"]) == {"fp32", "int8"}
    for figures in result["variants"].values():
        assert figures["bare_invoke_fps"] > 0 and figures["score_fps"] > 0 and figures["stream_fps"] > 0
    assert result["keras_one_at_a_time_fps"] > 0


def test_scaling_benchmark(edge_models, tmp_path):
    from benchmarks import scaling

    out = tmp_path / "scaling.json"
    scaling.main(["--counts", "3", "5", "--model", str(edge_models["int8"]), "--out", str(out)])
    runs = json.loads(out.read_text())["runs"]
    assert [r["count"] for r in runs] == [3, 5]
    assert all(r["scored"] == r["count"] and r["errors"] == 0 and r["peak_rss_mb"] > 0 for r in runs)


def test_summary_builds_the_performance_section():
    from benchmarks.summary import section

    text = section()
    assert text.startswith("## Performance")
