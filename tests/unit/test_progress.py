"""Progress off a terminal: a plain line every few seconds (a SLURM log stays readable)."""

import logging

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
