"""Is E an attractor here? γ_crit and the stable window from the Hessian of R^aug (SPEC §5.4, §5.6, §12.4).

Near a point A* ∈ E that is stationary for the equivariant flow, the E⊥ part ξ of the ``augreg``
dynamics evolves as ξ̇ = −(H_⊥ + γI)ξ, H_⊥ = Π_{E⊥} ∇²R^aug(A*) Π_{E⊥}. So E attracts iff
γ > γ_crit = max(0, −λ_min(H_⊥)); in discrete time, plain SGD with step lr multiplies each
eigendirection by 1 − lr(λ + γ), which also needs γ < γ_max = 2/lr − λ_max(H_⊥). The run's optimizer
changes the upper end (SPEC §12.4): heavy-ball and Nesterov momentum widen it, a weight decay shifts
both ends, and Adam has no fixed linear step at all (``momentum_rate``, ``step_window``,
``gamma_window``). The same block on E, H_E = Π_E ∇²R^aug Π_E, tells whether A* is stable for the
equivariant flow itself (§5.6).

Geometry: weight space with the Frobenius inner product, restricted to L (the orthogonal
parametrization of SPEC §3), so "E⊥" below means L ∩ E⊥ = range(Π_L − Π_E). The extreme
eigenvalues come from Lanczos with full reorthogonalization on Hessian–vector products (double
backward, over data chunks) — never a dense Hessian. Everything is computed in float64 by
default, with the projections rebuilt in that dtype.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data.augment import Augmenter
from ..data.datasets import Data
from ..geometry.group import Group
from ..nets.cnn import EqCNN, logits_at
from ..nets.layers import NormBlock, NormState
from ..optim.optimizer import UpdateRule
from ..run.files import STABILITY_FILE, write_json
from ..run.progress import Counter
from ..run.tblog import RunLogger
from ..schema import LR_RULE, valid_lr

log = logging.getLogger(__name__)

# The stability/* scalars; gamma_max and the rates are null for Adam and AdamW, and then not logged.
TB_TAGS = (
    "lambda_min_perp",
    "lambda_max_perp",
    "gamma_crit",
    "gamma_max",
    "lambda_min_E",
    "grad_norm",
    "rate_min_perp",
    "rate_max_perp",
)

Weights = list[torch.Tensor]


class AugmentedRisk:
    """R^aug(A) on a fixed set of images, with every g·x present (exact orbit augmentation, SPEC §4).

    Holds a copy of seed k's point A*, biases and subspaces in ``dtype``; the model is not touched.
    ``data_scale`` multiplies the data term as the run's objective does (SPEC §8).
    """

    def __init__(
        self,
        model: EqCNN,
        x: torch.Tensor,
        y: torch.Tensor,
        group: Group,
        dtype: torch.dtype = torch.float64,
        data_scale: float = 1.0,
        chunk: int = 256,
        seed_index: int = 0,
    ) -> None:
        self.arch, self.group, self.data_scale, self.chunk = model.arch, group, data_scale, chunk
        k = seed_index
        with torch.no_grad():
            self.point = [a[k].detach().to(dtype) for a in model.weights()]
            self.biases = [b[k : k + 1].detach().to(dtype) for b in model.biases] if model.arch.bias else None
            # A batch norm as in training: the batch's statistics (the running ones are not touched), and
            # seed k's affine if any, held fixed like the biases
            state = model.norm_state(train=True, update=False)
            self.norm = (
                None if state is None else NormState(tuple(_seed_block(b, k, dtype) for b in state.blocks), True)
            )
        device = self.point[0].device
        # Float64-exact projections, rebuilt rather than cast from the model's (float32) ones.
        self.spaces = [s.rebuilt(dtype).to(device) for s in model.space]
        x = x.to(device, dtype)
        self.x, self.y = Augmenter(group, "orbit", x.shape[-2], x.shape[-1], device)(x, y.to(device))

    # -- the subspaces (per layer, Frobenius geometry) -----------------------------------------
    def project_l(self, v: Sequence[torch.Tensor]) -> Weights:
        return [s.project_l(a) for s, a in zip(self.spaces, v)]

    def project_e(self, v: Sequence[torch.Tensor]) -> Weights:
        return [s.project_e(a) for s, a in zip(self.spaces, v)]

    def project_perp(self, v: Sequence[torch.Tensor]) -> Weights:
        """Onto L ∩ E⊥: Π_L − Π_E, an orthogonal projector since E ⊂ L (SPEC §2)."""
        return [s.project_l(a) - s.project_e(a) for s, a in zip(self.spaces, v)]

    def dims(self) -> tuple[int, int]:
        """(dim E, dim L ∩ E⊥)."""
        dim_e = dim_perp = 0
        for s, a in zip(self.spaces, self.point):
            out_dim, in_dim = a.shape[:2]
            dim_e += s.dim_e(out_dim, in_dim)
            dim_perp += s.dim_l(out_dim, in_dim) - s.dim_e(out_dim, in_dim)
        return dim_e, dim_perp

    # -- R^aug and its derivatives ------------------------------------------------------------
    def _chunks(self):
        n = len(self.y)
        for start in range(0, n, self.chunk):
            x, y = self.x[start : start + self.chunk], self.y[start : start + self.chunk]
            yield x, y, self.data_scale * len(y) / n  # the mean over all samples, chunk by chunk

    def _leaves(self, weights: Sequence[torch.Tensor] | None) -> Weights:
        weights = self.point if weights is None else weights
        return [a.detach().requires_grad_() for a in weights]

    def _chunk_loss(self, weights: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits_at(self.arch, [a[None] for a in weights], x, self.biases, norm=self.norm)[0], y)

    @torch.no_grad()
    def loss(self, weights: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """R^aug(A), computed without a gradient: the same forward passes as ``gradient``'s (``nets.conv``
        routes a conv alike with and without one)."""
        weights = self.point if weights is None else weights
        return sum(w * self._chunk_loss(weights, x, y) for x, y, w in self._chunks())

    def gradient(self, weights: Sequence[torch.Tensor] | None = None) -> Weights:
        """∇R^aug(A) in weight space (not yet restricted to L)."""
        leaves = self._leaves(weights)
        total = [torch.zeros_like(a) for a in leaves]
        for x, y, w in self._chunks():
            with torch.enable_grad():
                loss = self._chunk_loss(leaves, x, y)
            for t, g in zip(total, torch.autograd.grad(loss, leaves)):
                t.add_(g, alpha=w)
        return total

    def hvp(self, v: Sequence[torch.Tensor], weights: Sequence[torch.Tensor] | None = None) -> Weights:
        """∇²R^aug(A)·v by double backward, chunk by chunk (no Hessian is ever formed).

        Double backward measured ~5x faster than ``torch.func``'s jvp-of-grad on CPU here.
        """
        leaves = self._leaves(weights)
        v = [t.to(leaves[0]) for t in v]
        total = [torch.zeros_like(a) for a in leaves]
        for x, y, w in self._chunks():
            with torch.enable_grad():
                grads = torch.autograd.grad(self._chunk_loss(leaves, x, y), leaves, create_graph=True)
                hv = torch.autograd.grad(grads, leaves, v)
            for t, h in zip(total, hv):
                t.add_(h, alpha=w)
        return total


def _flat(v: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in v])


def _unflat(flat: torch.Tensor, like: Sequence[torch.Tensor]) -> Weights:
    out, start = [], 0
    for t in like:
        out.append(flat[start : start + t.numel()].view_as(t))
        start += t.numel()
    return out


def lanczos(
    matvec: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor, iterations: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ritz values of a symmetric operator and their residual norms ‖Hy − θy‖, ascending.

    Full reorthogonalization (Gram–Schmidt twice against every Lanczos vector) keeps the basis
    orthogonal, so no spurious copies of converged eigenvalues appear. ``start`` must lie in the
    operator's invariant subspace; the Krylov space stays in it. Stops early on an invariant
    subspace (then the Ritz values are exact eigenvalues).
    """
    q = start / start.norm()
    basis, alphas, betas = [q], [], []
    beta = start.new_zeros(())
    for j in range(iterations):
        w = matvec(q)
        alphas.append(torch.dot(q, w))
        stacked = torch.stack(basis)
        for _ in range(2):
            w = w - stacked.T @ (stacked @ w)
        beta = w.norm()
        scale = max(abs(float(a)) for a in alphas) + max((float(b) for b in betas), default=0.0)
        if j == iterations - 1 or beta <= 1e-12 * scale:
            break
        betas.append(beta)
        q = w / beta
        basis.append(q)
    k = len(alphas)
    tri = torch.diag(torch.stack(alphas))
    if k > 1:
        off = torch.stack(betas[: k - 1])
        tri = tri + torch.diag(off, 1) + torch.diag(off, -1)
    theta, s = torch.linalg.eigh(tri)
    return theta, beta * s[-1].abs()


