"""Damaged or foreign files the programs read: one line naming the file, what is wrong and what
to do, a non-zero exit — or, for eqtrain-plot, a note and the rest plotted — and nothing already written lost.

Covered here: MNIST IDX files (eqtrain), weights.pt / config.yaml and the wrong kind of directory
(eqtrain-analyze), event files, metrics.json, directories and --out (eqtrain-plot).
"""

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from eqtrain.cli.analyze import main as analyze
from eqtrain.cli.plot import main as plot

from ..helpers import cli, fast_first, make_config, make_mnist, train_config

TINY = ("dataset.train_limit=40", "dataset.test_limit=20", "epochs=1", "max_steps=3")


def digest(directory: Path) -> dict[str, str]:
    """Every file under a directory and a hash of its bytes: what must survive a refused input."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def one_line(err: str, prefix: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(prefix), lines[0]
    return lines[0]


# --- IDX files in dataset.data_dir -----------------------------------------------------------------


def damaged_idx(raw: Path) -> dict[str, tuple[str, bytes, str]]:
    """name -> (file, bytes written over it, words the message must contain)."""
    images = (raw / "train-images-idx3-ubyte").read_bytes()
    labels = (raw / "train-labels-idx1-ubyte").read_bytes()
    return {
        "truncated": ("train-images-idx3-ubyte", images[:100], "truncated (100 bytes; its header promises 23536)"),
        "cut-in-header": ("train-images-idx3-ubyte", images[:10], "truncated"),
        "empty": ("t10k-labels-idx1-ubyte", b"", "is empty"),
        "garbage": ("train-images-idx3-ubyte", bytes(range(1, 256)) * 8, "not an IDX file"),
        "html-page": ("t10k-images-idx3-ubyte", b"<html>404</html>", "not an IDX file"),
        "too-long": ("train-images-idx3-ubyte", images + b"\0\0", "2 bytes more than its header promises"),
        "labels-as-images": ("train-images-idx3-ubyte", labels, "not unsigned-byte images (3 dimensions)"),
        "bad-label": ("train-labels-idx1-ubyte", labels[:8] + bytes([200]) + labels[9:], "label 200"),
        "other-count": ("train-labels-idx1-ubyte", (raw / "t10k-labels-idx1-ubyte").read_bytes(), "30 images but"),
    }


@pytest.mark.slow  # torchvision and IDX files; test_missing_data_files is the fast check of that path
@pytest.mark.parametrize(
    "case",
    [
        "truncated",
        "cut-in-header",
        "empty",
        "garbage",
        "html-page",
        "too-long",
        "labels-as-images",
        "bad-label",
        "other-count",
    ],
)
def test_damaged_idx_file_is_named_in_one_line(tmp_path, monkeypatch, capsys, case):
    make_mnist(tmp_path / "data")
    raw = tmp_path / "data" / "MNIST" / "raw"
    file, content, words = damaged_idx(raw)[case]
    (raw / file).write_bytes(content)
    before = digest(tmp_path / "data")
    run_dir = tmp_path / "run"
    code, err = cli(tmp_path, monkeypatch, capsys, "dataset=mnist", f"dataset.data_dir={tmp_path / 'data'}", *TINY,
                    f"hydra.run.dir={run_dir}")  # fmt: skip
    line = one_line(err, "eqtrain: error: dataset=mnist: ")
    assert code == 2 and str(raw) in line and words in line, line
    assert "no data" not in line and "replace" in line, line
    assert digest(tmp_path / "data") == before  # the data files are left as they were
    assert not list(run_dir.glob("events.out.tfevents.*")) and not (run_dir / "metrics.json").exists()


@pytest.mark.slow
def test_only_compressed_files_say_to_decompress_them(tmp_path, monkeypatch, capsys):
    make_mnist(tmp_path / "data")
    raw = tmp_path / "data" / "MNIST" / "raw"
    for p in list(raw.iterdir()):
        p.rename(p.with_name(p.name + ".gz"))  # (not really gzip: torchvision is not asked to open them)
    code, err = cli(tmp_path, monkeypatch, capsys, "dataset=mnist", f"dataset.data_dir={tmp_path / 'data'}", *TINY,
                    f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    line = one_line(err, "eqtrain: error: dataset=mnist:")
    assert code == 2 and ".gz but not" in line and "gunzip" in line


# --- eqtrain-analyze RUN_DIR -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished run (3 steps) as the CLI writes it, with its checkpoint; and a 2-seed ensemble job beside it."""
    root = tmp_path_factory.mktemp("analyze")
    train_config(make_config(*TINY), root / "run")
    train_config(make_config(*TINY, "seeds=2"), root / "job")
    return root


def save(path: Path, payload) -> None:
    torch.save(payload, path)


