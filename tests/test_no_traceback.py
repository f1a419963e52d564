"""Every subcommand of both CLIs (`crack` and `crack-edge`), run as a real subprocess with bad
arguments and bad files: no output holds a traceback, and the exit codes are edge/FORMATS.md's
(a usage or input error is one `error: ...` line and exit 2; a runtime failure is exit 1).

The commands are listed from the typer apps themselves, so a new command is covered without
touching this file. Only real subprocesses can show a traceback: an in-process runner catches it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROJECT

TIMEOUT = 120  # a command that hangs on bad input is a failure too
CLIS = {"crack": "convert.crack_cli", "crack-edge": "edge.cli"}


def _walk(command, path=()):
    if hasattr(command, "commands"):
        for name, sub in sorted(command.commands.items()):
            yield from _walk(sub, (*path, name))
    else:
        yield path, command


def all_commands() -> list[tuple[str, tuple[str, ...], object]]:
    import importlib

    import typer.main

    found = []
    for cli, module in CLIS.items():
        app = importlib.import_module(module).app
        found.extend((cli, path, command) for path, command in _walk(typer.main.get_command(app)))
    return found


COMMANDS = all_commands()
IDS = [" ".join((cli, *path)) for cli, path, _ in COMMANDS]


def run(cli: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    module = CLIS[cli].rsplit(".", 1)[0]  # python -m convert / python -m edge
    try:
        return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                              timeout=TIMEOUT, cwd=cwd, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{cli} {' '.join(args)} still ran after {TIMEOUT} s on bad input")


def assert_clean(result: subprocess.CompletedProcess, allowed=(1, 2)) -> None:
    shown = f"{result.args[3:]}\nexit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    assert "Traceback" not in result.stdout + result.stderr, shown
    assert result.returncode in allowed, shown
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    if result.returncode == 2:
        assert len(errors) == 1, shown  # one line, never a usage box or a stack
    if result.returncode == 1:
        assert len(errors) <= 1, shown


def annotation(param) -> object:
    return getattr(getattr(param, "type_descriptor", None), "annotation", None)


def takes_text(param) -> bool:
    """Paths and text (str, Path, lists of them): where a bad file can be given."""
    kind = annotation(param)
    text = {str, Path, list[str], list[Path], list[str] | None, list[Path] | None,
            str | None, Path | None}
    return kind in text or getattr(param, "param_type_name", "") == "argument"


def is_flag(param) -> bool:
    return bool(getattr(param, "is_flag", False))


def is_number(param) -> bool:
    return annotation(param) in (int, float, int | None, float | None) and not is_flag(param)


def arguments(command, value: str, every_text: bool) -> list[str]:
    """Command-line arguments giving ``value`` to the command's file options (all text options
    when ``every_text``), and "1" to every number (small work, should anything start)."""
    args: list[str] = []
    for param in command.params:
        if is_flag(param) or param.name in ("version", "help"):
            continue
        wanted = param.required or is_number(param) or (
            takes_text(param) and (every_text or annotation(param) in (Path, Path | None, list[Path])
                                   or param.param_type_name == "argument"))
        if not wanted:
            continue
        given = value if takes_text(param) else "1"
        if param.param_type_name == "argument":
            args.append(given)
        else:
            args += [param.opts[0], given]
    return args


@pytest.fixture
def bad_files(tmp_path) -> dict[str, str]:
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x00\xffnot what anything expects\n" * 40)
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")
    folder = tmp_path / "empty_folder"
    folder.mkdir()
    return {"missing": str(tmp_path / "nowhere" / "missing.tflite"), "garbage": str(garbage),
            "empty": str(empty), "folder": str(folder)}


@pytest.mark.parametrize("cli, path, command", COMMANDS, ids=IDS)
def test_an_unknown_option_is_one_line_and_exit_2(tmp_path, cli, path, command):
    result = run(cli, [*path, "--no-such-option"], tmp_path)
    assert_clean(result, allowed=(2,))


@pytest.mark.parametrize("cli, path, command", COMMANDS, ids=IDS)
def test_help_works(tmp_path, cli, path, command):
    assert_clean(run(cli, [*path, "--help"], tmp_path), allowed=(0,))


@pytest.mark.parametrize("kind", ["missing", "garbage", "empty", "folder"])
@pytest.mark.parametrize("cli, path, command", COMMANDS, ids=IDS)
def test_bad_files_never_show_a_traceback(tmp_path, bad_files, cli, path, command, kind):
    result = run(cli, [*path, *arguments(command, bad_files[kind], every_text=False)], tmp_path)
    assert_clean(result, allowed=(0, 1, 2))


@pytest.mark.parametrize("cli, path, command", COMMANDS, ids=IDS)
def test_garbage_in_every_text_option_never_shows_a_traceback(tmp_path, bad_files, cli, path, command):
    result = run(cli, [*path, *arguments(command, bad_files["garbage"], every_text=True)], tmp_path)
    assert_clean(result, allowed=(0, 1, 2))


@pytest.mark.parametrize("cli, path, command", COMMANDS, ids=IDS)
def test_hostile_numbers_never_show_a_traceback(tmp_path, bad_files, cli, path, command):
    args = arguments(command, bad_files["garbage"], every_text=False)
    for param in command.params:
        if is_number(param):
            args += [param.opts[0], "-1"]  # the last value given wins
    assert_clean(run(cli, [*path, *args], tmp_path), allowed=(1, 2))