def extreme_eigenvalues(
    hvp: Callable[[Weights], Weights],
    project: Callable[[Sequence[torch.Tensor]], Weights],
    like: Sequence[torch.Tensor],
    iterations: int,
    seed: int = 0,
    tick: Callable[[], None] = lambda: None,
) -> dict[str, float]:
    """λ_min and λ_max of P ∇² P on range(P), with their Ritz residuals, from a seeded start; ``tick`` after
    every Hessian-vector product (progress)."""
    generator = torch.Generator().manual_seed(seed)
    raw = [torch.randn(t.shape, generator=generator, dtype=torch.float64).to(t) for t in like]
    start = _flat(project(raw))
    if start.norm() == 0:
        raise ValueError("the subspace is {0}: there is no eigenvalue to compute")

    def matvec(q: torch.Tensor) -> torch.Tensor:
        product = _flat(project(hvp(project(_unflat(q, like)))))
        tick()
        return product

    theta, residual = lanczos(matvec, start, iterations)
    return {
        "min": theta[0].item(),
        "max": theta[-1].item(),
        "residual_min": residual[0].item(),
        "residual_max": residual[-1].item(),
        "iterations": len(theta),
    }


def _orthonormal_rows(basis: torch.Tensor | None) -> bool:
    if basis is None:
        return True
    gram = basis.double() @ basis.double().T
    return bool(torch.allclose(gram, torch.eye(len(gram), dtype=gram.dtype, device=gram.device), atol=1e-6))


