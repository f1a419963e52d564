"""The device's health: CPU model and int8 support, temperature, throttling, clock, memory.

Everything is read from ``/proc`` and ``/sys`` under ``system_root()`` (``/`` unless the
``CRACKKIT_SYSTEM_ROOT`` environment variable names a fake tree, as the tests do), plus
``vcgencmd get_throttled`` where the Raspberry Pi firmware tool is on PATH. A value that cannot
be read is None and shown as "n/a": health is reported, never a reason to fail.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SYSTEM_ROOT_ENV = "CRACKKIT_SYSTEM_ROOT"

# CPU features that give int8 kernels their edge over float: x86 VNNI, Arm dot product and int8
# matrix multiply (a Pi 5's Cortex-A76 has asimddp; a Pi 4's Cortex-A72 has none of these).
INT8_DOT_PRODUCT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")

# /proc/cpuinfo on Arm names the core only by its part number.
ARM_CORES = {"0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
             "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
             "0xd0d": "Cortex-A77", "0xd41": "Cortex-A78"}

# vcgencmd get_throttled: bits 0-3 are the state now, bits 16-19 the same since boot.
THROTTLE_FLAGS = {0: "under-voltage", 1: "frequency capped", 2: "throttled", 3: "soft temperature limit"}
THROTTLE_SINCE_BOOT_SHIFT = 16
VCGENCMD_TIMEOUT_S = 2.0


def system_root() -> Path:
    return Path(os.environ.get(SYSTEM_ROOT_ENV) or "/")


def _read(root: Path, relative: str) -> str | None:
    try:
        return (root / relative).read_text(errors="replace")
    except OSError:
        return None


@dataclass(frozen=True)
class CpuInfo:
    model: str
    int8_dot_product: tuple[str, ...]  # the flags from INT8_DOT_PRODUCT_FLAGS this CPU has

    def line(self) -> str:
        if self.int8_dot_product:
            return f"CPU {self.model}, int8 dot product: {', '.join(self.int8_dot_product)}"
        return f"CPU {self.model}, no int8 dot-product instructions (int8 models gain less)"


def cpu_info(root: Path | None = None) -> CpuInfo:
    text = _read(root or system_root(), "proc/cpuinfo") or ""
    fields: dict[str, str] = {}
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key in ("flags", "features"):
            flags.update(value.split())
        elif key and value:
            fields.setdefault(key, value)
    model = fields.get("model name")
    if model is None and fields.get("cpu part") in ARM_CORES:
        model = ARM_CORES[fields["cpu part"]]
        if "model" in fields:  # a Raspberry Pi names the board
            model = f"{model} ({fields['model']})"
    model = model or fields.get("model") or fields.get("hardware") or platform.machine() or "unknown"
    return CpuInfo(model, tuple(flag for flag in INT8_DOT_PRODUCT_FLAGS if flag in flags))


def temperature_c(root: Path | None = None) -> float | None:
    """The hottest thermal zone, in degrees Celsius."""
    readings = []
    for path in sorted((root or system_root()).glob("sys/class/thermal/thermal_zone*/temp")):
        try:
            readings.append(int(path.read_text().strip()) / 1000.0)
        except (OSError, ValueError):
            continue
    return max(readings) if readings else None


def cpu_frequency_mhz(root: Path | None = None) -> float | None:
    text = _read(root or system_root(), "sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
    try:
        return int(text.strip()) / 1000.0 if text else None
    except ValueError:
        return None


def memory_mb(root: Path | None = None) -> tuple[float, float] | None:
    """(in use, total) in MB: MemTotal - MemAvailable from /proc/meminfo."""
    text = _read(root or system_root(), "proc/meminfo") or ""
    values = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if parts and parts[0].isdigit():
            values[key.strip()] = int(parts[0]) / 1024.0
    if "MemTotal" not in values or "MemAvailable" not in values:
        return None
    return values["MemTotal"] - values["MemAvailable"], values["MemTotal"]


def throttled_flags() -> int | None:
    """``vcgencmd get_throttled`` as a number (Raspberry Pi only); None where there is none."""
    command = shutil.which("vcgencmd")
    if command is None:
        return None
    try:
        result = subprocess.run([command, "get_throttled"], capture_output=True, text=True,
                                timeout=VCGENCMD_TIMEOUT_S, check=False)
        return int(result.stdout.strip().split("=", 1)[1], 16)
    except (OSError, subprocess.SubprocessError, IndexError, ValueError):
        return None


def describe_throttling(flags: int | None) -> str:
    if flags is None:
        return "n/a"
    now = [name for bit, name in THROTTLE_FLAGS.items() if flags & (1 << bit)]
    before = [name for bit, name in THROTTLE_FLAGS.items() if flags & (1 << (bit + THROTTLE_SINCE_BOOT_SHIFT))]
    if now:
        return "NOW: " + ", ".join(now)
    if before:
        return "since boot: " + ", ".join(before)
    return "none"


def throttling_during(before: int | None, after: int | None) -> str | None:
    """A warning when the CPU was throttled (or under-voltage) at some point between two
    readings of ``throttled_flags``: a flag set now, or a since-boot flag that is new."""
    if after is None:
        return None
    new_since_boot = (after >> THROTTLE_SINCE_BOOT_SHIFT) & ~((before or 0) >> THROTTLE_SINCE_BOOT_SHIFT)
    events = [name for bit, name in THROTTLE_FLAGS.items()
              if after & (1 << bit) or new_since_boot & (1 << bit)]
    if not events:
        return None
    return (f"the CPU was slowed during the measurement ({', '.join(events)}; vcgencmd get_throttled = "
            f"{after:#x}): the figures are lower than this device can do. Cool it or use a better power supply.")


@dataclass(frozen=True)
class HealthReading:
    temperature_c: float | None
    cpu_mhz: float | None
    memory: tuple[float, float] | None  # (in use, total) MB
    throttled: int | None

    def line(self) -> str:
        temperature = f"{self.temperature_c:.1f} C" if self.temperature_c is not None else "n/a"
        clock = f"{self.cpu_mhz:.0f} MHz" if self.cpu_mhz is not None else "n/a"
        memory = f"{self.memory[0]:.0f}/{self.memory[1]:.0f} MB" if self.memory is not None else "n/a"
        return (f"temperature {temperature}, CPU clock {clock}, memory in use {memory}, "
                f"throttling {describe_throttling(self.throttled)}")


def read_health(root: Path | None = None) -> HealthReading:
    root = root or system_root()
    return HealthReading(temperature_c(root), cpu_frequency_mhz(root), memory_mb(root), throttled_flags())


def default_threads(cores: int | None = None, machine: str | None = None) -> int:
    """Interpreter threads when none are given: every core on a PC, all but one on an Arm board
    with four or more (a Pi 4/5: 3), so that capture and decoding keep a core of their own."""
    cores = cores or os.cpu_count() or 1
    machine = (machine or platform.machine()).lower()
    if machine.startswith(("aarch64", "arm")) and cores >= 4:
        return cores - 1
    return cores


def report_health(throttled_before: int | None, say) -> dict:
    """For `crack-edge bench`, after a measurement that began when ``throttled_flags()`` was
    ``throttled_before``: say the CPU and health lines, and warn if the CPU was slowed meanwhile.
    Returns the figures for the JSON output."""
    cpu, health = cpu_info(), read_health()
    say(cpu.line())
    say(health.line())
    warning = throttling_during(throttled_before, health.throttled)
    if warning is not None:
        say(f"warning: {warning}")
    return {"cpu": cpu.model, "int8_dot_product": list(cpu.int8_dot_product),
            "temperature_c": health.temperature_c, "cpu_mhz": health.cpu_mhz,
            "memory_used_mb": health.memory[0] if health.memory else None,
            "throttled": health.throttled, "throttled_during_measurement": warning is not None}


def interpreter_install_advice(machine: str | None = None, pointer_bits: int | None = None) -> str:
    """What to do when no TFLite interpreter can be imported. On 32-bit Raspberry Pi OS (armv7l,
    or a 32-bit userland on a 64-bit kernel) no LiteRT wheel exists, so pip cannot help."""
    import struct

    machine = (machine or platform.machine()).lower()
    pointer_bits = pointer_bits or struct.calcsize("P") * 8
    if machine.startswith("arm") or (machine == "aarch64" and pointer_bits == 32):
        return (f"this is a 32-bit ARM system ({machine}, {pointer_bits}-bit Python), for which no LiteRT or "
                "tflite-runtime wheel exists: install Raspberry Pi OS 64-bit (arm64) and set up again")
    return "install one: pip install ai-edge-litert"
