"""Bad input, divergence, interruption and exact resume, determinism (robustness issue)."""

import json
import logging
import os
import signal
import subprocess
import time

import pytest
import torch

from eqtrain.cli.train import precheck

from ..helpers import EQTRAIN, TINY, cli, fast_first, kill_and_resume, make_config, scalars, train_config, wait_for

QUICK = ["experiment=smoke", "max_steps=3"]


BAD_INPUT = [
    # (overrides, exit code, expected message)
    (["gamm=0.1"], 2, "unknown key 'gamm' (did you mean gamma?)"),
    (["model.kernal_size=3"], 2, "unknown key 'model.kernal_size' (did you mean model.kernel_size?)"),
    (
        ["mode=augrg"],
        2,
        "mode=augrg is not an option of mode; valid: augfn, augmented, augreg, equivariant, nomfn, nominal, nomreg",
    ),
    (["model.kernel_size=three"], 2, "model.kernel_size=three is not valid: use an int"),  # before Hydra's 6 lines
    (["lr=abc"], 2, "lr=abc is not valid: use a number"),
    (["mode=augreg,nomreg", "seeds=1,2.5"], 2, "seeds=2.5 is not valid: use an int"),  # each value of a sweep
    (["twin=maybe"], 2, "twin=maybe is not valid: use true or false"),
    (["gamma=-1"], 2, "gamma=-1.0 is not valid: use a finite number >= 0"),
    (["gamma=nan"], 2, "gamma=nan is not valid: use a finite number >= 0"),
    (["gamma=inf"], 2, "gamma=inf is not valid"),
    (["lr=0"], 2, "lr=0.0 is not valid: use a finite number > 0"),
    (["lr=-0.1"], 2, "lr=-0.1 is not valid"),
    (["batch_size=0"], 2, "batch_size=0 is not valid: use an int >= 1"),
    (["batch_size=201"], 2, "batch_size=201 is not valid: larger than the training set (200 images)"),
    (["epochs=-1"], 2, "epochs=-1 is not valid: use an int >= 0"),
    (["model.kernel_size=4"], 2, "model.kernel_size=4 must be a positive odd integer"),
    (["model.kernel_size=-1"], 2, "model.kernel_size=-1 must be a positive odd integer"),
    (["model.support=[[1,0],[0,1]]"], 2, "model.support=[[1, 0], [0, 1]] must be a 3x3 list of 0/1"),
    (["model.support=[[1,2,0],[0,1,0],[0,0,1]]"], 2, "must contain only 0 and 1"),
    (["model.support=[[0,0,0],[0,0,0],[0,0,0]]"], 2, "is empty"),
    (["dataset.image_size=[28,32]"], 2, "group=c4 rotates by 90° and needs square images, got 28×32"),
    (["mode=equivariant", "dataset.image_size=30"], 2, "mode=equivariant needs an exactly equivariant network"),
    (["dataset.image_size=8"], 2, "a single c4-orbit of positions"),
    (["augment=mixup"], 2, "augment='mixup' is not valid: use one of random, orbit"),
]


@pytest.mark.parametrize(
    "overrides,code,message", fast_first(BAD_INPUT, fast=5, ids=[" ".join(o) for o, _, _ in BAD_INPUT])
)
def test_bad_input_one_line_and_exit_code(tmp_path, monkeypatch, capsys, overrides, code, message):
    got, err = cli(tmp_path, monkeypatch, capsys, *QUICK, *overrides)
    assert got == code
    assert message in err
    assert err.strip().count("\n") == 0 and err.startswith("eqtrain: error: ")  # exactly one line
    assert not list(tmp_path.rglob("events.out.tfevents.*"))  # nothing half-written


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_gpu(tmp_path, monkeypatch, capsys):
    code, err = cli(tmp_path, monkeypatch, capsys, *QUICK, "device=cuda")
    assert code == 2 and "device='cuda' is not valid: no CUDA GPU is visible" in err


@pytest.mark.slow  # three CLI processes (~3.3 s); other damaged-data tests stay in the fast subset
def test_missing_data_files(tmp_path, monkeypatch, capsys):
    code, err = cli(tmp_path, monkeypatch, capsys, *QUICK, "dataset=mnist", f"dataset.data_dir={tmp_path}/none")
    assert code == 2
    assert f"put the IDX files (train-images-idx3-ubyte, ...) in {tmp_path}/none/MNIST/raw/" in err
    assert "dataset=digits works offline" in err


@pytest.mark.slow
def test_download_without_network_fails_fast(tmp_path, monkeypatch, capsys):
    start = time.monotonic()
    code, err = cli(
        tmp_path,
        monkeypatch,
        capsys,
        *QUICK,
        "dataset=kmnist",
        "dataset.download=true",
        f"dataset.data_dir={tmp_path}/d",
    )
    assert code == 2 and "dataset=kmnist" in err and "dataset=digits works offline" in err
    assert time.monotonic() - start < 60


def test_output_directory_not_writable(tmp_path, monkeypatch, capsys):
    (tmp_path / "a_file").write_text("")
    code, err = cli(tmp_path, monkeypatch, capsys, *QUICK, f"hydra.run.dir={tmp_path}/a_file/run")
    assert code == 2 and "hydra.run.dir=" in err and "is not writable" in err


