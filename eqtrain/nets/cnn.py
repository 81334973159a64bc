"""The CNNs of SPEC §1 and §8, built from a Group, a support and a parametrization.

Layers: conv k×k (zero padding k//2, or none) → average or max pool → activation → a
normalization (LayerNorm over (H, W) without affine by default, a per-field batch norm — with batch or
running statistics in evaluation and an optional affine, SPEC §12 — or none), repeated, then flatten →
linear head (optionally after pooling over the group and the pixels: SPEC §11's P4CNN). Every
learnable linear map is a ``ParametrizedMap`` paired with the ``LayerSpace`` that knows its E; the
forward pass only ever sees plain weight tensors, so a new group or parametrization touches no layer
code. The convolution with its pooling is in ``conv``, the parameter-free pieces in ``layers``.

Every weight carries a leading seed axis: N seeds of one architecture are one network whose
convolutions are grouped by seed (N = 1 is a plain convolution), so an ensemble costs like
one wider model and a single run is the N = 1 case of the same code.

Each hidden layer's channels are a stack of fields of one type (``model.fibers``, SPEC §9):
trivial (scalar fields, SPEC §1) or regular (|G| channels per field: a group convolution). The
input and the logits are trivial. ``model.channels`` counts fields, so a regular layer of c
fields has c·|G| channels. The field types only enter through the layer spaces, which read the
joint action of G off them; the forward pass is the same convolution either way.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..geometry.fields import FIBERS, FieldType
from ..geometry.group import Group
from ..geometry.layer_space import LayerSpace
from ..geometry.network_space import Distances, NetworkSpace
from ..geometry.parametrization import ParametrizedMap, make_basis
from ..geometry.support import make_support
from ..schema import ModelConfig
from .conv import conv_pool, pool_in_filter
from .layers import BATCH_NORMS, BN_STATS, NORMS, POOL_KINDS, NormBlock, NormState, group_pool, normalize
from .layers import avg_pool as avg_pool  # re-exported: its home was this module

log = logging.getLogger(__name__)

ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "gelu": F.gelu, "sigmoid": torch.sigmoid}
PADDINGS = ("same", "valid")  # zero padding k//2 (the map keeps its size) | none (it shrinks by k − 1)


@dataclass(frozen=True)
class Architecture:
    """The shape of the network: everything about it except its weights."""

    in_shape: tuple[int, int, int]  # (C, H, W)
    n_classes: int
    channels: tuple[int, ...]  # fields per hidden layer
    kernel_size: int
    pool: tuple[int, ...]
    stride: tuple[int, ...]
    activation: str = "tanh"
    norm: str = "layernorm"  # one of layers.NORMS, after each block's activation
    bias: bool = False
    fibers: tuple[str, ...] = ()  # field type per hidden layer; () = all trivial
    padding: str = "same"  # one of PADDINGS
    pool_kind: str = "avg"  # one of layers.POOL_KINDS
    group_pool: bool = False  # max over each field's channels, then mean over (H, W), before the head
    bn_stats: str = "batch"  # a batch norm's statistics in evaluation: one of layers.BN_STATS (SPEC §12)
    bn_momentum: float = 0.1  # running statistics: r <- (1 - m)·r + m·(the batch's), torch's convention
    bn_affine: bool = False  # a learnable scale and shift per field after the batch norm

    @property
    def layernorm(self) -> bool:
        return self.norm == "layernorm"

    @property
    def running_stats(self) -> bool:
        """Whether the batch norm keeps running statistics, to evaluate with (SPEC §12)."""
        return self.norm in BATCH_NORMS and self.bn_stats == "running"

    @property
    def couples_images(self) -> bool:
        """Whether an image's evaluated outputs depend on the other images of its chunk: a batch norm that
        evaluates with the chunk's own statistics (``layers.normalize``)."""
        return self.norm in BATCH_NORMS and self.bn_stats == "batch"

    def field_types(self, group: Group) -> list[FieldType]:
        """The field types of the input, of every hidden layer, and of the logits (SPEC §9)."""
        fibers = self.fibers or ("trivial",) * len(self.channels)
        hidden = [FieldType(group, kind, c) for kind, c in zip(fibers, self.channels)]
        return [FieldType(group, "trivial", self.in_shape[0]), *hidden, FieldType(group, "trivial", self.n_classes)]

    def head_input(self, group: Group) -> tuple[FieldType, tuple[int, int]]:
        """The fields the head reads and their (h, w) grid: the last block's, or after ``group_pool``
        one trivial field per field on a single pixel (a G-invariant vector)."""
        fields = self.field_types(group)[-2]
        if self.group_pool:
            return FieldType(group, "trivial", fields.fields), (1, 1)
        return fields, self.grids()[-1]

    def weight_entries(self, group: Group) -> int:
        """Entries of A of one seed (every conv's out·in·k², the head's classes·in·h·w): its size before any
        of it is allocated."""
        types = self.field_types(group)
        head_in, (fh, fw) = self.head_input(group)
        convs = sum(o.channels * i.channels * self.kernel_size**2 for o, i in zip(types[1:-1], types[:-2]))
        return convs + self.n_classes * head_in.channels * fh * fw

    def blocks(self) -> list[tuple[tuple[int, int], tuple[int, int]]]:
        """((h, w) of the conv output, (h, w) after pooling) of every conv block."""
        h, w = self.in_shape[1:]
        k, pad, out = self.kernel_size, self.padding_size, []
        for s, p in zip(self.stride, self.pool):
            h, w = (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1
            conv = (h, w)
            h, w = h // p, w // p
            out.append((conv, (h, w)))
        return out

    @property
    def padding_size(self) -> int:
        return self.kernel_size // 2 if self.padding == "same" else 0

    def grids(self) -> list[tuple[int, int]]:
        """(h, w) of the map after each conv block; the last one feeds the head."""
        return [pooled for _, pooled in self.blocks()]

    def check_sizes(self) -> None:
        for i, (h, w) in enumerate(self.grids(), start=1):
            if h < 1 or w < 1:
                raise ValueError(
                    f"conv{i} leaves a {h}x{w} map from {self.in_shape[1]}x{self.in_shape[2]} images: "
                    "use larger images (dataset.image_size) or less pooling / stride (model.pool, model.stride)"
                    + (" or model.padding=same" if self.padding == "valid" else "")
                )

    def equivariance_breakers(self) -> list[str]:
        """Why the architecture is not exactly G-equivariant (empty when it is; SPEC §1, §11)."""
        problems = []
        h, w = self.in_shape[1:]
        k, pad = self.kernel_size, self.padding_size
        for i, (s, p) in enumerate(zip(self.stride, self.pool), start=1):
            # (with zero padding k//2 this is (h − 1) % s: the sampled grid must be centred)
            if s > 1 and ((h + 2 * pad - k) % s or (w + 2 * pad - k) % s):
                problems.append(f"conv{i} stride {s} on a {h}x{w} map samples an off-centre grid")
            h, w = (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1
            if p > 1 and (h % p or w % p):
                problems.append(f"conv{i} pooling {p} on a {h}x{w} map drops border pixels")
            h, w = h // p, w // p
        return problems

    def norm_breakers(self) -> list[str]:
        """Normalizations that treat the channels G permutes into each other differently (SPEC §11)."""
        if self.norm != "batchnorm_channel":
            return []
        regular = [f"conv{i}" for i, kind in enumerate(self.fibers, start=1) if kind == "regular"]
        if not regular:  # per channel is per field on trivial fields
            return []
        return [
            f"model.norm='batchnorm_channel' normalizes each channel of {', '.join(regular)}'s regular fields apart"
        ]


def _per_layer(value: int | Sequence[int], n: int, key: str) -> tuple[int, ...]:
    values = (value,) * n if isinstance(value, int) else tuple(value)
    if len(values) != n or any(not isinstance(v, int) or v < 1 for v in values):
        raise ValueError(f"{key}={value!r} must be a positive int or a list of {n} positive ints (one per conv)")
    return values


def _fibers(value: str | Sequence[str], n: int) -> tuple[str, ...]:
    values = (value,) * n if isinstance(value, str) else tuple(value)
    if len(values) != n or any(v not in FIBERS for v in values):
        raise ValueError(
            f"model.fibers={value!r} must be one of {', '.join(FIBERS)} or a list of {n} of them (one per conv)"
        )
    return values


def _choice(key: str, value: object, valid: Sequence[str]) -> str:
    if value not in valid:
        raise ValueError(f"model.{key}={value!r} is not valid; use one of {', '.join(valid)}")
    return value


def _norm(model_cfg: ModelConfig) -> str:
    """``model.norm`` when set; otherwise the older switch ``model.layernorm`` (true: layernorm, false: none)."""
    norm = model_cfg.norm
    if norm is None:
        return "layernorm" if model_cfg.layernorm else "none"
    return _choice("norm", norm, NORMS)


def _batch_norm_keys(model_cfg: ModelConfig, norm: str) -> tuple[str, float, bool]:
    """``model.bn_stats``, ``model.bn_momentum`` and ``model.bn_affine``, checked (SPEC §12)."""
    stats, momentum, affine = model_cfg.bn_stats, model_cfg.bn_momentum, model_cfg.bn_affine
    _choice("bn_stats", stats, BN_STATS)
    number = isinstance(momentum, (int, float)) and not isinstance(momentum, bool)
    if not number or not math.isfinite(momentum) or not 0 < momentum <= 1:
        raise ValueError(
            f"model.bn_momentum={momentum!r} is not valid; use a number in (0, 1] "
            "(running statistics r <- (1 - m)·r + m·(the batch's))"
        )
    if not isinstance(affine, bool):
        raise ValueError(f"model.bn_affine={affine!r} is not valid; use true or false")
    # An affine belongs to a batch norm: refused where there is none to carry it. ``bn_stats`` says which
    # statistics a batch norm uses, so without one it changes nothing (a recipe sets it for any model;
    # ``settings.validate`` says so in the log).
    if affine and norm not in BATCH_NORMS:
        raise ValueError(
            f"model.bn_affine=true needs a batch norm, but model.norm={norm!r}; use model.norm="
            f"{' or '.join(BATCH_NORMS)}, or model.bn_affine=false"
        )
    return stats, float(momentum), affine


def architecture_from_config(model_cfg: ModelConfig, in_shape: tuple[int, int, int], n_classes: int) -> Architecture:
    channels = tuple(model_cfg.channels)
    if not channels or any(not isinstance(c, int) or c < 1 for c in channels):
        raise ValueError(f"model.channels={list(channels)!r} must be a non-empty list of positive ints")
    k = model_cfg.kernel_size
    if not isinstance(k, int) or k < 1 or k % 2 == 0:
        raise ValueError(f"model.kernel_size={k!r} must be a positive odd integer (1, 3, 5, ...)")
    largest = max(in_shape[1:]) - (1 - max(in_shape[1:]) % 2)  # the largest odd size within the image
    if k > max(in_shape[1:]):  # (its projections are k²×k² matrices: a kernel of 10001 would need petabytes)
        raise ValueError(
            f"model.kernel_size={k} is larger than the {in_shape[1]}x{in_shape[2]} images: use an odd size up to "
            f"{largest}"
        )
    _choice("activation", model_cfg.activation, tuple(ACTIVATIONS))
    n = len(channels)
    norm = _norm(model_cfg)
    bn_stats, bn_momentum, bn_affine = _batch_norm_keys(model_cfg, norm)
    return Architecture(
        in_shape=tuple(in_shape),
        n_classes=n_classes,
        channels=channels,
        kernel_size=k,
        pool=_per_layer(model_cfg.pool, n, "model.pool"),
        stride=_per_layer(model_cfg.stride, n, "model.stride"),
        activation=model_cfg.activation,
        norm=norm,
        bias=bool(model_cfg.bias),
        fibers=_fibers(model_cfg.fibers, n),
        padding=_choice("padding", model_cfg.padding, PADDINGS),
        pool_kind=_choice("pool_kind", model_cfg.pool_kind, POOL_KINDS),
        group_pool=bool(model_cfg.group_pool),
        bn_stats=bn_stats,
        bn_momentum=bn_momentum,
        bn_affine=bn_affine,
    )


class EqCNN(nn.Module):
    """N CNNs of one architecture (one per seed) whose weights live in L (or, with ``constrain``, in E)."""

    def __init__(
        self,
        arch: Architecture,
        group: Group,
        support: torch.Tensor,
        parametrization: str = "orthogonal",
        constrain: bool = False,
        basis_seed: int = 0,
        dtype: torch.dtype = torch.float32,
        n_seeds: int = 1,
        coordinates: str = "orthonormal",
    ) -> None:
        super().__init__()
        c_in, h, w = arch.in_shape
        group.check_grid(h, w, "images")
        arch.check_sizes()
        self._check_exact(arch, constrain)
        self.arch, self.group, self.constrain = arch, group, constrain
        self.coordinates = coordinates if constrain else None  # E's coordinates (SPEC §12.3); None in L
        k = arch.kernel_size
        generator = torch.Generator().manual_seed(basis_seed)
        spaces, self.maps = [], nn.ModuleList()
        types = arch.field_types(group)
        head_in, (fh, fw) = arch.head_input(group)  # the last block's fields, or their group pooling
        grids = [(k, k, support)] * len(arch.channels) + [(fh, fw, None)]  # the last: the invariant head
        for out_type, in_type, (sh, sw, mask) in zip(types[1:], [*types[:-2], head_in], grids):
            space = LayerSpace(group, sh, sw, mask, dtype, out_type, in_type)
            basis = make_basis(space, parametrization, constrain, generator, coordinates)
            spaces.append(space)
            self.maps.append(ParametrizedMap(n_seeds, out_type.channels, in_type.channels, sh * sw, basis, dtype))
        self._check_head(arch, group, spaces[-1], head_in)
        names = [f"conv{i}" for i in range(1, len(arch.channels) + 1)] + ["head"]
        self.space = NetworkSpace(names, spaces, [m.channels for m in self.maps])
        n_bias = len(arch.channels) + 1 if arch.bias else 0
        # Biases are one per field / per class, hence already invariant (SPEC §1, §9): not part of A.
        # (A regular field's bias is shared by its |G| channels; see ``logits_at``.)
        sizes = [*arch.channels, arch.n_classes][:n_bias]
        self.biases = nn.ParameterList([nn.Parameter(torch.zeros(n_seeds, c, dtype=dtype)) for c in sizes])
        # The batch norm's statistics per seed and conv block: one per field (SPEC §11), one per channel
        # for batchnorm_channel. Its affine (SPEC §12) is per field too, hence invariant: not part of A.
        per_channel = arch.norm == "batchnorm_channel"
        groups = [m.channels[0] if per_channel else c for m, c in zip(self.maps, arch.channels)]
        self.norm_groups = tuple(groups) if arch.norm in BATCH_NORMS else ()
        affine = self.norm_groups if arch.bn_affine else ()
        self.norm_scale = nn.ParameterList([nn.Parameter(torch.ones(n_seeds, f, dtype=dtype)) for f in affine])
        self.norm_shift = nn.ParameterList([nn.Parameter(torch.zeros(n_seeds, f, dtype=dtype)) for f in affine])
        # The running statistics of every block in one buffer, (N, S): block l's means, then its variances,
        # from mean 0 and variance 1 (torch's). One tensor, so the step can keep a diverged seed's as they
        # were with one masked copy, as it does ``flat``. Without running statistics it is (N, 0) and not
        # in the state dict, so models and checkpoints written before it existed still load.
        running = self.norm_groups if arch.running_stats else ()
        stats = [torch.full((n_seeds, f), float(v), dtype=dtype) for f in running for v in (0, 1)]
        stats = torch.cat(stats, 1) if stats else torch.zeros(n_seeds, 0, dtype=dtype)
        self.register_buffer("norm_stats", stats, persistent=arch.running_stats)
        self.identity_maps = all(m.basis is None and m.orbit_labels is None for m in self.maps)  # θ = A
        flat = torch.cat([p.detach().flatten(1) for p in self.parameter_list()], 1)
        self.register_buffer("flat", flat, persistent=False)
        self._link_flat()

    @staticmethod
    def _check_exact(arch: Architecture, constrain: bool) -> None:
        problems, norms = arch.equivariance_breakers(), arch.norm_breakers()
        if (problems or norms) and constrain:
            hints = [" (change model.pool / model.stride or dataset.image_size)"] * bool(problems)
            hints += [" (use model.norm=batchnorm: one mean and variance per field)"] * bool(norms)
            raise ValueError(
                "mode=equivariant needs an exactly equivariant network, but "
                + "; ".join(problems + norms)
                + "".join(hints)
            )
        if problems or norms:
            log.warning("the network is not exactly G-equivariant even on E: %s", "; ".join(problems + norms))

    @staticmethod
    def _check_head(arch: Architecture, group: Group, head: LayerSpace, fields: FieldType) -> None:
        """SPEC §1's trap: after LayerNorm over (H, W) an invariant head may see nothing but per-channel means."""
        if not arch.layernorm:
            return
        fh, fw = arch.grids()[-1]
        if arch.group_pool:  # the head reads per-field means over (H, W) of the (group-pooled) normalized map
            last = arch.field_types(group)[-2]
            if fh * fw == 1 or not last.permutes:  # LayerNorm leaves 0 there, or a mean it set to 0
                raise ValueError(
                    f"model.group_pool=true after LayerNorm over (H,W) on {fh}x{fw} maps of {last.kind} fields: "
                    "the pooled features are the per-channel means LayerNorm sets to 0, so every model is "
                    "constant (SPEC §1). Use model.norm=batchnorm or none, or regular fields (model.fibers)"
                )
            return
        orbits = group.num_orbits(fh, fw)
        # Invariant functionals of one class on the last map, less those constant over positions
        # within each field (they only read per-channel means, which LayerNorm sets to 0).
        useful = head.dim_e(arch.n_classes, fields.channels) // arch.n_classes - fields.fields
        if useful == 0:
            raise ValueError(
                f"the head reads a {fh}x{fw} map, a single {group.name}-orbit of positions, after "
                "LayerNorm over (H,W): every invariant head sees only the per-channel mean, which "
                "LayerNorm sets to 0, so every equivariant model is constant (SPEC §1). Use larger "
                "images (dataset.image_size), less pooling (model.pool) or model.layernorm=false"
            )
        if useful <= fields.fields:
            log.warning(
                "the head reads a %dx%d map with only %d %s-orbits of positions: the equivariant "
                "model class is very small",
                fh,
                fw,
                orbits,
                group.name,
            )

    def _link_flat(self) -> None:
        """Make every parameter (θ of each map, then the invariant ones) a view of ``flat`` (N, P).

        The step updates, checks and masks every seed's parameters as one tensor (``training.step``):
        the contract is that ``parameter_list`` names every learnable parameter of the module. One it
        missed would silently never train, so a module with another parameter is refused here.
        """
        listed = {id(p) for p in self.parameter_list()}
        unlisted = [name for name, p in self.named_parameters() if id(p) not in listed]
        if unlisted:
            raise TypeError(
                f"EqCNN: parameters {unlisted} are not in parameter_list(), so train_step (which updates only "
                "EqCNN.flat) would never train them: add them to parameter_list()"
            )
        offset = 0
        for p in self.parameter_list():
            size = p[0].numel()
            p.data = self.flat[:, offset : offset + size].view(p.shape)
            offset += size

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)  # moves or casts the parameters and ``flat`` apart: link them again
        self._link_flat()  # (``norm_stats`` moves as one buffer: ``norm_state`` takes its views anew each pass)
        return self

    def parameter_list(self) -> list[nn.Parameter]:
        """θ of each map, then the invariant parameters: the order of ``flat``'s columns."""
        return [*(m.theta for m in self.maps), *self.invariant_parameters()]

    def invariant_parameters(self) -> list[nn.Parameter]:
        """The learnable numbers outside A, all G-invariant (one per field or class): the biases, then the
        batch norm's scales and shifts. ``flat``'s columns after θ's; the regularizer never reaches them."""
        return [*self.biases, *self.norm_scale, *self.norm_shift]

    def norm_state(self, train: bool = False, update: bool | None = None) -> NormState | None:
        """The batch norm's state for a forward pass (``layers.NormState``), or None where there is none to
        carry (no running statistics, no affine: the batch's statistics, as before SPEC §12).

        ``train``: normalize with the batch's statistics and (``update``, default ``train``) move the running
        ones towards them; else evaluate with the running ones where kept. Evaluation never updates them.
        """
        arch = self.arch
        if not self.norm_groups or not (arch.running_stats or arch.bn_affine):
            return None
        blocks, offset = [], 0
        for i, f in enumerate(self.norm_groups):
            mean = var = scale = shift = None
            if arch.running_stats:  # views of the buffer as it is now (a move or a load replaces or refills it)
                mean, var = self.norm_stats[:, offset : offset + f], self.norm_stats[:, offset + f : offset + 2 * f]
                offset += 2 * f
            if arch.bn_affine:
                scale, shift = self.norm_scale[i], self.norm_shift[i]
            blocks.append(NormBlock(mean, var, scale, shift))
        update = train if update is None else update
        momentum = arch.bn_momentum if train and update and arch.running_stats else None
        return NormState(tuple(blocks), train, momentum)

    def flat_grad(self) -> torch.Tensor:
        """The gradients of the parameters as one (N, P) tensor, in ``flat``'s order (zero where unset)."""
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in self.parameter_list()]
        return torch.cat([g.flatten(1) for g in grads], 1)

    def pull_back(self, grad_a: torch.Tensor) -> torch.Tensor:
        """The gradient in the maps' θ (N, P_θ) of a function whose gradient in A is the flat ``grad_a`` (N, P_A)."""
        if self.identity_maps:
            return grad_a
        parts = grad_a.split(self.space.sizes, dim=1)
        shapes = [(grad_a.shape[0], *m.channels, m.size) for m in self.maps]
        return torch.cat([m.pull_back(g.view(s)).flatten(1) for m, g, s in zip(self.maps, parts, shapes)], 1)

    @property
    def n_seeds(self) -> int:
        return self.maps[0].theta.shape[0]

    @property
    def layer_names(self) -> tuple[str, ...]:
        return self.space.names

    def weights(self) -> list[torch.Tensor]:
        """The tuple A = (A_1, ..., A_n), each of shape (N, out, in, s)."""
        return [m.weight() for m in self.maps]

    @torch.no_grad()
    def set_weights(self, weights: Sequence[torch.Tensor]) -> None:
        """Set θ so that A = ``weights`` — projected onto the model's space (E when constrained)."""
        for m, a in zip(self.maps, weights, strict=True):
            m.set_weight(a)

    def perp(self, weights: Sequence[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """Π_{E⊥}A per layer (SPEC §2)."""
        return self.space.project_perp(self.weights() if weights is None else weights)

    def distances(self) -> Distances:
        """d(A) per layer, in total and relative, per seed (SPEC §7)."""
        with torch.no_grad():
            return self.space.distances(self.weights())

    def dim_e(self) -> int:
        return self.space.dim_e([m.channels for m in self.maps])

    def activation_sizes(self) -> list[int]:
        """Numbers of one image's activations per conv block of one seed: the conv output, then the pooled map.
        (Where the pooling is taken into the filter, ``conv.conv_pool`` on the CPU, the conv's output is the pooled map.)"""
        sizes, arch = [], self.arch
        for m, ((h, w), (ph, pw)), s, p in zip(self.maps[:-1], arch.blocks(), arch.stride, arch.pool):
            conv = (ph, pw) if pool_in_filter(s, p, arch.pool_kind) else (h, w)
            sizes += [m.channels[0] * conv[0] * conv[1], m.channels[0] * ph * pw]
        return sizes

    def widest_activation(self) -> int:
        """The largest activation of one image and one seed, in numbers (what sizes a chunk of images)."""
        return max(self.activation_sizes())

    def n_params(self) -> int:
        """Learnable numbers of one seed's network: θ, the biases and the batch norm's affine (not its
        running statistics, which are state)."""
        return sum(p.numel() for p in self.parameters()) // self.n_seeds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, B, classes) of every seed on x: (B, C, H, W) shared, or (N, B, C, H, W) per seed."""
        return self.logits(x)

    def logits(
        self,
        x: torch.Tensor,
        weights: Sequence[torch.Tensor] | None = None,
        train: bool = False,
        update_stats: bool | None = None,
    ) -> torch.Tensor:
        """The logits at weights A (default: the model's own) as trained (``train``) or as evaluated.

        A batch norm normalizes with the batch's statistics in training; in evaluation with the running
        ones where ``model.bn_stats=running``, else with the batch's (x's) as in training (SPEC §12).
        ``update_stats`` (default: ``train``): whether a training pass moves the running statistics
        (``norm_stats``, in place) towards the batch's; evaluation never does. The affine applies in both.
        """
        weights = self.weights() if weights is None else weights
        biases = list(self.biases) if self.arch.bias else None
        return logits_at(self.arch, weights, x, biases, self.norm_state(train, update_stats))

    def logits_and_maps(
        self,
        x: torch.Tensor,
        keep: Collection[int],
        weights: Sequence[torch.Tensor] | None = None,
        train: bool = False,
        update_stats: bool | None = None,
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """``logits`` and, from the same forward pass, the maps φ_l of the conv blocks l in ``keep`` (0-based;
        ``block_outputs``' (B, N·C_l, H_l, W_l))."""
        weights = self.weights() if weights is None else weights
        biases = list(self.biases) if self.arch.bias else None
        kept = {}
        for i, h in enumerate(block_outputs(self.arch, weights, x, biases, self.norm_state(train, update_stats))):
            if i in keep:
                kept[i] = h
        return head_at(self.arch, weights, h, biases), kept


def logits_at(
    arch: Architecture,
    weights: Sequence[torch.Tensor],
    x: torch.Tensor,
    biases: Sequence[torch.Tensor] | None = None,
    norm: NormState | None = None,
) -> torch.Tensor:
    """The N networks of ``arch`` at weights A (one (N, out, in, s) tensor per layer): the forward pass.

    ``x`` is (B, C, H, W), shown to every seed, or (N, B, C, H, W), one batch per seed. The seeds'
    channels are stacked and each convolution is grouped by seed (for N = 1, a plain one). ``norm``: the
    batch norm's running statistics and affine, and whether to train or evaluate (``EqCNN.norm_state``);
    None: the batch's statistics, no affine.
    """
    # the last block's map (one held at a time)
    h = deque(block_outputs(arch, weights, x, biases, norm), maxlen=1)[0]
    return head_at(arch, weights, h, biases)


def head_at(
    arch: Architecture, weights: Sequence[torch.Tensor], h: torch.Tensor, biases: Sequence[torch.Tensor] | None = None
) -> torch.Tensor:
    """The logits (N, B, classes) from the last block's map h (B, N·C, H, W): ``logits_at``'s last part."""
    head, n, b = weights[-1], weights[0].shape[0], h.shape[0]
    if arch.group_pool:  # (B, N·fields): invariant already; the head is a plain linear map (SPEC §11)
        h = group_pool(h, weights[-2].shape[1] // arch.channels[-1])
    if n == 1:  # (the same product; a plain matmul keeps one seed's round-off that of a single network)
        out = F.linear(h.reshape(b, -1), head.reshape(head.shape[1], -1))[None]
    else:
        out = torch.bmm(h.reshape(b, n, -1).transpose(0, 1), head.flatten(2).transpose(1, 2))  # (N, B, classes)
    return out if biases is None else out + biases[-1][:, None, :]


def block_outputs(
    arch: Architecture,
    weights: Sequence[torch.Tensor],
    x: torch.Tensor,
    biases: Sequence[torch.Tensor] | None = None,
    norm: NormState | None = None,
) -> Iterator[torch.Tensor]:
    """The output φ_l of every conv block l, in order: conv → pool → activation → normalization.

    Each is (B, N·C_l, H_l, W_l), the seeds' channels stacked seed-major (``x`` and the weights as in
    ``logits_at``, which reads the last one). One map at a time, so a caller that keeps none of them
    (the logits) holds one block's activations, and one that keeps them all (``layer_equivariance``)
    sees exactly the maps the logits are computed from. ``norm`` as in ``logits_at``.
    """
    n = weights[0].shape[0]
    if x.dim() == 5:
        h, shared = seed_stacked(x), False
    else:  # one input for all seeds: the first convolution reads it once, with every seed's filters
        h, shared = x, True
    k, act, pad = arch.kernel_size, ACTIVATIONS[arch.activation], arch.padding_size
    for i, a in enumerate(weights[:-1]):
        bias = None if biases is None else biases[i]
        if bias is not None and bias.shape[-1] != a.shape[1]:  # one per regular field (SPEC §9)
            bias = bias.repeat_interleave(a.shape[1] // bias.shape[-1], dim=-1)
        bias = None if bias is None else bias.reshape(-1)
        groups = 1 if i == 0 and shared else n
        filters = a.reshape(n * a.shape[1], a.shape[2], k, k)
        h = conv_pool(h, filters, bias, arch.stride[i], pad, groups, arch.pool[i], arch.pool_kind)
        h = act(h)
        if arch.norm != "none":
            size = a.shape[1] // arch.channels[i]  # channels per field: 1 or |G|
            if norm is None:
                h = normalize(h, arch.norm, size)
            else:
                h = normalize(h, arch.norm, size, norm.blocks[i], norm.train, norm.momentum)
        yield h


def seed_stacked(x: torch.Tensor) -> torch.Tensor:
    """Per-seed batches (N, B, C, H, W) as one map (B, N·C, H, W), the seeds' channels stacked seed-major."""
    return x.transpose(0, 1).reshape(x.shape[1], x.shape[0] * x.shape[2], *x.shape[3:])


def build_model(
    model_cfg: ModelConfig,
    group: Group,
    in_shape: tuple[int, int, int],
    n_classes: int,
    constrain: bool,
    dtype: torch.dtype = torch.float32,
    n_seeds: int = 1,
    coordinates: str = "orthonormal",
) -> EqCNN:
    """The model of ``model_cfg``; ``coordinates``: E's coordinates when ``constrain`` (SPEC §12.3)."""
    arch = architecture_from_config(model_cfg, in_shape, n_classes)
    support = make_support(model_cfg.support, arch.kernel_size)
    return EqCNN(
        arch, group, support, model_cfg.parametrization, constrain, model_cfg.basis_seed, dtype, n_seeds, coordinates
    )
