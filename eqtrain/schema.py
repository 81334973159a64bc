"""The structured config schema: every key, its type and its default, in one place.

The dataclasses are the single source of the defaults and types; the YAML files in
``configs/`` only select and adjust them (a model preset names what differs from the paper CNN,
a mode file names a row of the mode table in ``eqtrain.training.modes``). The command line
registers them in Hydra's ConfigStore; being typed and closed (struct mode), a typo such as
``gamm=0.1`` fails at composition. Below the command line the code sees these dataclasses as
typed Python objects (``OmegaConf.to_object``), never the raw Hydra config.

A leaf module: no torch, no Hydra, nothing of eqtrain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, List, Optional

AUGMENT_KINDS = ("random", "orbit")  # SPEC §4: one random g per image per step, or the whole orbit
OPTIMIZERS = ("sgd", "adam", "adamw")  # SPEC §12: torch.optim's SGD (plain, heavy ball, Nesterov), Adam, AdamW
# E's coordinates in an equivariant model (SPEC §12.3): its orthonormal basis (§3) or its orbit values
COORDINATES = ("orthonormal", "tied")
LR_RULE = "use a finite number > 0"  # for a run's lr and eqtrain-analyze --lr alike


def valid_lr(lr: float) -> bool:
    """Whether ``lr`` can be a step size: finite and > 0 (``LR_RULE``)."""
    return math.isfinite(lr) and lr > 0


DEFAULT_GAMMA = 10.0  # γ of the regularized modes when ``gamma`` is left unset (docs/design.md: the default run)
DEFAULT_GAMMA_F = 1.0  # γ_f of the function-penalized modes (augfn, nomfn) when ``gamma_f`` is left unset
LOGITS = "logits"  # in ``gamma_f_layers``: the network's output (the hidden layers are named conv1, conv2, ...)


def penalty_layers(n_convs: int) -> tuple[str, ...]:
    """The names ``gamma_f_layers`` may list for a network of ``n_convs`` conv blocks."""
    return (*(f"conv{i}" for i in range(1, n_convs + 1)), LOGITS)


@dataclass
class DatasetConfig:
    name: str = "digits"
    data_dir: str = "data"  # MNIST family: <data_dir>/MNIST/raw/...; mnist_rot: its .amat files; cifar10: its folder
    download: bool = False  # the MNIST family only (torchvision's mirrors)
    image_size: Any = 28  # an int (square) or [h, w]; digits are upscaled from 8x8; null = native size
    train_limit: Optional[int] = None  # first N training images only (quick runs)
    test_limit: Optional[int] = None
    shuffle: bool = True  # a fresh seeded order every epoch; false = in order, as in the paper
    normalize: bool = False  # standardise with the training set's scalar mean and std
    rotate: str = "none"  # none | continuous: each image turned once by its own uniform angle (data, SPEC §11)
    rotate_seed: int = 0  # seed of those angles; independent of the run's seed, fixed streams for train and test
    # N: hold out the last N training images (after train_limit) and evaluate on them in place of the test set
    # (a recipe or γ chosen on them never saw a test image); the acc/test* metrics are then validation figures
    validation: Optional[int] = None


@dataclass
class ModelConfig:
    name: str = "paper_cnn"
    channels: List[int] = field(default_factory=lambda: [16, 16])  # per conv: fields (a regular field = |G| channels)
    fibers: Any = "trivial"  # trivial | regular | one per conv: the hidden layers' field type (SPEC §9)
    kernel_size: int = 3
    support: Any = "full"  # full | cross | skewed | an explicit kxk list of 0/1
    parametrization: str = "orthogonal"  # orthogonal | basis
    basis_seed: int = 0  # seed of the random basis of parametrization=basis
    activation: str = "tanh"  # tanh | relu | gelu | sigmoid
    pool: Any = 2  # pooling factor after each conv: an int or one per conv (1 = none)
    pool_kind: str = "avg"  # avg | max: that pooling, over aligned blocks (exact under G on sizes it divides)
    stride: Any = 1  # conv stride: an int or one per conv
    padding: str = "same"  # same (zero padding k//2, size kept) | valid (none: each conv trims k-1; Cohen & Welling)
    layernorm: bool = True  # LayerNorm over (H, W) without affine after each block; model.norm, when set, overrides
    norm: Optional[str] = None  # layernorm | batchnorm (per field) | batchnorm_channel | none | null (model.layernorm)
    group_pool: bool = False  # before the head: max over each field's |G| channels, then mean over (H, W) (SPEC §11)
    bias: bool = False
    bn_stats: str = "batch"  # batch norm's statistics in evaluation: batch (the chunk's own) | running (SPEC §12)
    bn_momentum: float = 0.1  # running statistics: r <- (1 - m)·r + m·(the batch's), torch's convention
    bn_affine: bool = False  # a learnable scale and shift per field after the batch norm (invariant: not part of A)
    equivariant_coordinates: str = "auto"  # E's coordinates: auto (by optimizer) | orthonormal | tied (SPEC §12.3)


@dataclass
class GroupConfig:
    name: str = "c4"  # c4 | c2 | d4 | flip


@dataclass
class ModeConfig:
    """A row of the table of SPEC §4, by name; the table itself is ``eqtrain.training.modes.MODES``."""

    name: str = "augreg"


@dataclass
class InitConfig:
    scheme: str = "standard"  # standard (Kaiming-uniform in L) | perturbed_equivariant | reference
    sigma: float = 1e-3  # std of the perturbation orthogonal to E


@dataclass
class OptimizerConfig:
    """The update rule (SPEC §12); the step size, its schedule and the weight decay are top-level keys."""

    name: str = "sgd"  # sgd (plain, heavy-ball or Nesterov by `momentum`) | adam | adamw
    momentum: float = 0.0  # sgd: β of the heavy ball (0: plain SGD, the paper's)
    nesterov: bool = False  # sgd: Nesterov's momentum (needs momentum > 0)
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])  # adam, adamw: β₁, β₂
    eps: float = 1e-8  # adam, adamw: ε of the denominator
    decoupled: Optional[bool] = None  # weight decay A <- (1 - ηλ)A (true) or added to the gradient; null: adamw only


@dataclass
class PhaseConfig:
    """One phase of a run made of phases (e.g. equivariant, then augmented)."""

    mode: str = "equivariant"  # a mode name (nominal, augmented, equivariant, augreg, nomreg)
    epochs: int = 1
    augment: Optional[str] = None  # null = the top-level `augment`


@dataclass
class SearchConfig:
    """What a hyperparameter search (hparams_search=...) optimises: the value the run returns."""

    metric: str = "acc/test_orbit"
    max_dist_rel: Optional[float] = None  # runs with a larger final dist_to_E_rel/total score metric - 1


@dataclass
class Config:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    group: GroupConfig = field(default_factory=GroupConfig)
    mode: ModeConfig = field(default_factory=ModeConfig)
    init: InitConfig = field(default_factory=InitConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    gamma: Optional[float] = None  # weight of γΓ; unset = DEFAULT_GAMMA in augreg / nomreg
    gamma_schedule: str = "constant"  # constant | linear | exp | cosine: γ_t ramps from gamma_start to gamma
    gamma_start: float = 0.0  # γ at step 0 of a ramp (exp needs > 0)
    gamma_ramp_epochs: float = 0.0  # length of the ramp in epochs (fractions allowed) ...
    gamma_ramp_steps: Optional[int] = None  # ... or in steps (takes precedence when set)
    # the function-space penalty γ_f·mean_x,g Σ_l ‖φ_l(g·x) − ρ_l(g)φ_l(x)‖² (modes augfn, nomfn; docs/theory.md)
    gamma_f: Optional[float] = None  # its strength; unset = DEFAULT_GAMMA_F in augfn / nomfn
    gamma_f_layers: List[str] = field(default_factory=lambda: [LOGITS])  # its layers: conv1, conv2, ..., logits
    seed: int = 0
    seeds: int = 1  # > 1: train seeds seed .. seed+seeds-1 together as one vectorised ensemble
    epochs: int = 10
    batch_size: int = 10
    lr: float = 0.02  # the step size η (the peak of lr_schedule)
    weight_decay: float = 0.0  # λ: of λ/2·‖A‖² and the biases (coupled), or A <- (1 - ηλ)A (optimizer.decoupled)
    lr_schedule: str = "constant"  # constant | step | exp | cosine (SPEC §12), after lr_warmup_epochs
    lr_decay: Optional[float] = None  # step: η·decay every lr_step_epochs epochs; exp: η·decay^epoch; null: 0.1, 0.9
    lr_step_epochs: int = 30  # step: epochs between decays
    lr_min: float = 0.0  # cosine: η_t falls from lr to lr_min at the last step
    lr_warmup_epochs: float = 0.0  # a linear warm-up from η/steps to η over this many epochs (fractions allowed)
    augment: str = "random"  # random | orbit (used by the augmented modes)
    data_scale: float = 1.0  # factor on the data term; the paper's objective uses 1/batch_size
    max_steps: Optional[int] = None  # stop after this many SGD steps
    log_every: int = 1  # per-step scalars every this many steps
    eval_every: int = 1  # evaluate (SPEC §7's accuracies and errors) every this many epochs, and at the end
    eval_train_images: Optional[int] = None  # acc/train on the first N training images; null = all of them
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "float32"  # float32 | float64
    threads: Optional[int] = None  # torch intra-op threads; null = torch's default
    phases: List[PhaseConfig] = field(default_factory=list)  # non-empty: overrides mode and epochs
    twin: bool = False  # train an equivariant twin from Π_E(A₀) on the same batches (twin/dist)
    resume: Any = None  # null | true (this run dir) | auto (if a checkpoint exists) | <run dir>
    force_resume: bool = False  # resume even from a checkpoint of a different config
    analyze: bool = False  # stability analysis (Hessian on E⊥) at the end of the run
    analyze_samples: int = 256  # training images (each under all of G) the Hessian is taken on
    analyze_iterations: int = 40  # Lanczos steps per subspace
    search: SearchConfig = field(default_factory=SearchConfig)