@pytest.mark.slow
def test_resume_needs_a_checkpoint_of_the_same_config(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = cli(tmp_path, monkeypatch, capsys, *QUICK, f"resume={empty}")
    assert code == 2 and "resume: no checkpoint.pt in" in err
    run = tmp_path / "run"
    assert cli(tmp_path, monkeypatch, capsys, *QUICK, f"hydra.run.dir={run}")[0] == 0
    code, err = cli(tmp_path, monkeypatch, capsys, *QUICK, "lr=0.5", f"resume={run}")
    assert code == 2 and "written by a different config" in err and "force_resume=true" in err
    assert cli(tmp_path, monkeypatch, capsys, *QUICK, "lr=0.5", f"resume={run}", "force_resume=true")[0] == 0


@pytest.mark.slow
def test_a_run_never_overwrites_another(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    assert cli(tmp_path, monkeypatch, capsys, *QUICK, f"hydra.run.dir={run}")[0] == 0
    before = (run / "metrics.json").read_text()
    code, err = cli(tmp_path, monkeypatch, capsys, *QUICK, f"hydra.run.dir={run}", "seed=3")
    assert code == 2 and "already holds a run" in err
    assert (run / "metrics.json").read_text() == before


def test_divergence_stops_flushes_and_keeps_the_last_finite_state(run_train):
    """lr = 1e38: the first update overflows, so the run stops at step 0 and keeps A_0."""
    run = run_train(*TINY, "mode=nominal", "lr=1e38", "max_steps=50")
    m = run.metrics()
    assert m["status"] == "diverged" and m["steps"] == 0
    steps, _ = run.scalars("loss/data")
    assert steps == [0]  # the event file holds everything up to the failed step
    state = torch.load(run.dir / "checkpoint.pt", weights_only=True)
    assert state["step"] == 1 and state["died_at"].tolist() == [0]
    assert all(torch.isfinite(v).all() for v in state["model"].values())  # only ever a finite state
    start = run_train(*TINY, "mode=nominal", "max_steps=0").weights()
    assert all(torch.equal(a, b) for a, b in zip(run.weights(), start))  # weights.pt: A_0 itself


@pytest.mark.slow
def test_divergence_keeps_the_sweep_going(tmp_path):
    proc = subprocess.run(
        [EQTRAIN, "-m", *QUICK, "mode=nominal", "lr=1e38,0.05", f"hydra.sweep.dir={tmp_path}/sweep"],
        cwd=tmp_path, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    statuses = sorted(json.loads(p.read_text())["status"] for p in (tmp_path / "sweep").rglob("metrics.json"))
    assert statuses == ["completed", "diverged"]


# -- interruption and exact resume ------------------------------------------------------------

# Two epochs of 400 steps (about 1.5 s each): the stop lands in epoch 2, well after its first checkpoint.
EPOCH = 400
LONG = [f"dataset.train_limit={EPOCH}", "dataset.test_limit=50", "epochs=2", "batch_size=1", "mode=augreg", "lr=0.01"]


@pytest.mark.slow
def test_killed_mid_epoch_then_resumed_is_bitwise_identical(tmp_path):
    reference, killed = kill_and_resume(tmp_path, LONG, steps_per_epoch=EPOCH)
    assert (killed / "metrics.json").read_text() == (reference / "metrics.json").read_text()
    final_ref = torch.load(reference / "weights.pt", weights_only=True)["weights"]
    final_resumed = torch.load(killed / "weights.pt", weights_only=True)["weights"]
    assert all(torch.equal(a, b) for a, b in zip(final_ref, final_resumed))
    # The curves: no duplicated or missing steps, and the same values as the uninterrupted run.
    ref_curves, resumed_curves = scalars(reference), scalars(killed)
    assert ref_curves.keys() == resumed_curves.keys()
    for tag, (steps, values) in ref_curves.items():
        assert resumed_curves[tag] == (steps, values), tag


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGUSR2])
def test_other_stop_signals_checkpoint_too(tmp_path, sig):
    run = tmp_path / "run"
    proc = subprocess.Popen([EQTRAIN, *LONG, f"hydra.run.dir={run}"], cwd=tmp_path, stderr=subprocess.PIPE)
    wait_for(run / "checkpoint.pt", proc)  # the handlers are installed before anything is written
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == 128 + sig
    assert json.loads((run / "metrics.json").read_text())["status"] == "interrupted"
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] > EPOCH  # past the first epoch


@pytest.mark.slow
def test_same_config_same_metrics_across_processes(tmp_path):
    for name in ("a", "b"):
        subprocess.run([EQTRAIN, *QUICK, "max_steps=15", f"hydra.run.dir={tmp_path / name}"], cwd=tmp_path, check=True)
    assert (tmp_path / "a" / "metrics.json").read_text() == (tmp_path / "b" / "metrics.json").read_text()


