"""`crack-edge bench` arithmetic: the CPU ceiling of the files pipeline and when the report says so
(the command itself is smoke-tested in test_edge_score.py; no timing is asserted anywhere)."""

from __future__ import annotations

import pytest

from edge.bench import files_ceiling_ratio, report_lines


@pytest.mark.parametrize("invoke, decode, workers, threads, cores, expected", [
    (80.0, 4.0, 2, 2, 2, 80 / 82),     # a big model: decode hides behind the invoke, ratio ~0.98
    (4.0, 4.0, 2, 2, 2, 4 / 6),        # decode as costly as the invoke, both cores shared: 0.67
    (4.0, 4.0, 2, 1, 2, 1.0),          # one interpreter thread leaves a core to the decoders
    (0.1, 2.6, 2, 2, 2, 0.1 / 1.4),    # a tiny model: decode bound
    (10.0, 30.0, 2, 1, 4, 10 / 15),    # plenty of cores, too few decode workers
])
def test_files_ceiling_ratio(invoke, decode, workers, threads, cores, expected):
    assert files_ceiling_ratio(invoke, decode, workers, threads, cores) == pytest.approx(expected)


def figures(invoke_ms: float, decode_ms: float, ceiling: float, threads: int = 2) -> dict:
    part = {"median_ms": 10.0, "p90_ms": 12.0, "fps": 100.0, "ratio_to_bare": 0.5}
    return {"threads": threads, "cores": 2,
            "bare_invoke": {"median_ms": invoke_ms, "p90_ms": invoke_ms, "fps": 1000 / invoke_ms},
            "decode": {"median_ms": decode_ms, "p90_ms": decode_ms, "fps": 1000 / decode_ms, "samples": 5},
            "files": {**part, "decode_workers": 2, "ceiling_ratio": ceiling}, "video": part}


def test_report_explains_a_ceiling_below_the_target():
    lines = report_lines(figures(4.0, 4.0, 0.67))
    assert lines[1].split() == ["bare", "invoke", "4.00", "4.00", "250.0", "1.00"]
    assert lines[2].split() == ["files", "(score)", "10.00", "12.00", "100.0", "0.50"]
    assert any(line.startswith("note: decode+resize costs 4.00 ms of CPU per file beside the 4.00 ms "
                               "invoke; on 2 core(s) the files pipeline can reach about 0.67 x bare")
               for line in lines)
    assert any("--threads 1 leaves a core to the decoders" in line for line in lines)
    assert not any(line.startswith("note:") for line in report_lines(figures(80.0, 4.0, 0.98)))
