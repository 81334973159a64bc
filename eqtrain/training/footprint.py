"""The memory model: how much memory a run needs, from its seeds, batch, images and model width.

A run holds, beside the interpreter and its data set (loaded before the check):
- per weight entry of every seed (N·P entries, ``EqCNN.flat``: θ, the biases and a batch norm's affine):
  the parameters, their gradients and the step's copies in the run's dtype, and Π_{E⊥}A in float64
  (``WEIGHT_COPIES``, ``PERP_BYTES``); a batch norm's running statistics (two numbers per field) are
  too few to count;
- the step log's held copies of A_t, at most ``HOLD_ENTRIES`` + N·P entries;
- the training step's activations: N seeds × batch × (|G| under orbit augmentation, else 1) images per
  forward pass, each with what autograd keeps of every conv block and the backward pass's gradients
  (``ACTIVATION_COPIES`` of its conv output and of its pooled map); the function-space penalty's
  |G| − 1 further passes (``step_views``) each add what autograd keeps of them until the backward
  (``KEPT_COPIES``), while the backward's gradients are those of one pass at a time;
- the evaluation's chunk (``metrics.EVAL_BYTES`` for its widest activation, a few of them alive).
The constants were fitted to the peak RSS of real runs (docs/design.md, "Memory model"); a test
checks the model against two sizes. ``check_fits`` turns it into a one-line refusal before a run
that cannot fit starts, instead of the kernel's OOM kill halfway.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..geometry.group import Group
from ..nets.cnn import EqCNN, build_model
from ..run.machine import available_bytes
from .metrics import EVAL_BYTES
from .settings import ConfigError, Phase, Settings
from .steplog import HOLD_ENTRIES

# Fitted to the peak RSS of paper-CNN runs above the 1-seed run, checked on P4CNN, Z2CNN and the G-CNN
# (docs/design.md, "Memory model"):
WEIGHT_COPIES = 3  # in the run's dtype, per weight entry, at the step's peak
PERP_BYTES = 8  # Π_{E⊥}A in float64, per weight entry
ACTIVATION_COPIES = 2.4  # per activation of a conv block (conv output as computed, pooled map), fwd and bwd
# Of those, kept by autograd for the backward: the part a further pass adds (fitted to P4CNN and Z2CNN runs with
# the function-space penalty at batch 128, 1 -> 8 seeds: each further pass added 0.59-0.62 of the first's growth).
KEPT_COPIES = 1.2
EVAL_COPIES = 2  # chunks of the widest activation alive at once


@dataclass(frozen=True)
class Footprint:
    """Bytes a run needs beyond the interpreter and its data, by what needs them."""

    weights: int
    step_log: int
    activations: int
    evaluation: int

    @property
    def total(self) -> int:
        return self.weights + self.step_log + self.activations + self.evaluation

    def describe(self) -> str:
        parts = ("weights", "step_log", "activations", "evaluation")
        return ", ".join(f"{p.replace('_', ' ')} {gib(getattr(self, p))}" for p in parts)


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def footprint(model: EqCNN, seeds: int, batch: int, views: int, passes: int = 1) -> Footprint:
    """The model's footprint for ``seeds`` seeds (``model`` may be built with one), ``views`` images per
    sample and forward pass (|G| under orbit augmentation, else 1) and ``passes`` forward passes per step
    kept for one backward (|G| with the function-space penalty, else 1)."""
    item = model.flat.element_size()
    entries = seeds * model.flat.shape[1]
    weights = entries * (WEIGHT_COPIES * item + PERP_BYTES)
    step_log = (HOLD_ENTRIES + entries) * item  # held copies of A_t
    images = seeds * batch * views
    input_size = model.arch.in_shape[0] * model.arch.in_shape[1] * model.arch.in_shape[2]
    copies = ACTIVATION_COPIES + KEPT_COPIES * (passes - 1)
    activations = images * item * (copies * sum(model.activation_sizes()) + 2 * input_size * passes)
    per_image = model.widest_activation() * item * seeds
    evaluation = EVAL_COPIES * max(EVAL_BYTES, per_image)  # a chunk holds at least one image
    return Footprint(weights, step_log, activations, evaluation)


def check_fits(settings: Settings, model: EqCNN, views: int, passes: int = 1) -> Footprint:
    """Refuse, in one line, a run whose footprint exceeds the memory left; else its footprint."""
    seeds, batch = settings.config.seeds, settings.config.batch_size  # (a count: never the seeds' tuple)
    need = footprint(model, seeds, batch, views, passes)
    room = available_bytes()
    if room is None or need.total <= room:
        return need
    fits, too_many = 0, seeds  # the most seeds that fit: the footprint grows with the seeds
    while too_many - fits > 1:
        mid = (fits + too_many) // 2
        fits, too_many = (mid, too_many) if footprint(model, mid, batch, views, passes).total <= room else (fits, mid)
    advice = f"seeds<={fits} fits" if fits >= 1 else "not even one seed fits: lower batch_size"
    raise ConfigError(
        f"seeds={seeds} needs about {gib(need.total)} of memory ({need.describe()}) but {gib(room)} is "
        f"available: {advice} (docs/design.md, 'Memory model')"
    )


def step_views(phase: Phase, order: int) -> tuple[int, int]:
    """(images per sample in a forward pass, forward passes a training step keeps for its backward): |G| images
    under orbit augmentation, else 1; |G| passes with the function-space penalty (the batch and its |G| − 1
    turns), else 1."""
    views = order if phase.dyn.augment and phase.augment == "orbit" else 1
    return views, order if phase.dyn.penalize_function else 1


def check_run_fits(settings: Settings, group: Group, image_shape: tuple[int, int, int], n_classes: int) -> Footprint:
    """``check_fits`` for the phase of the run that needs the most memory; its model built with one seed."""
    largest = build_model(settings.config.model, group, image_shape, n_classes, False, settings.dtype)
    shapes = {step_views(p, group.order) for p in settings.phases}
    views, passes = max(shapes, key=lambda vp: footprint(largest, 1, 1, *vp).activations)
    return check_fits(settings, largest, views, passes)