def _seed_block(block: NormBlock, k: int, dtype: torch.dtype) -> NormBlock:
    """Seed k's affine of one batch norm, in ``dtype``, without running statistics (training normalizes with
    the batch's)."""
    scale, shift = (None if t is None else t[k : k + 1].detach().to(dtype) for t in (block.scale, block.shift))
    return NormBlock(scale=scale, shift=shift)


# -- the linear step of each optimizer on one E⊥ eigendirection (SPEC §12.4) ------------------------
def _characteristic(h: float, beta: float, nesterov: bool, d: float) -> tuple[float, float]:
    """(b, c) of z² − b·z + c = 0 for h = ημ, momentum β and a decoupled shrink d = ηλ (``momentum_rate``)."""
    if nesterov:
        return 1 + beta - d - (1 + beta) * h, beta * (1 - d - h)
    return 1 + beta - d - h, beta * (1 - d)


def momentum_rate(
    eta: float, mu: float, beta: float = 0.0, nesterov: bool = False, decoupled_decay: float = 0.0
) -> float:
    """The factor by which SGD shrinks an eigendirection of curvature μ per step (SPEC §12.4): max|z| over
    the roots of its characteristic polynomial, < 1 iff the direction contracts.

    μ = λ + γ (+ λ of a coupled weight decay), λ an eigenvalue of H_⊥; step η, momentum β. On ½μξ², the
    update of torch.optim.SGD without dampening (``optim.optimizer``), v_t = βv_{t−1} + μξ_t, is
      heavy ball  ξ_{t+1} = (1 − d)ξ_t − ηv_t
                  = (1 + β − d − ημ)ξ_t − β(1 − d)ξ_{t−1}:  z² − (1 + β − d − ημ)z + β(1 − d) = 0,
      Nesterov    ξ_{t+1} = (1 − d)ξ_t − η(μξ_t + βv_t)
                  = (1 + β − d − (1 + β)ημ)ξ_t − β(1 − d − ημ)ξ_{t−1}:
                  z² − (1 + β − d − (1 + β)ημ)z + β(1 − d − ημ) = 0,
    with d = η·``decoupled_decay`` (A ← (1 − d)A before the step). For d = 0 these are SPEC §12.4's
    z² − (1 + β − ημ)z + β = 0 (a rate never below √β) and z² − (1 + β)(1 − ημ)z + β(1 − ημ) = 0 (the
    gradient step taken at the look-ahead ξ_t + β(ξ_t − ξ_{t−1})). With β = 0 both are |1 − ημ − d|:
    plain SGD (§5.4), where a decoupled decay acts as a coupled one; with momentum it does not (the
    shrink also scales the remembered steps).
    """
    b, c = _characteristic(eta * mu, beta, nesterov, eta * decoupled_decay)
    disc = b * b - 4 * c
    return (abs(b) + math.sqrt(disc)) / 2 if disc >= 0 else math.sqrt(c)  # real roots, or a complex pair


