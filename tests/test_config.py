"""`--config FILE`: every option of score and stream has a key, the command line wins, and a bad
key or value is one line naming the key with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import PROJECT
from edge.cli import CONFIG_COMMANDS, app, config_keys
from edge.config import command_settings, load_config
from edge.errors import UserError
from edge_models import crack_frame, grey_frame, line_model_path, write_video

EXAMPLE = PROJECT / "edge" / "crackkit.example.toml"
FORMATS = PROJECT / "edge" / "FORMATS.md"


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    frames = [grey_frame()] * 4 + [crack_frame()] * 6 + [grey_frame()] * 4
    return write_video(tmp_path_factory.mktemp("config") / "crack.avi", frames)


def test_the_config_drives_stream_and_the_command_line_wins(video, tmp_path):
    config = write_config(tmp_path / "crackkit.toml", f"""
model = "{line_model_path()}"
threads = 1
[stream]
source = "{video}"
events = "{tmp_path / 'events.jsonl'}"
min_frames = 2
max_frames = 5
""")
    result = CliRunner().invoke(app, ["stream", "--config", str(config), "--max-frames", "9"])
    assert result.exit_code == 0, result.output
    assert "stream: 9 frames from" in result.output  # the command line's 9, not the file's 5
    start, end = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert start["frame_index"] == 5  # min_frames = 2 from the file: frames 4 and 5 open it
    assert end["reason"] == "shutdown"


def test_score_reads_its_table_and_the_shared_keys(tmp_path):
    import cv2

    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(str(folder / "crack.png"), crack_frame())
    out = tmp_path / "results.csv"
    config = write_config(tmp_path / "c.toml", f"""
model = "{line_model_path()}"
[score]
paths = ["{folder}"]
out = "{out}"
progress = false
[stream]
source = "0"
""")
    result = CliRunner().invoke(app, ["score", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "crack.png" in out.read_text()


@pytest.mark.parametrize("text, message", [
    ("[stream]\nsourc = 'x'\n", "unknown key 'sourc' in [stream]"),
    ("thredas = 2\n", "unknown key 'thredas'"),
    ("[steam]\nsource = 'x'\n", "unknown table [steam]"),
    ("[stream]\nthreads = 'four'\n", "[stream] threads must be an integer, not 'four'"),
    ("[stream]\nthreads = true\n", "[stream] threads must be an integer, not True"),
    ("[stream]\nthreshold = '0.5'\n", "[stream] threshold must be a number"),
    ("[stream]\nshow = 1\n", "[stream] show must be true or false, not 1"),
    ("[stream]\nevents = 3\n", "[stream] events must be a path (string), not 3"),
    ("[score]\npaths = 'photos'\n", "[score] paths must be a list of strings"),
    ("out = 'x.csv'\nmodel = 5\n", "model must be a path (string), not 5"),
    ("[stream\n", "is not valid TOML"),
])
def test_a_bad_config_is_one_line_naming_the_key_with_exit_2(tmp_path, text, message):
    config = write_config(tmp_path / "bad.toml", text)
    result = CliRunner().invoke(app, ["stream", "--config", str(config), "--model", "m.tflite", "--source", "0"])
    assert result.exit_code == 1 and isinstance(result.exception, UserError)  # run_app makes it exit 2
    assert message in str(result.exception) and "\n" not in str(result.exception)
    assert str(config) in str(result.exception)


def test_a_bad_config_through_the_real_entry_point_exits_2(tmp_path):
    import subprocess
    import sys

    config = write_config(tmp_path / "bad.toml", "[stream]\nstall_timeout = 'soon'\n")
    result = subprocess.run([sys.executable, "-m", "edge", "stream", "--config", str(config)],
                            capture_output=True, text=True, timeout=60, cwd=PROJECT)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: config {config}: [stream] stall_timeout must be a number, "
                                     "not 'soon'")


def test_every_option_has_a_documented_key_and_the_example_is_valid():
    documented = FORMATS.read_text().split("<!-- config:start -->")[1].split("<!-- config:end -->")[0]
    config = load_config(EXAMPLE)
    keys = {command: config_keys(function) for command, function in CONFIG_COMMANDS.items()}
    for command, names in keys.items():
        assert {"model", "threads", "threshold", "tiles", "tile_size", "stride"} <= set(names)
        for name in names:
            assert f"`{name}`" in documented, f"{command}: key {name} is not in edge/FORMATS.md"
        settings = command_settings(config, command, keys, EXAMPLE)
        assert settings["model"] == Path("/opt/crackkit/models/model_int8.tflite")
    assert settings["stall_timeout"] == 60.0 and settings["source"] == "picamera2"
    assert config_keys(CONFIG_COMMANDS["score"])["paths"].many
    assert config_keys(CONFIG_COMMANDS["stream"])["stall_timeout"].kind == "float"
