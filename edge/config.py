"""`--config FILE`: the options of `score` and `stream` in a TOML file (read with ``tomllib``).

    model = "/opt/crackkit/models/model_int8.tflite"   # top level: shared by both commands
    threads = 3

    [stream]
    source = "picamera2"
    events = "/var/lib/crackkit/events.jsonl"
    stall_timeout = 60

    [score]
    out = "results.csv"

A key is an option's long name with underscores (``--tile-size`` -> ``tile_size``; ``score``'s
files are ``paths``, a list). A key at the top level applies to every command that has that
option; a key in a command's table wins over it; the command line wins over both. An unknown key,
an unknown table or a value of the wrong type is a usage error naming the key (exit 2). The keys
are documented in edge/FORMATS.md; the CLI derives each key's type from its option
(``edge.cli``), so every option has its key.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edge.errors import UserError

Kind = Literal["str", "int", "float", "bool", "path"]
KIND_NAMES = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
              "path": "a path (string)"}
LIST_NAMES = {"str": "strings", "int": "integers", "float": "numbers", "bool": "booleans", "path": "paths"}


@dataclass(frozen=True)
class ConfigKey:
    name: str
    kind: Kind
    many: bool = False  # a list of values (score's paths)


def load_config(path: Path) -> dict[str, Any]:
    """The parsed TOML file; a missing, unreadable or malformed file is a UserError."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10 has no tomllib
        try:
            import tomli as tomllib
        except ImportError:
            raise UserError("--config needs Python 3.11 or later (or: pip install tomli)") from None
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise UserError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise UserError(f"--config {path} is a folder, not a TOML file") from None
    except OSError as exc:
        raise UserError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"config file {path} is not valid TOML: {exc}") from None


def command_settings(config: dict[str, Any], command: str, keys: dict[str, dict[str, ConfigKey]],
                     source: Path) -> dict[str, Any]:
    """The values ``config`` gives ``command``: the top-level keys that the command has, then its
    own table over them, converted (paths to ``Path``). ``keys`` holds every command's keys: the
    whole file is checked, so a mistake in ``[score]`` is found by ``stream`` too."""
    all_names = set().union(*keys.values())
    settings: dict[str, Any] = {}
    for name, value in config.items():
        if isinstance(value, dict):
            if name not in keys:
                raise UserError(f"config {source}: unknown table [{name}] (there are [{'], ['.join(keys)}])")
            for key, item in value.items():
                if key not in keys[name]:
                    raise UserError(f"config {source}: unknown key {key!r} in [{name}]")
                checked = _checked(item, keys[name][key], f"[{name}] {key}", source)
                if name == command:
                    settings[key] = checked
            continue
        if name not in all_names:
            raise UserError(f"config {source}: unknown key {name!r}")
        for other, other_keys in keys.items():
            if name in other_keys:
                checked = _checked(value, other_keys[name], name, source)
                if other == command:
                    settings.setdefault(name, checked)
    return settings


def _checked(value: Any, key: ConfigKey, where: str, source: Path) -> Any:
    if key.many:
        if not isinstance(value, list):
            raise UserError(f"config {source}: {where} must be a list of {LIST_NAMES[key.kind]}, "
                            f"not {_shown(value)}")
        return [_checked(item, ConfigKey(key.name, key.kind), where, source) for item in value]
    ok = {"str": isinstance(value, str), "path": isinstance(value, str),
          "int": isinstance(value, int) and not isinstance(value, bool),
          "float": isinstance(value, (int, float)) and not isinstance(value, bool),
          "bool": isinstance(value, bool)}[key.kind]
    if not ok:
        raise UserError(f"config {source}: {where} must be {KIND_NAMES[key.kind]}, not {_shown(value)}")
    if key.kind == "path":
        return Path(value)
    if key.kind == "float":
        return float(value)
    return value


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
