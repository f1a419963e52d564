"""What every benchmark shares: where results and scratch files go, where the real data is, the
machine a figure was measured on, the command-line parser and a plain-text table printer."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
RESULTS_DIR = PROJECT / "benchmarks" / "results"
WORK_DIR = PROJECT / "benchmarks" / "work"          # git-ignored scratch space
SHARED_DATA = PROJECT.parent / "shared" / "data"


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """--help shows the module docstring as written (with its usage lines) and each option's
    default where it has one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "%(default)" in text:
            return text
        return f"{text} (default: %(default)s)"


def argument_parser(module: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser every benchmark script starts from: ``module`` is its ``python -m`` name and
    ``doc`` its module docstring, shown whole by --help."""
    return argparse.ArgumentParser(prog=f"python -m {module}", description=doc,
                                   formatter_class=_HelpFormatter)


def cpu_times() -> tuple[float, float] | None:
    """(seconds all CPUs have been busy since boot, seconds this process and its finished children
    have used), or None where /proc/stat is missing."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    mine = os.times()
    return busy, mine.user + mine.system + mine.children_user + mine.children_system


def cpu_mark() -> tuple:
    """A point to measure other processes' CPU use from (see other_processes_cores)."""
    return cpu_times(), time.monotonic()


def other_processes_cores(since: tuple) -> float | None:
    """How many cores other processes kept busy, on average, from the mark ``since`` until now.
    0.0 means the machine was the benchmark's alone; on 2 cores, 1.0 means half of it went
    elsewhere and the timings are pessimistic."""
    start, started_at = since
    now = cpu_times()
    elapsed = time.monotonic() - started_at
    if start is None or now is None or elapsed <= 0:
        return None
    other = (now[0] - start[0]) - (now[1] - start[1])
    return round(max(other, 0.0) / elapsed, 2)


def machine_info(threads: int | None = None, since: tuple | None = None) -> dict:
    """CPU, cores, Python and the TFLite interpreter package a figure was measured with; given a
    cpu_mark() ``since``, also how busy other processes kept the CPU from it until now, so call
    it with one when the measurement is over."""
    from edge.health import cpu_info
    from edge.interpreter import default_thread_count, find_interpreter

    backend, cpu = find_interpreter(), cpu_info()
    info = {
        "cpu": cpu.model,
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "interpreter": {"package": backend.package, "version": backend.version},
        "threads": threads or default_thread_count(),
        "int8_dot_product": sorted(cpu.int8_dot_product),
    }
    if since is not None:
        info["other_processes_cores"] = other_processes_cores(since)
    return info


def describe_machine(info: dict, load: bool = True) -> str:
    """One line naming the machine; with load, also how busy other processes kept it."""
    text = (f"{info['cpu']}, {info['cores']} cores, {info['machine']}, Python {info['python']}, "
            f"{info['interpreter']['package']} {info['interpreter']['version']}, "
            f"{info['threads']} thread(s)")
    if "int8_dot_product" in info:
        text += f", int8 dot-product instructions: {', '.join(info['int8_dot_product']) or 'none'}"
    if not load:
        return text
    other = info.get("other_processes_cores")
    text += (f", other processes used {other:.2f} cores meanwhile" if other is not None
             else ", other processes' load not recorded")
    return text


def median_of(values: list[float]) -> float:
    return float(statistics.median(values))


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    line = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    print(line.format(*header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line.format(*[str(cell) for cell in row]))
