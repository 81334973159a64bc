"""The run's mutable state — one object, whose state dict is the checkpoint.

It holds where the run is (step, epoch, position in the epoch's data order, phase), the random
streams of every seed (data order, augmentation), the model (every seed's θ and biases, and a batch
norm's running statistics), its optimizer's state (SPEC §12), the equivariant twin and its optimizer
if any, and which seeds are still running (none diverged). Resuming loads it back, so an
interrupted run continues bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..data.datasets import Data
from ..nets.cnn import EqCNN
from ..optim.optimizer import Optimizer, UpdateRule


def generator(seed: int, stream: int) -> torch.Generator:
    """Independent, reproducible random streams per seed and purpose (1: data order, 2: augmentation)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + stream)


@dataclass
class RunState:
    seed_ids: tuple[int, ...]
    model: EqCNN
    twin: EqCNN | None = None
    rule: UpdateRule = UpdateRule()  # the optimizer of every phase
    config_hash: str = ""  # of the config that wrote it: a resume must match it
    step: int = 0
    epoch: int = 0
    position: int = 0  # images of the current epoch already used
    phase: int = 0
    order: torch.Tensor | None = None  # (N, n): each seed's data order this epoch
    order_gens: list[torch.Generator] = field(default_factory=list)
    aug_gens: list[torch.Generator] = field(default_factory=list)
    running: torch.Tensor | None = None  # (N,) bool, on the device: not diverged
    diverged_at: torch.Tensor | None = None  # (N,) long, on the device: the step a seed diverged at, or −1
    diverged: list[bool] = field(default_factory=list)  # per seed, as last read on the host
    start_distances: torch.Tensor | None = None  # (N, layers + 2): the distances of A₀, for the end-of-run summary
    optimizer: Optimizer | None = None  # the model's (``new_optimizer``)
    twin_optimizer: Optimizer | None = None

    def __post_init__(self) -> None:
        n = len(self.seed_ids)
        self.optimizer = self.optimizer or Optimizer(self.rule, self.model.flat)
        if self.twin is not None:
            self.twin_optimizer = self.twin_optimizer or Optimizer(self.rule, self.twin.flat)
        self.order_gens = self.order_gens or [generator(s, 1) for s in self.seed_ids]
        self.aug_gens = self.aug_gens or [generator(s, 2) for s in self.seed_ids]
        device = self.model.maps[0].theta.device
        self.running = torch.ones(n, dtype=torch.bool, device=device) if self.running is None else self.running
        self.diverged_at = torch.full((n,), -1, device=device) if self.diverged_at is None else self.diverged_at
        self.diverged = self.diverged or [False] * n
        self.start_distances = (
            self.model.distances().values.cpu() if self.start_distances is None else self.start_distances
        )

    def new_optimizer(self) -> None:
        """A fresh optimizer state for the model (at a phase switch: its parameters are new coordinates)."""
        self.optimizer = Optimizer(self.rule, self.model.flat)

    def after_step(self, running: torch.Tensor) -> None:
        """After a step: the seeds that took it (on the device); a seed that diverged in it keeps that step."""
        self.diverged_at = torch.where(self.running & ~running, self.step, self.diverged_at)
        self.running = running

    def new_order(self, n: int, shuffle: bool) -> None:
        """Each seed's data order for the epoch that starts now."""
        orders = [torch.randperm(n, generator=g) if shuffle else torch.arange(n) for g in self.order_gens]
        self.order = torch.stack(orders).to(self.running.device)

    def batch(self, data: Data, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Each seed's next batch: x (N, B, C, H, W), y (N, B)."""
        idx = self.order[:, self.position : self.position + batch_size]
        return data.x_train[idx], data.y_train[idx]

    def newly_diverged(self) -> list[tuple[int, int]]:
        """Read ``running`` on the host (a device sync): (seed index, step) of each seed diverged since the last look."""
        newly = [k for k, a in enumerate(self.running.tolist()) if not a and not self.diverged[k]]
        died = self.diverged_at.tolist() if newly else []
        for k in newly:
            self.diverged[k] = True
        return [(k, died[k]) for k in newly]

    def state_dict(self) -> dict:
        return {
            "config_hash": self.config_hash,
            "seeds": list(self.seed_ids),
            "step": self.step,
            "epoch": self.epoch,
            "position": self.position,
            "phase": self.phase,
            "order": self.order.cpu() if self.order is not None else torch.zeros(0, dtype=torch.long),
            "model": self.model.state_dict(),
            "twin": self.twin.state_dict() if self.twin is not None else {},
            "coordinates": self.model.coordinates,  # of θ in E (SPEC §12.3), None in L
            "optimizer": self.optimizer.state_dict(),
            "twin_optimizer": self.twin_optimizer.state_dict() if self.twin_optimizer is not None else {},
            "order_gens": [g.get_state() for g in self.order_gens],
            "aug_gens": [g.get_state() for g in self.aug_gens],
            # the checkpoint's keys keep their first names, so older checkpoints resume
            "alive": self.running.cpu(),
            "died_at": self.diverged_at.cpu(),
            "stopped": list(self.diverged),
            "start": self.start_distances,
            "threads": torch.get_num_threads(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Load a checkpoint into a state whose model is already built for ``state['phase']``."""
        device = self.running.device
        self.step, self.epoch, self.position = state["step"], state["epoch"], state["position"]
        self.phase = state["phase"]
        self.order = state["order"].to(device) if state["order"].numel() else None
        saved = state.get("coordinates", "orthonormal" if self.model.constrain else None)  # (older: orthonormal)
        if saved != self.model.coordinates:  # θ of the same shape, another meaning: refuse, never rescale silently
            names = {None: "L's entries", "orthonormal": "E's orthonormal coordinates", "tied": "E's tied orbit values"}
            raise ValueError(f"the checkpoint's θ are {names[saved]}, this run's {names[self.model.coordinates]}")
        self.model.load_state_dict(state["model"])
        if self.twin is not None:
            self.twin.load_state_dict(state["twin"])
        # (a checkpoint written before SPEC §12's optimizers is plain SGD's: no state)
        self.optimizer.load_state_dict(state.get("optimizer", {"name": "sgd", "steps": state["step"]}))
        if self.twin_optimizer is not None:
            self.twin_optimizer.load_state_dict(state.get("twin_optimizer", {"name": "sgd", "steps": state["step"]}))
        for g, s in zip(self.order_gens, state["order_gens"], strict=True):
            g.set_state(s)
        for g, s in zip(self.aug_gens, state["aug_gens"], strict=True):
            g.set_state(s)
        self.running = state["alive"].to(device)
        self.diverged_at = state["died_at"].to(device)
        self.diverged = list(state["stopped"])
        self.start_distances = state["start"]
