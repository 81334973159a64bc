"""The command line end to end, as a user runs it: a real subprocess in a temporary directory."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ..helpers import EQTRAIN, SMOKE, eqtrain
from ..helpers import scalars as curves

REPO = Path(__file__).resolve().parents[2]


def scalars(run_dir: Path) -> dict[str, list[int]]:
    """tag -> the steps it was logged at."""
    return {tag: steps for tag, (steps, _) in curves(run_dir).items()}


@pytest.mark.slow
def test_run_writes_curves_hparams_and_metrics(tmp_path):
    proc = eqtrain(tmp_path, *SMOKE)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    # The summary: what changed and where to look.
    assert "eqtrain: augreg, gamma=10, group=c4: completed after 20 steps" in proc.stdout
    assert "d(A)  3.013 -> " in proc.stdout and "acc/test_orbit" in proc.stdout
    assert f"curves: tensorboard --logdir {run_dir.relative_to(tmp_path)}" in proc.stdout
    # TensorBoard's address with the distance curves pinned above the Time Series tab (checked in Chromium:
    # docs/figures/tensorboard_distance_pinned.png); every pinned tag is one the run logged
    from urllib.parse import parse_qs, urlparse

    url = proc.stdout.split("then open ")[1].split()[0]
    pinned = json.loads(parse_qs(urlparse(url).query)["pinnedCards"][0])
    assert url.startswith("http://localhost:6006/?") and url.endswith("#timeseries")
    assert [c["tag"] for c in pinned] == ["dist_to_E/total", "dist_to_E_rel/total"]
    steps = scalars(run_dir)
    assert all(c["plugin"] == "scalars" and c["tag"] in steps for c in pinned)
    for tag in ("dist_to_E/conv1", "dist_to_E/conv2", "dist_to_E/head", "dist_to_E/total", "dist_to_E_rel/total"):
        assert steps[tag] == list(range(21)), tag  # 20 steps of 20 (max_steps) + the final weights
    for tag in ("loss/data", "loss/reg", "loss/total", "gamma/t"):
        assert steps[tag] == list(range(20)), tag
    for tag in (
        "acc/train", "acc/test", "acc/test_orbit", "acc/test_projected", "acc/test_orbit_projected",
        "equiv/test_error", "equiv/test_consistency",
    ):  # fmt: skip
        assert steps[tag] == [0, 20], tag  # before training and after the (only) epoch
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["steps"] == 20
    assert metrics["hparams"]["mode"] == "augreg" and metrics["hparams"]["gamma"] == 10.0
    # hparams live in the run's own directory (TensorBoard's HParams tab).
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    (events,) = run_dir.glob("events.out.tfevents.*")
    tags = {v.tag for e in EventFileLoader(str(events)).Load() for v in e.summary.value}
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= tags


@pytest.mark.slow
def test_log_every_thins_the_per_step_curves(tmp_path):
    assert eqtrain(tmp_path, *SMOKE, "log_every=5", "mode=nomreg").returncode == 0
    (run_dir,) = (tmp_path / "outputs" / "runs").iterdir()
    assert scalars(run_dir)["loss/total"] == [0, 5, 10, 15]


@pytest.mark.slow  # a new interpreter each; the messages are checked in-process in test_robustness.py
@pytest.mark.parametrize(
    "override,message",
    [("gamm=0.1", "gamm"), ("mode=augrg", "augrg"), ("group=c8", "c8"), ("model.kernel_size=three", "kernel_size")],
)
def test_typos_fail_at_once_naming_the_key(tmp_path, override, message):
    proc = eqtrain(tmp_path, *SMOKE, override)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert not (tmp_path / "outputs" / "runs").exists() or not any((tmp_path / "outputs" / "runs").rglob("events*"))


@pytest.mark.slow  # a new interpreter; tests/e2e/test_robustness.py checks every message in-process
def test_bad_value_is_one_clear_line_and_exit_2(tmp_path):
    proc = eqtrain(tmp_path, *SMOKE, "lr=-1")
    assert proc.returncode == 2
    assert "eqtrain: error: lr=-1.0 is not valid: use a finite number > 0" in proc.stderr.splitlines()


@pytest.mark.slow
def test_gamma_for_a_mode_without_regularizer_warns(tmp_path):
    proc = eqtrain(tmp_path, *SMOKE, "mode=nominal", "gamma=0.5")
    assert proc.returncode == 0
    assert "gamma=0.5 is ignored: mode=nominal has no regularizer" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_help_and_cfg_job(tmp_path):
    help_ = eqtrain(tmp_path, "--help")
    assert help_.returncode == 0
    for group in ("dataset:", "model:", "mode:", "group:", "experiment:"):
        assert group in help_.stdout
    assert "mode: augfn, augmented, augreg, equivariant, nomfn, nominal, nomreg" in help_.stdout
    cfg = eqtrain(tmp_path, "--cfg", "job", "mode=nomreg", "gamma=1")
    assert cfg.returncode == 0 and "name: nomreg" in cfg.stdout and "gamma: 1" in cfg.stdout


@pytest.mark.parametrize(
    "overrides,note",
    [
        (
            ["mode=nomreg"],
            "# the run uses: gamma=10 (unset: the default of the regularized modes); optimizer: plain sgd",
        ),
        (["mode=nominal", "gamma=1"], "# the run uses: gamma=0 (mode=nominal has no regularizer)"),
        (["mode=equivariant", "optimizer=adam", "lr_schedule=exp"], "lr_decay=0.9; equivariant coordinates: tied"),
        (["lr=-1"], "# this run would be refused: lr=-1.0 is not valid: use a finite number > 0"),
        (["mode=augfn"], "gamma=0 (mode=augfn has no regularizer); gamma_f=1 (unset: the default of the function"),
    ],
)
def test_cfg_job_says_what_the_run_resolves_from_its_config(tmp_path, monkeypatch, capsys, overrides, note):
    """`eqtrain --cfg job mode=nomreg` prints gamma: null (unset): the line after the YAML says the γ the run
    uses, and the other values it resolves (an unset lr_decay, the equivariant coordinates)."""
    import logging

    from eqtrain.cli.train import run

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["eqtrain", "--cfg", "job", *overrides])
    try:
        run()
    finally:
        logging.getLogger().handlers.clear()
    out = capsys.readouterr().out
    assert "gamma: " in out  # Hydra's YAML, then the note
    assert note in out.strip().splitlines()[-1]


@pytest.mark.slow
def test_two_runs_started_together_get_two_directories(tmp_path):
    procs = [
        subprocess.Popen(
            [EQTRAIN, *SMOKE, "max_steps=2"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    assert len(list((tmp_path / "outputs" / "runs").iterdir())) == 2


@pytest.mark.slow
def test_wheel_contains_every_config_file(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("eqtrain-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"eqtrain/configs/{p.relative_to(REPO / 'configs').as_posix()}" for p in (REPO / "configs").rglob("*.yaml")
    }
    assert expected and expected <= names
    modules = {f"eqtrain/{p.relative_to(REPO / 'eqtrain').as_posix()}" for p in (REPO / "eqtrain").rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    assert "eqtrain/data/digits_split.txt" in names  # the offline default's split
    # ... and Hydra finds them in the installed package, from any directory.
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    code = (
        "import eqtrain.cli.train; from hydra import compose, initialize_config_module\n"
        "with initialize_config_module('eqtrain.configs', version_base='1.3'):\n"
        "    print(compose('config', ['experiment=smoke', 'model=deep_cnn']).model.channels)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[32, 64, 64]"


NO_HEAVY_IMPORTS = """
import sys
sys.argv = ["eqtrain", *sys.argv[1:]]
from eqtrain.cli.train import run
try:
    run()
except SystemExit:
    pass
print("heavy:", ",".join(m for m in ("torch", "numpy", "matplotlib", "tensorboard") if m in sys.modules))
"""


@pytest.mark.parametrize("args", [["gamm=0.1"], ["--help"], ["mode=augreg", "gamma=-1"]])
def test_a_typo_help_or_bad_value_is_answered_without_loading_torch(tmp_path, args):
    """The command line's promise (cli/train.py): these answers come before torch, numpy, matplotlib or
    tensorboard is imported (import torch alone takes ~1.4 s)."""
    proc = subprocess.run([sys.executable, "-c", NO_HEAVY_IMPORTS, *args], cwd=tmp_path, capture_output=True, text=True)
    assert proc.stdout.strip().splitlines()[-1] == "heavy:", proc.stdout[-500:] + proc.stderr[-2000:]
