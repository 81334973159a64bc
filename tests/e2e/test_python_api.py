"""``eqtrain.train([...])``: the command line's run from Python, with its checks raised as one-line exceptions."""

import json
import subprocess
import sys

import pytest

import eqtrain

from ..helpers import eqtrain as command


def test_a_run_from_python_writes_what_the_command_line_writes(tmp_path):
    result = eqtrain.train(["experiment=smoke", "max_steps=3", "threads=1"], run_dir=tmp_path / "py")
    assert result.run_dir == tmp_path / "py" and result.summary["status"] == "completed"
    proc = command(tmp_path, "experiment=smoke", "max_steps=3", "threads=1", f"hydra.run.dir={tmp_path / 'cli'}")
    assert proc.returncode == 0, proc.stderr
    ours, theirs = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("py", "cli"))
    assert ours == theirs  # the same config, the same numbers


@pytest.mark.parametrize("override", ["gamm=0.1", "gamma=-1", "dataset=mnist_rot"])
def test_bad_input_raises_the_command_lines_one_line(tmp_path, monkeypatch, override):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(eqtrain.ConfigError) as err:
        eqtrain.train([override, "experiment=smoke"])
    proc = command(tmp_path, override, "experiment=smoke")
    assert proc.returncode == 2
    assert f"eqtrain: error: {err.value}" == proc.stderr.strip().splitlines()[-1]
    assert isinstance(err.value, ValueError) and "\n" not in str(err.value)


def test_importing_the_entry_point_loads_no_torch():
    code = "import sys, eqtrain; eqtrain.train; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