@pytest.mark.slow
def test_resume_auto_in_a_new_directory_starts_fresh_and_resume_dir_writes_into_that_directory(run_train, tmp_path):
    first = run_train(*TINY, "max_steps=5", "resume=auto")
    assert first.metrics()["status"] == "completed"
    os.remove(first.dir / "metrics.json")
    run_train(*TINY, "max_steps=5", f"resume={first.dir}")  # resume=<dir> writes into <dir>
    assert json.loads((first.dir / "metrics.json").read_text())["steps"] == 5


def test_resume_auto_without_a_checkpoint_starts_over(run_train, tmp_path):
    """A requeued job killed before its first checkpoint must not fail for ever."""
    run = tmp_path / "requeued"
    run.mkdir()
    (run / "events.out.tfevents.1.host.1").write_bytes(b"")  # what a job killed at step 0 leaves
    result = train_config(make_config(*TINY, "max_steps=3", "resume=auto"), run)
    assert result["status"] == "completed"
    assert len(list(run.glob("stale-*"))) == 1


@pytest.mark.slow
def test_resume_restores_the_thread_count(run_train, caplog):
    """CPU sums split by thread: a resumed run takes the interrupted run's count, not the default."""
    default = torch.get_num_threads()
    other = 1 if default > 1 else 2
    run = run_train(*TINY, "max_steps=3", f"threads={other}")
    assert torch.load(run.dir / "checkpoint.pt", weights_only=True)["threads"] == other
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        train_config(make_config(*TINY, "max_steps=3", f"resume={run.dir}"), run.dir)  # no threads= given
    assert f"resuming with {other} torch threads" in caplog.text
    assert torch.load(run.dir / "checkpoint.pt", weights_only=True)["threads"] == other  # the resumed run's count
    assert torch.get_num_threads() == default  # and the caller's is restored afterwards


@pytest.mark.parametrize(
    "args",
    [
        ["-m", "mode=choice(nomreg,augreg)"],
        ["-m", "experiment=glob(*)"],
        ["mode='augreg'"],
        ["mode= augreg"],
        ["model@pkg=deep_cnn"],
        ["-sc", "install=bash"],
        ["--config-dir", "mine", "experiment=mine"],
        ["--cfg", "job", "mode=nomreg"],
        ["+phases=[{mode:nominal,epochs:1}]", "phases.0.epochs=2"],
        ["-m", "experiment=paper,stability", "'seed=range(3)'"],
        ["lr=${batch_size}", "lr=1e-${epochs}", "gamma=null", "threads=null", "-m", "lr=0.1,0.2", "twin=yes"],
    ],
)
def test_precheck_leaves_valid_command_lines_to_hydra(args):
    assert precheck(args) is None


@pytest.mark.slow
def test_train_restores_the_thread_count(run_train):
    before = torch.get_num_threads()
    run_train(*TINY, "max_steps=2", f"threads={max(1, before - 1) if before > 1 else 2}")
    assert torch.get_num_threads() == before


# -- damaged files and a full disk ------------------------------------------------------------


def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(run_train, caplog):
    """A truncated checkpoint.pt costs the run nothing: resume takes checkpoint.prev.pt and says so."""
    run = run_train(*TINY, "dataset.train_limit=40", "epochs=2", "batch_size=10")  # 2 epochs: two checkpoints
    before = (run.dir / "metrics.json").read_text()
    latest = run.dir / "checkpoint.pt"
    latest.write_bytes(latest.read_bytes()[:1000])  # truncated, as by a full disk or a killed copy
    with caplog.at_level(logging.WARNING):
        train_config(
            make_config(*TINY, "dataset.train_limit=40", "epochs=2", "batch_size=10", f"resume={run.dir}"), run.dir
        )
    assert "falling back to the previous checkpoint checkpoint.prev.pt" in caplog.text
    assert (run.dir / "metrics.json").read_text() == before  # resumed from the previous state, to the same end


def test_a_damaged_checkpoint_without_a_previous_one_is_one_line(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    code, err = cli(tmp_path, monkeypatch, capsys, *QUICK, f"resume={run}")
    assert code == 2 and err.count("\n") == 1
    assert "checkpoint.pt is damaged or not an eqtrain checkpoint" in err and "no previous checkpoint" in err


def test_a_full_disk_is_one_line_and_keeps_what_was_written(tmp_path, monkeypatch, capsys):
    """ENOSPC while writing a checkpoint: one line naming the file, exit 2; the temporary file is gone."""
    import errno

    import eqtrain.run.checkpoint as checkpoint

    def full(state, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(checkpoint.torch, "save", full)
    run = tmp_path / "run"
    code, err = cli(tmp_path, monkeypatch, capsys, *QUICK, f"hydra.run.dir={run}")
    assert code == 2 and err.count("\n") == 1
    assert "cannot write" in err and "checkpoint.pt.tmp: No space left on device" in err
    assert (run / "config.yaml").exists() and not list(run.glob("*.tmp"))


def test_gamma_beyond_float32_is_one_line(tmp_path, monkeypatch, capsys):
    code, err = cli(tmp_path, monkeypatch, capsys, *QUICK, "gamma=1e308")
    assert code == 2 and "gamma=1e+308 is not valid: larger than the largest float32 (3.4e+38)" in err
