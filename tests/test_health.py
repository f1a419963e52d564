"""Device health from a fake /proc and /sys tree and a fake `vcgencmd` on PATH: CPU model and
int8 support, temperature, clock, memory, throttling; in the stream's status line and in bench."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from edge.health import (SYSTEM_ROOT_ENV, cpu_info, default_threads, describe_throttling, read_health,
                         report_health, throttled_flags, throttling_during)
from edge.stream import StreamOptions, run_stream
from edge_models import grey_frame, line_model_path, write_video

PI5_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU part\t: 0xd0b

Revision\t: d04170
Model\t\t: Raspberry Pi 5 Model B Rev 1.0
"""
PI4_CPUINFO = "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU part\t: 0xd08\n"
X86_CPUINFO = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n"


def fake_device(root: Path, cpuinfo: str = PI5_CPUINFO) -> Path:
    (root / "proc").mkdir(parents=True)
    (root / "proc" / "cpuinfo").write_text(cpuinfo)
    (root / "proc" / "meminfo").write_text("MemTotal:        4096000 kB\nMemFree:  100 kB\n"
                                           "MemAvailable:    3072000 kB\n")
    for zone, millidegrees in (("thermal_zone0", 61250), ("thermal_zone1", 48000)):
        (root / "sys" / "class" / "thermal" / zone).mkdir(parents=True)
        (root / "sys" / "class" / "thermal" / zone / "temp").write_text(f"{millidegrees}\n")
    cpufreq = root / "sys" / "devices" / "system" / "cpu" / "cpu0" / "cpufreq"
    cpufreq.mkdir(parents=True)
    (cpufreq / "scaling_cur_freq").write_text("1500000\n")
    return root


def fake_vcgencmd(folder: Path, answers: list[str]) -> Path:
    """A `vcgencmd` that prints the next answer at each call (the last one from then on)."""
    folder.mkdir(parents=True, exist_ok=True)
    state = folder / "calls"
    state.write_text("0")
    script = folder / "vcgencmd"
    lines = "\n".join(f"  {i}) echo 'throttled={answer}' ;;" for i, answer in enumerate(answers))
    script.write_text(f"""#!/bin/sh
[ "$1" = get_throttled ] || exit 1
n=$(cat {state}); echo $((n + 1)) > {state}
case $n in
{lines}
  *) echo 'throttled={answers[-1]}' ;;
esac
""")
    script.chmod(0o755)
    return folder


def test_cpu_model_and_int8_support_on_pi5_pi4_and_x86(tmp_path):
    pi5 = cpu_info(fake_device(tmp_path / "pi5"))
    assert pi5.model == "Cortex-A76 (Raspberry Pi 5 Model B Rev 1.0)" and pi5.int8_dot_product == ("asimddp",)
    assert pi5.line() == "CPU Cortex-A76 (Raspberry Pi 5 Model B Rev 1.0), int8 dot product: asimddp"
    pi4 = cpu_info(fake_device(tmp_path / "pi4", PI4_CPUINFO))
    assert pi4.model == "Cortex-A72" and pi4.int8_dot_product == ()
    assert "no int8 dot-product instructions" in pi4.line()
    x86 = cpu_info(fake_device(tmp_path / "x86", X86_CPUINFO))
    assert (x86.model, x86.int8_dot_product) == ("AMD EPYC 7B13", ("avx512_vnni",))


def test_health_reads_temperature_clock_memory_and_throttling(tmp_path, monkeypatch):
    root = fake_device(tmp_path / "root")
    monkeypatch.setenv("PATH", f"{fake_vcgencmd(tmp_path / 'bin', ['0x50005'])}:{os.environ['PATH']}")
    health = read_health(root)
    assert (health.temperature_c, health.cpu_mhz, health.memory) == (61.25, 1500.0, (1000.0, 4000.0))
    assert health.throttled == 0x50005
    assert health.line() == ("temperature 61.2 C, CPU clock 1500 MHz, memory in use 1000/4000 MB, "
                             "throttling NOW: under-voltage, throttled")