ANALYZE_CASES = {
    # name: (how the copy is damaged, words of the message)
    "weights-truncated": (
        lambda d: (d / "weights.pt").write_bytes((d / "weights.pt").read_bytes()[:1000]),
        "weights.pt is a damaged torch file",
    ),
    "weights-empty": (lambda d: (d / "weights.pt").write_bytes(b""), "weights.pt is empty"),
    "weights-garbage": (
        lambda d: (d / "weights.pt").write_bytes(bytes(range(256)) * 20),
        "weights.pt is not a torch file",
    ),
    "weights-text": (lambda d: (d / "weights.pt").write_text("hello\n"), "weights.pt is not a torch file"),
    "weights-foreign-pickle": (lambda d: save(d / "weights.pt", [1, 2, 3]), "not an eqtrain weights file"),
    "weights-checkpoint": (lambda d: shutil.copy(d / "checkpoint.pt", d / "weights.pt"), "not an eqtrain weights file"),
    "weights-other-keys": (
        lambda d: save(d / "weights.pt", {"state_dict": {"x": torch.zeros(3)}}),
        "maps.0.theta is missing",
    ),
    "weights-other-shape": (
        lambda d: save(
            d / "weights.pt", {"state_dict": {f"maps.{i}.theta": torch.zeros(1, 2, 2, 2) for i in range(3)}}
        ),
        "maps.0.theta has shape (1, 2, 2, 2), not (1, 16, 1, 9)",
    ),
    "weights-a-directory": (
        lambda d: ((d / "weights.pt").unlink(), (d / "weights.pt").mkdir()),
        "weights.pt is not a file",
    ),
    "config-not-yaml": (
        lambda d: (d / "config.yaml").write_text("dataset:\n  name: digits\n  oops\n: : ["),
        "config.yaml is damaged (not valid YAML",
    ),
    "config-binary": (
        lambda d: (d / "config.yaml").write_bytes(bytes(range(128, 256))),
        "config.yaml is damaged (not text",
    ),
    "config-empty": (lambda d: (d / "config.yaml").write_text(""), "config.yaml is empty"),
    "config-a-list": (lambda d: (d / "config.yaml").write_text("- 1\n- 2\n"), "is not an eqtrain config (a YAML list"),
    "config-foreign-key": (lambda d: (d / "config.yaml").write_text("foo: 1\n"), "Key 'foo' not in 'Config'"),
    "config-bad-type": (
        lambda d: _edit(d / "config.yaml", "lr: 0.02", "lr: abc"),
        "could not be converted to Float, key lr",
    ),
    "config-invalid-value": (
        lambda d: _edit(d / "config.yaml", "lr: 0.02", "lr: -1.0"),
        "config.yaml: lr=-1.0 is not valid",
    ),
    "config-cut-at-a-line": (
        lambda d: (d / "config.yaml").write_text("".join((d / "config.yaml").read_text().splitlines(True)[:20])),
        "does not describe the run of",
    ),
    "config-of-another-run": (
        lambda d: _edit(d / "config.yaml", "lr: 0.02", "lr: 0.05"),
        "(lr=0.05 in one, 0.02 in the other)",
    ),
    "stability-a-directory": (lambda d: (d / "stability.json").mkdir(), "cannot write stability.json"),
}


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


@pytest.mark.parametrize("case", fast_first(ANALYZE_CASES, fast=4))
def test_analyze_a_damaged_or_foreign_run_file_in_one_line(finished_run, tmp_path, capsys, case):
    run = Path(shutil.copytree(finished_run / "run", tmp_path / "run"))
    damage, words = ANALYZE_CASES[case]
    damage(run)
    before = digest(run)
    assert analyze([str(run), "--samples", "4", "--iterations", "2"]) == 2
    line = one_line(capsys.readouterr().err, "eqtrain-analyze: error: ")
    assert words in line, line
    assert digest(run) == before  # nothing written, nothing lost


def test_a_damaged_weights_file_says_how_to_rewrite_it(finished_run, tmp_path, capsys):
    run = Path(shutil.copytree(finished_run / "run", tmp_path / "run"))
    (run / "weights.pt").write_bytes(b"")
    assert analyze([str(run)]) == 2
    line = capsys.readouterr().err
    assert f"resume='{run}'" in line and "overrides.yaml" in line


@pytest.mark.parametrize(
    ("where", "words"),
    [
        ("job", "holds 2 runs (seed=0, seed=1), not one"),
        (".", "holds 3 runs"),
        ("run/config.yaml", "is a file, not a run directory"),
        ("nowhere", "does not exist"),
    ],
)
def test_analyze_refuses_what_is_not_one_run_directory(finished_run, capsys, where, words):
    assert analyze([str(finished_run / where)]) == 2
    line = one_line(capsys.readouterr().err, "eqtrain-analyze: error: ")
    assert words in line, line
    if where in ("job", "."):
        assert "e.g. '" in line  # one of them, to copy


