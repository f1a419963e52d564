"""Every entry point that may import TensorFlow sets its environment first (training.tensorflow_env):
oneDNN kernels on (2.6x faster training on a CPU where TensorFlow leaves them off), unless the
user said otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from training import tensorflow_env

ENTRY_POINTS = {
    "crack": "from convert.crack_cli import main",
    "python -m training": "from training.cli import main",
}


def test_prepare_sets_the_defaults_where_unset(monkeypatch):
    for name in tensorflow_env.DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    tensorflow_env.prepare()
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "1"
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"


def test_a_value_the_user_set_wins(monkeypatch):
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    tensorflow_env.prepare()
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "0"


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("user_value", [None, "0"])
def test_entry_points_prepare_before_running(entry, user_value):
    """The command's main() sets the variables (its children, such as multi-worker training
    workers, inherit them); a value given by the user is passed through unchanged."""
    code = (f"{ENTRY_POINTS[entry]}\nimport os, sys\nsys.argv = ['crack', '--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('ONEDNN=' + os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset'))\n"
            "print('TENSORFLOW_IMPORTED=' + str('tensorflow' in sys.modules))")
    env = {k: v for k, v in os.environ.items() if k not in tensorflow_env.DEFAULTS}
    if user_value is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = user_value
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert f"ONEDNN={user_value or '1'}" in out
    assert "TENSORFLOW_IMPORTED=False" in out  # --help stays light: nothing imported it first
