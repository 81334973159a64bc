"""Progress off a terminal: a plain line every few seconds (a SLURM log stays readable)."""

import logging
import sys

import torch

from eqtrain.run.progress import Progress


def test_off_a_terminal_progress_is_a_plain_line_with_rate_eta_loss_and_distance(caplog):
    progress = Progress(total_steps=10, every_s=0.0)
    assert not progress.tty  # pytest captures stderr: not a terminal
    with caplog.at_level(logging.INFO, logger="eqtrain"):
        progress.update(5, torch.tensor([0.5, 0.25]), lambda: torch.tensor([0.1, 0.3]))
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("step 5/10 (50%)") and "step/s" in line and "<" in line  # rate and ETA
    assert "loss=0.3750" in line and "d(A)=2.000e-01" in line  # the means over seeds
    assert "\r" not in line


def test_lines_are_spaced_by_the_interval(caplog):
    progress, measured = Progress(total_steps=10, every_s=3600.0), []
    with caplog.at_level(logging.INFO, logger="eqtrain"):
        for step in range(10):
            progress.update(step, torch.tensor([0.5]), lambda: measured.append(1) or torch.tensor([0.1]))
    assert caplog.records == []  # within the first hour: nothing yet
    assert measured == []  # and d(A) is measured only for a line that is drawn


def test_a_resumed_run_counts_its_steps_from_the_run_start(caplog):
    """Resumed at step 79 of 158: the line reads 109/158 (was 109/79: the absolute step over those left)."""
    progress = Progress(total_steps=158, start=79, every_s=0.0)
    with caplog.at_level(logging.INFO, logger="eqtrain"):
        progress.update(109, torch.tensor([0.5]), lambda: torch.tensor([0.1]))
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("step 109/158 (69%)")


def test_in_a_notebook_the_bar_is_tqdms_notebook_aware_one(monkeypatch):
    """eqtrain.train in Jupyter: stderr is no terminal, but a bar shows (tqdm.auto), not a silent log line."""
    from eqtrain.run import progress as module

    made = []
    monkeypatch.setattr(module, "in_notebook", lambda: True)
    monkeypatch.setattr(module, "auto_tqdm", lambda **kwargs: made.append(kwargs) or module.tqdm(**kwargs))
    bar = Progress(total_steps=10)
    assert bar.tty and len(made) == 1 and made[0]["total"] == 10
    bar.close()


def test_pytest_is_no_notebook():
    from eqtrain.run.progress import in_notebook

    assert not in_notebook()


def test_a_long_computation_counts_its_work_with_the_time_left(caplog):
    """eqtrain-analyze (minutes of Hessian-vector products on a CPU) says how far it is and how long is left."""
    from eqtrain.run.progress import Counter

    counter = Counter(80, "HVP", "Hessian on E-perp and E", every_s=0.0)
    with caplog.at_level(logging.INFO, logger="eqtrain"):
        for _ in range(20):
            counter.update()
    counter.close()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 20 and lines[-1].startswith("Hessian on E-perp and E: 20/80 HVP (25%) [")
    assert "<" in lines[-1] and "HVP/s" in lines[-1]  # the time left and the rate


def test_a_kernel_is_told_by_its_app_not_its_shell_class(monkeypatch):
    """Jupyter's shell and Colab's (another class) both run in an IPython kernel app: both get the bar."""
    import types

    from eqtrain.run.progress import in_notebook

    for config, expected in (({"IPKernelApp": {}}, True), ({}, False)):
        shell = types.SimpleNamespace(config=config)
        monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda shell=shell: shell))
        assert in_notebook() is expected
