"""The benchmark commands of the README end to end (SPEC §11), on small files in the real formats."""

import json

import pytest

from ..helpers import eqtrain
from ..unit.test_datasets_benchmark import make_cifar10, make_mnist_rot

pytestmark = pytest.mark.slow  # two real runs of a P4CNN


def metrics_of(run_dir) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def test_p4cnn_with_augreg_on_mnist_rot(tmp_path):
    """`eqtrain dataset=mnist_rot model=p4cnn mode=augreg gamma=1`, on six training and four test rows."""
    make_mnist_rot(tmp_path / "data")
    run = tmp_path / "run"
    args = ("dataset=mnist_rot", f"dataset.data_dir={tmp_path / 'data'}", "model=p4cnn", "mode=augreg", "gamma=1")
    proc = eqtrain(tmp_path, *args, "batch_size=2", "epochs=1", "threads=1", f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = metrics_of(run)
    assert m["status"] == "completed" and m["steps"] == 3 and m["dim_E"] == 19690
    assert min(m[f"equiv/layer/conv{i}"] for i in range(1, 7)) > 1e-3  # augreg starts off E: e_l sees it


def test_p4cnn_under_d4_on_cifar10_is_exactly_invariant(tmp_path):
    """`eqtrain dataset=cifar10 model=p4cnn group=d4 mode=equivariant`: 3 colour channels as trivial fields,
    32x32 -> 6x6 at the head; the logits and every layer equivariant to float32 round-off."""
    make_cifar10(tmp_path / "data", n=3)
    run = tmp_path / "run"
    args = ("dataset=cifar10", f"dataset.data_dir={tmp_path / 'data'}", "model=p4cnn", "group=d4", "mode=equivariant")
    proc = eqtrain(tmp_path, *args, "batch_size=3", "max_steps=2", "threads=1", f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = metrics_of(run)
    assert m["status"] == "completed" and m["dist_to_E/total"] == 0
    assert m["equiv/test_error"] <= 1e-5
    assert max(m[f"equiv/layer/conv{i}"] for i in range(1, 7)) <= 1e-5