def step_window(
    eta: float, beta: float = 0.0, nesterov: bool = False, decoupled_decay: float = 0.0
) -> tuple[float, float]:
    """The open interval of curvatures μ (``momentum_rate``'s) that SGD with step η contracts (SPEC §12.4).

    By the Jury conditions on the characteristic polynomial (p(1) > 0, p(−1) > 0, |c| < 1, the last
    implied here for 0 ≤ β < 1 and 0 ≤ ηλ < 1):
      heavy ball  −(1 − β)λ < μ < (1 + β)(2 − ηλ)/η,
      Nesterov    −(1 − β)λ < μ < (1 + β)(2 − ηλ)/((1 + 2β)η),
    λ = ``decoupled_decay``; without it, 0 < ημ < 2(1 + β) and 0 < ημ < 2(1 + β)/(1 + 2β); with β = 0 both
    are 0 < η(μ + λ) < 2, plain SGD's. The rate is quasi-convex in μ (falls, then rises), so over a
    spectrum [λ_min, λ_max] of H_⊥ the slowest direction is one of the two ends.
    """
    hi = (1 + beta) * (2 - eta * decoupled_decay) / eta
    return -(1 - beta) * decoupled_decay, hi / (1 + 2 * beta) if nesterov else hi


def gamma_window(lambda_min: float, lambda_max: float, lr: float, rule: UpdateRule) -> tuple[float, float | None]:
    """(γ_crit, γ_max) of ``rule`` with step ``lr`` on a spectrum [λ_min, λ_max] of H_⊥ (SPEC §5.4, §12.4).

    SGD, plain or with momentum: the γ for which every μ = λ + γ + λ_coupled lies in ``step_window``, so
    γ_crit = max(0, −λ_min − λ_coupled − (1 − β)λ_decoupled) and, for heavy-ball momentum without a
    decoupled decay, γ_max = 2(1 + β)/η − λ_max − λ_coupled; plain SGD's is 2/η − λ_max(H_⊥).
    Adam and AdamW: no fixed linear step exists (each entry's step is divided by a running average of its
    squared gradients), so γ_max is None. γ_crit is the flow's: a fixed positive preconditioner that is
    constant on orbits keeps E⊥ and, by Sylvester's law of inertia, the sign of every mode, so E attracts
    iff H_⊥ + γ + λ_coupled > 0. AdamW's decoupled decay only helps and is not counted.
    """
    if rule.adaptive:
        return max(0.0, -lambda_min - rule.coupled_decay), None
    lo, hi = step_window(lr, rule.momentum, rule.nesterov, rule.decoupled_decay)
    return max(0.0, lo - rule.coupled_decay - lambda_min), hi - rule.coupled_decay - lambda_max


