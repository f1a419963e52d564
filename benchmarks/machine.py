"""What every benchmark shares: where results and scratch files go, where the real data is, the
machine a figure was measured on, and a plain-text table printer."""

from __future__ import annotations

import os
import platform
import statistics
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
RESULTS_DIR = PROJECT / "benchmarks" / "results"
WORK_DIR = PROJECT / "benchmarks" / "work"          # git-ignored scratch space
SHARED_DATA = PROJECT.parent / "shared" / "data"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_info(threads: int | None = None) -> dict:
    """CPU, cores, Python and the TFLite interpreter package a figure was measured with."""
    from edge.interpreter import default_thread_count, find_interpreter

    backend = find_interpreter()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "interpreter": {"package": backend.package, "version": backend.version},
        "threads": threads or default_thread_count(),
    }


def describe_machine(info: dict) -> str:
    return (f"{info['cpu']}, {info['cores']} cores, {info['machine']}, Python {info['python']}, "
            f"{info['interpreter']['package']} {info['interpreter']['version']}, "
            f"{info['threads']} thread(s)")


def median_of(values: list[float]) -> float:
    return float(statistics.median(values))


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    line = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    print(line.format(*header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line.format(*[str(cell) for cell in row]))