@pytest.mark.slow
def test_analyze_without_the_data_points_to_data_dir(finished_run, tmp_path, capsys):
    run = Path(shutil.copytree(finished_run / "run", tmp_path / "run"))
    _edit(run / "config.yaml", "name: digits", "name: mnist")
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["hparams"]["dataset"] = "mnist"
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert analyze([str(run), "--data-dir", str(tmp_path / "nowhere")]) == 2
    line = one_line(capsys.readouterr().err, "eqtrain-analyze: error: dataset=mnist: no data")
    assert "--data-dir" in line


# --- eqtrain-plot SWEEP_DIR ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def job(finished_run) -> Path:
    return finished_run / "job"  # seed=0/, seed=1/


def events_of(run_dir: Path) -> Path:
    (path,) = run_dir.glob("events.out.tfevents.*")
    return path


def rows_of(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_a_truncated_event_file_is_plotted_as_far_as_it_reads_with_a_note(job, tmp_path, capsys):
    sweep = Path(shutil.copytree(job, tmp_path / "job"))
    events = events_of(sweep / "seed=1")
    events.write_bytes(events.read_bytes()[:-30])  # a tail cut mid-record, as a crash while writing leaves it
    assert plot([str(sweep)]) == 0
    err = capsys.readouterr().err
    assert f"note: {events}: it ends inside record" in err and "TensorBoard's reader stops there" in err
    assert "its final values come from metrics.json" in err
    assert "TensorBoard's reader stops there" in (sweep / "summary.md").read_text()  # the note stays with the table
    (row,) = rows_of(sweep / "summary.csv")
    assert row["n"] == "2"
    finals = [json.loads((sweep / s / "metrics.json").read_text())["acc/test"] for s in ("seed=0", "seed=1")]
    assert float(row["acc/test median"]) == pytest.approx(np.median(finals), rel=1e-6)


@pytest.mark.parametrize(
    ("damage", "words"),
    fast_first(
        [
            (lambda p: p.write_bytes(b""), "is not a TensorBoard event file (it is empty)"),
            (lambda p: p.write_bytes(bytes(range(256)) * 10), "is not a TensorBoard event file"),
            (lambda p: (p.unlink(), p.mkdir()), "is not a file"),
        ],
        ids=["empty", "garbage", "a-directory"],
    ),
)
def test_an_unreadable_event_file_skips_its_run_with_a_note(job, tmp_path, capsys, damage, words):
    sweep = Path(shutil.copytree(job, tmp_path / "job"))
    damage(events_of(sweep / "seed=1"))
    assert plot([str(sweep)]) == 0
    err = capsys.readouterr().err
    assert f"note: skipped {sweep / 'seed=1'}: " in err and words in err, err
    (row,) = rows_of(sweep / "summary.csv")
    assert row["n"] == "1"


@pytest.mark.parametrize(
    ("content", "words"),
    fast_first(
        [
            (b'{"status": "completed", "hpar', "its metrics.json is damaged"),
            (b"", "its metrics.json is empty"),
            (bytes(range(128, 256)), "its metrics.json is damaged (not text"),
            (b"[1, 2]", "its metrics.json is not an eqtrain run's"),
            (b'{"hparams": {"mode": "augreg"}}', "its metrics.json is not an eqtrain run's"),
        ],
        ids=["truncated", "empty", "binary", "a-list", "foreign"],
    ),
)
def test_a_damaged_metrics_file_skips_its_run_with_a_note(job, tmp_path, capsys, content, words):
    sweep = Path(shutil.copytree(job, tmp_path / "job"))
    (sweep / "seed=1" / "metrics.json").write_bytes(content)
    assert plot([str(sweep)]) == 0
    err = capsys.readouterr().err
    assert f"note: skipped {sweep / 'seed=1'}: {words}" in err, err


def test_every_run_unreadable_is_one_line_and_exit_2(job, tmp_path, capsys):
    sweep = Path(shutil.copytree(job, tmp_path / "job"))
    for seed in ("seed=0", "seed=1"):
        (sweep / seed / "metrics.json").write_text("")
    assert plot([str(sweep)]) == 2
    line = one_line(capsys.readouterr().err, "eqtrain-plot: error: no readable eqtrain runs under")
    assert "metrics.json is empty" in line
    assert not (sweep / "summary.md").exists()


@pytest.mark.slow
def test_a_run_directory_or_a_job_directory_plots(finished_run, tmp_path, capsys):
    for name in ("run", "job", "job/seed=0"):
        assert plot([str(finished_run / name), "--out", str(tmp_path / name)]) == 0
        assert len(rows_of(tmp_path / name / "summary.csv")) == 1


def test_a_file_for_the_sweep_or_for_out_is_one_line(job, tmp_path, capsys):
    assert plot([str(job / "seed=0" / "metrics.json")]) == 2
    assert "is a file, not a directory" in one_line(capsys.readouterr().err, "eqtrain-plot: error: ")
    (tmp_path / "out").write_text("mine")
    assert plot([str(job), "--out", str(tmp_path / "out")]) == 2
    assert "--out" in one_line(capsys.readouterr().err, "eqtrain-plot: error: ")
    assert (tmp_path / "out").read_text() == "mine"


@pytest.mark.slow
def test_an_output_that_cannot_be_written_keeps_the_previous_ones(job, tmp_path, capsys):
    out = tmp_path / "out"
    assert plot([str(job), "--out", str(out)]) == 0
    before = (out / "summary.md").read_text()
    (out / "summary.csv").unlink()
    (out / "summary.csv").mkdir()  # cannot be replaced by a file
    assert plot([str(job), "--out", str(out)]) == 2
    assert "cannot write the outputs" in one_line(capsys.readouterr().err, "eqtrain-plot: error: ")
    assert (out / "summary.md").read_text() == before and not list(out.glob("*.tmp"))


def test_a_directory_of_links_to_runs_plots_and_a_link_loop_ends(job, tmp_path, capsys):
    links = tmp_path / "links"
    links.mkdir()
    (links / "a").symlink_to(job / "seed=0", target_is_directory=True)
    (links / "b").symlink_to(job / "seed=1", target_is_directory=True)
    (links / "loop").symlink_to(links, target_is_directory=True)  # would walk forever if followed blindly
    assert plot([str(links), "--out", str(tmp_path / "out")]) == 0
    (row,) = rows_of(tmp_path / "out" / "summary.csv")
    assert row["n"] == "2"


# --- the benchmark files of SPEC §11 in dataset.data_dir (MNIST-rot .amat, CIFAR-10 pickles) -------


def test_a_damaged_mnist_rot_file_is_named_in_one_line(tmp_path, monkeypatch, capsys):
    from ..unit.test_datasets_benchmark import TEST_AMAT, damage_line, make_mnist_rot

    make_mnist_rot(tmp_path / "data")
    path = tmp_path / "data" / TEST_AMAT
    lines = path.read_text().splitlines()
    lines[2] = damage_line(lines[2], 40, "2.55e+02")  # a pixel of 255: bytes, not [0, 1]
    path.write_text("\n".join(lines) + "\n")
    before = digest(tmp_path / "data")
    run_dir = tmp_path / "run"
    code, err = cli(tmp_path, monkeypatch, capsys, "dataset=mnist_rot", f"dataset.data_dir={tmp_path / 'data'}",
                    *TINY, f"hydra.run.dir={run_dir}")  # fmt: skip
    line = one_line(
        err, f"eqtrain: error: dataset=mnist_rot: {path} is damaged: line 3, pixel 41 is 255, outside [0, 1]"
    )
    assert code == 2 and "replace it with an intact copy" in line, line
    assert digest(tmp_path / "data") == before
    assert not list(run_dir.glob("events.out.tfevents.*")) and not (run_dir / "metrics.json").exists()


@pytest.mark.parametrize("case", ["missing", "garbage"])
def test_a_missing_or_damaged_cifar10_batch_is_named_in_one_line(tmp_path, monkeypatch, capsys, case):
    from ..unit.test_datasets_benchmark import make_cifar10

    make_cifar10(tmp_path / "data")
    path = tmp_path / "data" / "cifar-10-batches-py" / "test_batch"
    if case == "missing":
        path.unlink()
    else:
        path.write_bytes(bytes(range(256)) * 8)
    code, err = cli(tmp_path, monkeypatch, capsys, "dataset=cifar10", f"dataset.data_dir={tmp_path / 'data'}",
                    *TINY, f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    words = "does not exist" if case == "missing" else "is damaged: it is not"
    line = one_line(err, f"eqtrain: error: dataset=cifar10: {path} {words}")
    assert code == 2 and "cifar-10-python.tar.gz" in line, line


def test_a_bad_dataset_rotate_is_one_line(tmp_path, monkeypatch, capsys):
    code, err = cli(tmp_path, monkeypatch, capsys, "dataset.rotate=yes", *TINY, f"hydra.run.dir={tmp_path / 'run'}")
    line = one_line(err, "eqtrain: error: dataset.rotate='yes' is not valid; use one of none, continuous")
    assert code == 2, line