def contraction_rates(
    lambda_min: float, lambda_max: float, lr: float, rule: UpdateRule, gamma: float
) -> tuple[float | None, float | None]:
    """``momentum_rate`` of the directions λ_min and λ_max of H_⊥ at γ (SPEC §12.4); None for Adam and AdamW."""
    if rule.adaptive:
        return None, None
    return tuple(
        momentum_rate(lr, lam + gamma + rule.coupled_decay, rule.momentum, rule.nesterov, rule.decoupled_decay)
        for lam in (lambda_min, lambda_max)
    )


def analyze(
    model: EqCNN,
    data: Data,
    group: Group,
    lr: float,
    samples: int = 256,
    iterations: int = 40,
    seed: int = 0,
    data_scale: float = 1.0,
    dtype: torch.dtype = torch.float64,
    rtol: float = 1e-6,
    chunk: int = 256,
    seed_index: int = 0,
    rule: UpdateRule | None = None,
    gamma: float = 0.0,
    lr_source: str = "given",
) -> dict[str, object]:
    """H_⊥ and H_E of R^aug at the model's weights on the first ``samples`` training images.

    Returns λ_min/λ_max of both blocks, the window (γ_crit, γ_max) of the optimizer ``rule`` (default
    plain SGD: max(0, −λ_min⊥) and 2/lr − λ_max⊥, SPEC §5.4; others ``gamma_window``, §12.4; γ_max None
    for Adam), the predicted contraction per step at ``gamma`` of the λ_min⊥ and λ_max⊥ directions
    (``rate_min_perp``, ``rate_max_perp``; None for Adam), the gradient norms (how far from stationary),
    the distance to E, and the two stability verdicts (a λ_min ≥ −rtol·max|λ| counts as ≥ 0).
    ``chunk`` bounds the augmented images per double-backward pass (memory, not the result);
    ``lr_source`` says in the report where ``lr`` came from.
    """
    _check(lr, samples, iterations, gamma)
    rule = UpdateRule() if rule is None else rule
    samples = min(samples, len(data.y_train))
    orthogonal = _orthogonal(model)
    x, y = data.x_train[:samples], data.y_train[:samples]
    risk = AugmentedRisk(model, x, y, group, dtype, data_scale, chunk, seed_index)
    dim_e, dim_perp = risk.dims()
    counts = (min(iterations, dim_perp), min(iterations, dim_e))
    progress = Counter(sum(counts), "HVP", "Hessian on E-perp and E")  # minutes on a CPU: say how many
    try:
        perp = extreme_eigenvalues(risk.hvp, risk.project_perp, risk.point, counts[0], seed, progress.update)
        on_e = extreme_eigenvalues(risk.hvp, risk.project_e, risk.point, counts[1], seed, progress.update)
    finally:
        progress.close()
    tol = rtol * max(abs(perp["min"]), abs(perp["max"]), abs(on_e["min"]), abs(on_e["max"]))
    gamma_crit, gamma_max = gamma_window(perp["min"], perp["max"], lr, rule)
    rate_min, rate_max = contraction_rates(perp["min"], perp["max"], lr, rule, gamma)
    return {
        "lambda_min_perp": perp["min"],
        "lambda_max_perp": perp["max"],
        "gamma_crit": gamma_crit,
        "gamma_max": gamma_max,
        "optimizer": rule.describe(),
        "update_rule": dataclasses.asdict(rule),
        "gamma": gamma,
        "rate_min_perp": rate_min,
        "rate_max_perp": rate_max,
        "lambda_min_E": on_e["min"],
        "lambda_max_E": on_e["max"],
        "residual_min_perp": perp["residual_min"],
        "residual_min_E": on_e["residual_min"],
        "stable_for_equivariant": on_e["min"] >= -tol,
        "stable_for_augmented": perp["min"] >= -tol,
        "tol": tol,
        **point_report(risk),
        "orthogonal_parametrization": orthogonal,
        "lr": lr,
        "lr_source": lr_source,
        "data_scale": data_scale,
        "samples": samples,
        "iterations": perp["iterations"],
        "iterations_E": on_e["iterations"],
        "dim_E": dim_e,
        "dim_perp": dim_perp,
        "seed": seed,
        "dtype": str(dtype).removeprefix("torch."),
    }


