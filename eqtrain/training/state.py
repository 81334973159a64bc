"""The run's mutable state — one object, whose state dict is the checkpoint.

It holds where the run is (step, epoch, position in the epoch's data order, phase), the random
streams of every seed (data order, augmentation), the model (every seed's θ and biases), the
equivariant twin if any, and which seeds are still alive. Resuming loads it back, so an
interrupted run continues bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..data.datasets import Data
from ..nets.cnn import EqCNN


def generator(seed: int, stream: int) -> torch.Generator:
    """Independent, reproducible random streams per seed and purpose (1: data order, 2: augmentation)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + stream)


@dataclass
class RunState:
    seed_ids: tuple[int, ...]
    model: EqCNN
    twin: EqCNN | None = None
    config_hash: str = ""  # of the config that wrote it: a resume must match it
    step: int = 0
    epoch: int = 0
    position: int = 0  # images of the current epoch already used
    phase: int = 0
    order: torch.Tensor | None = None  # (N, n): each seed's data order this epoch
    order_gens: list[torch.Generator] = field(default_factory=list)
    aug_gens: list[torch.Generator] = field(default_factory=list)
    alive: torch.Tensor | None = None  # (N,) bool, on the device
    died_at: torch.Tensor | None = None  # (N,) long, on the device: the step a seed diverged at, or −1
    stopped: list[bool] = field(default_factory=list)  # per seed, as last read on the host
    start: torch.Tensor | None = None  # (N, layers + 2): the distances of A₀, for the end-of-run summary

    def __post_init__(self) -> None:
        n = len(self.seed_ids)
        self.order_gens = self.order_gens or [generator(s, 1) for s in self.seed_ids]
        self.aug_gens = self.aug_gens or [generator(s, 2) for s in self.seed_ids]
        device = self.model.maps[0].theta.device
        self.alive = torch.ones(n, dtype=torch.bool, device=device) if self.alive is None else self.alive
        self.died_at = torch.full((n,), -1, device=device) if self.died_at is None else self.died_at
        self.stopped = self.stopped or [False] * n
        self.start = self.model.distances().values.cpu() if self.start is None else self.start

    def record(self, alive: torch.Tensor) -> None:
        """After a step: the seeds that took it (on the device; a seed that just stopped keeps its step)."""
        self.died_at = torch.where(self.alive & ~alive, self.step, self.died_at)
        self.alive = alive

    def new_order(self, n: int, shuffle: bool) -> None:
        """Each seed's data order for the epoch that starts now."""
        orders = [torch.randperm(n, generator=g) if shuffle else torch.arange(n) for g in self.order_gens]
        self.order = torch.stack(orders).to(self.alive.device)

    def batch(self, data: Data, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Each seed's next batch: x (N, B, C, H, W), y (N, B)."""
        idx = self.order[:, self.position : self.position + batch_size]
        return data.x_train[idx], data.y_train[idx]

    def note_divergence(self) -> list[tuple[int, int]]:
        """Read ``alive`` on the host (a device sync): (seed index, step) of each seed stopped since the last look."""
        newly = [k for k, a in enumerate(self.alive.tolist()) if not a and not self.stopped[k]]
        died = self.died_at.tolist() if newly else []
        for k in newly:
            self.stopped[k] = True
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
            "order_gens": [g.get_state() for g in self.order_gens],
            "aug_gens": [g.get_state() for g in self.aug_gens],
            "alive": self.alive.cpu(),
            "died_at": self.died_at.cpu(),
            "stopped": list(self.stopped),
            "start": self.start,
            "threads": torch.get_num_threads(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Load a checkpoint into a state whose model is already built for ``state['phase']``."""
        device = self.alive.device
        self.step, self.epoch, self.position = state["step"], state["epoch"], state["position"]
        self.phase = state["phase"]
        self.order = state["order"].to(device) if state["order"].numel() else None
        self.model.load_state_dict(state["model"])
        if self.twin is not None:
            self.twin.load_state_dict(state["twin"])
        for g, s in zip(self.order_gens, state["order_gens"], strict=True):
            g.set_state(s)
        for g, s in zip(self.aug_gens, state["aug_gens"], strict=True):
            g.set_state(s)
        self.alive = state["alive"].to(device)
        self.died_at = state["died_at"].to(device)
        self.stopped = list(state["stopped"])
        self.start = state["start"]
