"""The update rules of SPEC §12 — plain, heavy-ball and Nesterov SGD, Adam and AdamW, with weight decay
coupled or decoupled — on the flat parameters of every seed at once.

The N seeds' parameters are one (N, P) tensor (``EqCNN.flat``) and so is each piece of optimizer state
(the momentum buffer, Adam's two moments): one update is a handful of whole-tensor kernels, whatever
the number of seeds and layers, and no seed's state depends on another's. The formulas and their order
of operations are torch.optim's (``SGD``, ``Adam``, ``AdamW``), so a seed trains as torch.optim would
train it, to round-off; torch.optim itself cannot be used here because it keeps one state per
parameter tensor and cannot freeze one seed of a tensor that holds thirty (docs/design.md, "Optimizers").

A step is proposed (``propose``: the new parameters, the new state held aside) and then committed for
the seeds that took it (``commit``): a seed whose loss or update is not finite keeps its parameters and
its state, frozen where it diverged, while the others go on.

Weight decay λ acts on the weights A and the biases: coupled, as the gradient of λ/2·‖A‖² (pulled back
to the parameters, like the regularizer's: in the orthonormal coordinates of §3 it is λθ, torch's
``weight_decay``; in tied orbit values λ|o|a, which keeps §12.3's match), or decoupled, A ← (1 − ηλ)A.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..schema import OPTIMIZERS

__all__ = ["OPTIMIZERS", "Optimizer", "UpdateRule"]
ADAPTIVE = ("adam", "adamw")  # normalise each entry's step (SPEC §12.2, §12.3)


@dataclass(frozen=True)
class UpdateRule:
    """What an optimizer does, without its state: the ``optimizer`` config group and ``weight_decay``."""

    name: str = "sgd"
    momentum: float = 0.0
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    decoupled: bool = False  # A ← (1 − ηλ)A rather than λA added to the gradient

    @property
    def adaptive(self) -> bool:
        return self.name in ADAPTIVE

    @property
    def coupled_decay(self) -> float:
        """λ of the penalty λ/2·‖A‖² added to the objective (0 when decoupled or none)."""
        return 0.0 if self.decoupled else self.weight_decay

    @property
    def decoupled_decay(self) -> float:
        """λ of the shrink A ← (1 − ηλ)A before each step (0 when coupled or none)."""
        return self.weight_decay if self.decoupled else 0.0

    @property
    def state_names(self) -> tuple[str, ...]:
        if self.adaptive:
            return ("exp_avg", "exp_avg_sq")
        return ("momentum_buffer",) if self.momentum else ()

    def describe(self) -> str:
        """One line for the run's log: the rule and its numbers."""
        if self.adaptive:
            text = f"{self.name} (betas {self.betas[0]:g}, {self.betas[1]:g}, eps {self.eps:g})"
        elif self.momentum:
            text = f"sgd with {'Nesterov' if self.nesterov else 'heavy-ball'} momentum {self.momentum:g}"
        else:
            text = "plain sgd"
        if self.weight_decay:
            text += f", weight decay {self.weight_decay:g} ({'decoupled' if self.decoupled else 'coupled'})"
        return text


class Optimizer:
    """An ``UpdateRule`` and its state for N seeds: one (N, P) tensor per state name, zero at the start."""

    def __init__(self, rule: UpdateRule, flat: torch.Tensor) -> None:
        self.rule = rule
        self.steps = 0  # updates taken (Adam's bias correction); a frozen seed never updates again
        self.state = {name: torch.zeros_like(flat) for name in rule.state_names}
        self._proposed: dict[str, torch.Tensor] = {}

    def propose(self, flat: torch.Tensor, grad: torch.Tensor, lr: float) -> torch.Tensor:
        """The parameters after one step of size ``lr`` from ``flat`` along ``grad`` (N, P), a new tensor.

        ``grad`` already holds the coupled weight decay (``UpdateRule.coupled_decay``); it may be changed
        in place. The new state is held until ``commit``.
        """
        rule = self.rule
        self.steps += 1
        start = flat.mul(1 - lr * rule.weight_decay) if rule.decoupled and rule.weight_decay else flat
        if rule.adaptive:  # torch.optim.Adam / AdamW, their order of operations
            beta1, beta2 = rule.betas
            exp_avg = self.state["exp_avg"].lerp(grad, 1 - beta1)
            exp_avg_sq = self.state["exp_avg_sq"].mul(beta2).addcmul_(grad, grad, value=1 - beta2)
            self._proposed = {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
            step_size = lr / (1 - beta1**self.steps)
            denom = (exp_avg_sq.sqrt() / (1 - beta2**self.steps) ** 0.5).add_(rule.eps)
            return start.addcdiv(exp_avg, denom, value=-step_size)
        if rule.momentum:  # torch.optim.SGD without dampening: a zero buffer's first step is the gradient
            buf = self.state["momentum_buffer"].mul(rule.momentum).add_(grad)
            self._proposed = {"momentum_buffer": buf}
            grad = grad.add_(buf, alpha=rule.momentum) if rule.nesterov else buf
        return start.add(grad, alpha=-lr)

    def proposed_sums(self) -> torch.Tensor | None:
        """(N,): the sum of the proposed second moment of each seed (Adam), for the step's finiteness check:
        a gradient whose square overflows leaves the parameters finite (m/∞ = 0) but not the state."""
        v = self._proposed.get("exp_avg_sq")
        return None if v is None else v.sum(1)

    def commit(self, running: torch.Tensor) -> None:
        """Keep the proposed state of the seeds in ``running`` (N,) bool; the others keep theirs."""
        for name, new in self._proposed.items():
            torch.where(running[:, None], new, self.state[name], out=self.state[name])
        self._proposed = {}

    def state_dict(self) -> dict:
        return {"name": self.rule.name, "steps": self.steps, **{k: v.cpu() for k, v in self.state.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Load a checkpoint's state; it must be of this rule (its state names) and this model's shape."""
        names = set(state) - {"name", "steps"}
        if names != set(self.state):
            raise ValueError(
                f"the checkpoint's optimizer ({state.get('name')}) keeps {', '.join(sorted(names)) or 'no state'}, "
                f"optimizer.name={self.rule.name} with optimizer.momentum={self.rule.momentum:g} keeps "
                f"{', '.join(self.state) or 'none'}"
            )
        for name, value in self.state.items():
            if state[name].shape != value.shape:
                raise ValueError(
                    f"the checkpoint's optimizer state {name} has shape {tuple(state[name].shape)}, "
                    f"this model's parameters {tuple(value.shape)}"
                )
            value.copy_(state[name])
        self.steps = state["steps"]