def _check(lr: float, samples: int, iterations: int, gamma: float) -> None:
    if not valid_lr(lr):
        raise ValueError(f"lr={lr!r} is not valid: {LR_RULE}")
    if samples < 1 or iterations < 1:
        raise ValueError(f"samples={samples} and iterations={iterations} must be positive ints")
    if not math.isfinite(gamma):
        raise ValueError(f"gamma={gamma!r} is not valid: use a finite number")


def _orthogonal(model: EqCNN) -> bool:
    """Whether every parametrization is orthogonal; if not, say what that means for the γ window."""
    orthogonal = all(_orthonormal_rows(m.basis) for m in model.maps)
    if not orthogonal:
        log.warning(
            "model.parametrization is not orthogonal: SGD on its coordinates follows another geometry than "
            "the weight-space Hessian analysed here, so the gamma window of SPEC §5.4 is only indicative (§3)"
        )
    return orthogonal


@torch.no_grad()
def point_report(risk: AugmentedRisk) -> dict[str, float]:
    """How far the point is from stationary (‖Π_L∇R^aug‖ and its E and E⊥ parts), its loss and distance to E."""
    gradient = risk.project_l(risk.gradient())
    dist = _flat([s.project_perp(a) for s, a in zip(risk.spaces, risk.point)]).norm().item()
    norm = _flat(risk.point).norm().item()
    return {
        "grad_norm": _flat(gradient).norm().item(),
        "grad_norm_E": _flat(risk.project_e(gradient)).norm().item(),
        "grad_norm_perp": _flat(risk.project_perp(gradient)).norm().item(),
        "loss_aug": risk.loss().item(),
        "dist_to_E": dist,
        "dist_to_E_rel": dist / norm if norm else 0.0,
    }


def analyze_run(
    model: EqCNN,
    data: Data,
    group: Group,
    lr: float,
    run_dir: str | Path,
    step: int,
    logger: RunLogger | None = None,
    samples: int = 256,
    iterations: int = 40,
    seed: int = 0,
    data_scale: float = 1.0,
    seed_index: int = 0,
    rule: UpdateRule | None = None,
    gamma: float = 0.0,
    lr_source: str = "given",
) -> dict[str, object]:
    """``analyze``, then write RUN_DIR/stability.json and the ``stability/*`` scalars at ``step``.

    With an open ``logger`` the scalars go through it; otherwise a new event file is added. A value that
    does not exist for the optimizer (Adam's γ_max and rates: null in the JSON) is not logged.
    """
    result = analyze(
        model, data, group, lr, samples, iterations, seed, data_scale, seed_index=seed_index, rule=rule,
        gamma=gamma, lr_source=lr_source,
    )  # fmt: skip
    result["step"] = step
    write_json(Path(run_dir) / STABILITY_FILE, result)
    scalars = {f"stability/{tag}": float(result[tag]) for tag in TB_TAGS if result[tag] is not None}
    own = logger is None  # else a new event file: TensorBoard reads all of a directory's files as one run
    logger = RunLogger(run_dir) if own else logger
    logger.log(step, scalars)
    if own:
        logger.close()
    return result