def test_an_empty_tree_and_no_vcgencmd_give_n_a(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no vcgencmd here
    assert throttled_flags() is None
    assert read_health(tmp_path).line() == ("temperature n/a, CPU clock n/a, memory in use n/a, "
                                            "throttling n/a")


@pytest.mark.parametrize("before, after, warned", [
    (0x0, 0x0, None),
    (0x0, 0x50000, "under-voltage, throttled"),  # happened since the first reading
    (0x50000, 0x50000, None),  # happened before the measurement, not during it
    (0x50000, 0x50004, "throttled"),  # throttled right now
    (None, None, None),  # not a Raspberry Pi
])
def test_throttling_during_a_measurement(before, after, warned):
    warning = throttling_during(before, after)
    if warned is None:
        assert warning is None
    else:
        assert warning.startswith(f"the CPU was slowed during the measurement ({warned}; ")
    assert describe_throttling(0x50000) == "since boot: under-voltage, throttled"


def test_bench_reports_health_and_warns_when_the_cpu_throttled(tmp_path, monkeypatch):
    monkeypatch.setenv(SYSTEM_ROOT_ENV, str(fake_device(tmp_path / "root")))
    monkeypatch.setenv("PATH", f"{fake_vcgencmd(tmp_path / 'bin', ['0x0', '0x40004'])}:{os.environ['PATH']}")
    lines: list[str] = []
    before = throttled_flags()  # 0x0: the start of the measurement
    figures = report_health(before, lines.append)  # 0x40004: throttled since, and now
    assert lines[0] == "CPU Cortex-A76 (Raspberry Pi 5 Model B Rev 1.0), int8 dot product: asimddp"
    assert lines[1].startswith("temperature 61.2 C, CPU clock 1500 MHz")
    assert lines[2].startswith("warning: the CPU was slowed during the measurement (throttled; ")
    assert figures["throttled_during_measurement"] and figures["temperature_c"] == 61.25


def test_the_stream_status_line_carries_the_health(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="crack.edge")
    monkeypatch.setenv(SYSTEM_ROOT_ENV, str(fake_device(tmp_path / "root")))
    monkeypatch.setenv("PATH", f"{fake_vcgencmd(tmp_path / 'bin', ['0x0'])}:{os.environ['PATH']}")
    video = write_video(tmp_path / "v.avi", [grey_frame()] * 3)
    # the first frame is held past the status interval, so a status line follows it
    run_stream(StreamOptions(model=line_model_path(), source=str(video), status_interval=0.05, threads=1),
               on_frame=lambda index, probability: index == 0 and __import__("time").sleep(0.1))
    status = [r.getMessage() for r in caplog.records if r.getMessage().startswith("status: ")]
    assert status, "no status line"
    assert ("temperature 61.2 C, CPU clock 1500 MHz, memory in use 1000/4000 MB, throttling none; "
            "CPU Cortex-A76 (Raspberry Pi 5 Model B Rev 1.0), int8 dot product: asimddp") in status[0]


def test_default_threads_leave_a_core_on_a_pi():
    assert default_threads(4, "aarch64") == 3
    assert default_threads(2, "aarch64") == 2
    assert default_threads(8, "x86_64") == 8


@pytest.mark.parametrize("machine, bits, says_64_bit", [
    ("armv7l", 32, True), ("armv6l", 32, True), ("aarch64", 32, True),  # 32-bit userland, 64-bit kernel
    ("aarch64", 64, False), ("x86_64", 64, False),
])
def test_32_bit_arm_is_told_to_use_the_64_bit_os(machine, bits, says_64_bit):
    from edge.health import interpreter_install_advice

    advice = interpreter_install_advice(machine, bits)
    assert ("install Raspberry Pi OS 64-bit" in advice) == says_64_bit
    assert ("pip install" in advice) != says_64_bit  # never a pip install that cannot work


def test_no_interpreter_on_armv7_names_the_64_bit_os(monkeypatch):
    import platform

    from edge.errors import UserError
    from edge.interpreter import find_interpreter

    monkeypatch.setattr(platform, "machine", lambda: "armv7l")
    monkeypatch.setitem(__import__("sys").modules, "ai_edge_litert.interpreter", None)
    with pytest.raises(UserError, match="install Raspberry Pi OS 64-bit"):
        find_interpreter(("ai_edge_litert",))