def summary(result: dict[str, object]) -> str:
    """A few lines a person can read: the two verdicts, the window of γ for the run's optimizer and the
    predicted contraction per step (SPEC §5.4, §12.4)."""
    r = result
    rule = _rule_of(r)
    crit_formula, max_formula = _window_formulas(rule)
    lo, hi = r["gamma_crit"], r["gamma_max"]
    adam = "AdamW" if rule.name == "adamw" else "Adam"
    if hi is None:
        window = f"gamma > {lo:.4g} (no upper end from this analysis: {adam} has no fixed linear step)"
    else:
        window = f"({lo:.4g}, {hi:.4g})" if lo < hi else f"empty (gamma_crit {lo:.4g} >= gamma_max {hi:.4g})"
    scaled = f"{r['data_scale']:g}·" if r["data_scale"] != 1 else ""
    yes = {True: "yes", False: "no"}
    if hi is None:
        upper = [
            f"{adam} has no fixed linear step window: each entry's step is divided by a running average of its "
            "squared gradients, so gamma_max is not reported (null);",
            "what is measured (dist_to_E along training with this gamma) is what counts.",
        ]
    else:
        sgd = "SGD with" if not rule.momentum else f"SGD with {_momentum_name(rule)} momentum {rule.momentum:g} and"
        upper = [
            f"{sgd} lr {r['lr']:g} also needs gamma < gamma_max = {max_formula} = {hi:.4g} "
            "(larger gamma overshoots and oscillates away from E)."
        ]
    lines = [
        f"Hessian of {scaled}R^aug on {r['samples']} images x all of G, {r['iterations']} Lanczos steps "
        f"(dim E = {r['dim_E']}, dim E-perp = {r['dim_perp']}):",
        f"  on E-perp: lambda_min {r['lambda_min_perp']:.4g}, lambda_max {r['lambda_max_perp']:.4g}",
        f"  on E:      lambda_min {r['lambda_min_E']:.4g}, lambda_max {r['lambda_max_E']:.4g}",
        f"  |grad R^aug| {r['grad_norm']:.3g} (E part {r['grad_norm_E']:.3g}; the analysis assumes a "
        f"stationary point of the equivariant flow), dist to E {r['dist_to_E']:.3g}",
        f"augreg pulls the weights back to E iff gamma > gamma_crit = {crit_formula} = {lo:.4g};",
        *upper,
        f"Stable window for gamma: {window}.",
        f"Stable for the equivariant flow: {yes[r['stable_for_equivariant']]}; "
        f"for the augmented flow (gamma = 0): {yes[r['stable_for_augmented']]}.",
        f"Optimizer: {r.get('optimizer', rule.describe())}; lr {r['lr']:g} ({r.get('lr_source', 'given')}).",
    ]
    if r.get("rate_min_perp") is not None:
        lines.append(
            f"Predicted factor on E-perp per step at gamma {r['gamma']:g}: {r['rate_min_perp']:.4g} along "
            f"lambda_min_perp, {r['rate_max_perp']:.4g} along lambda_max_perp (< 1 contracts; the larger "
            "is d(A)'s rate once the rest has died out)."
        )
    return "\n".join(lines)


def _rule_of(result: dict[str, object]) -> UpdateRule:
    """The optimizer a result was computed for (plain SGD for a result from before SPEC §12)."""
    fields = dict(result.get("update_rule") or {})
    if "betas" in fields:
        fields["betas"] = tuple(fields["betas"])
    return UpdateRule(**fields)


def _momentum_name(rule: UpdateRule) -> str:
    return "Nesterov" if rule.nesterov else "heavy-ball"


def _window_formulas(rule: UpdateRule) -> tuple[str, str]:
    """γ_crit's and γ_max's formulas for ``rule`` as ``gamma_window`` computes them, in the summary's words."""
    decay = rule.weight_decay
    coupled = " - weight_decay" if decay and not rule.decoupled else ""
    if rule.adaptive:
        return f"max(0, -lambda_min_perp{coupled})", ""
    beta = rule.momentum
    decoupled = decay and rule.decoupled
    if decoupled and beta:  # the shrink also scales the remembered steps (``momentum_rate``)
        crit = "max(0, -lambda_min_perp - (1-beta)*weight_decay)"
        step = "(1+beta)(2/lr - weight_decay)" + ("/(1+2beta)" if rule.nesterov else "")
    else:
        crit = f"max(0, -lambda_min_perp{' - weight_decay' if decay else ''})"
        step = "2/lr" if not beta else "2(1+beta)/((1+2beta)lr)" if rule.nesterov else "2(1+beta)/lr"
        step += " - weight_decay" if decay else ""
    return crit, f"{step} - lambda_max_perp"
