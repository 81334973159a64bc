"""init.scheme=reference: the authors' initial law (docs/design.md, "The reference initial law").

Each orbit value of Π_E A₀ is U(±b) with b = 1/√fan_in of the authors' orbit tensor: 1/√C_in for a
conv orbit, 1/√(C·(m²−1)/4) for the head's four-element orbits (1/√192 on the paper's 7×7 map),
1/√C for the head's centre. The perturbation is perturbed_equivariant's, orthogonal to E.
"""

import math

import pytest
import torch

from eqtrain.geometry.group import Group
from eqtrain.nets.cnn import build_model
from eqtrain.nets.init import initial_weights
from eqtrain.training.modes import MODES

from ..helpers import cli, make_config

SEEDS = range(20)


def model_for(mode: str = "nominal", *overrides: str, group: str = "c4", image: int = 28):
    cfg = make_config(f"mode={mode}", *overrides)
    return build_model(cfg.model, Group.from_name(group), (1, image, image), 10, MODES[mode].constrain)


def orbit_values(space, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(values (out, in, n_orbits) of Π_E A, orbit sizes): each orbit's entries share one value."""
    basis = space.basis_e.double()
    indicator = (basis > 0).double()
    sizes = indicator.sum(0)
    return (a @ space.p_e.double()) @ indicator / sizes, sizes


def authors_bounds(name: str, c_in: int, sizes: torch.Tensor) -> torch.Tensor:
    """The issue's formulas, written out for the paper CNN on 28×28 images (a 7×7 head map)."""
    if name == "head":
        assert len(sizes) == 13  # the centre and twelve 4-element orbits of 7×7
        return torch.where(sizes == 1, torch.full_like(sizes, 1 / math.sqrt(16)), 1 / math.sqrt(16 * 4 * 3))
    return torch.full_like(sizes, 1 / math.sqrt(c_in))


def test_orbit_values_are_uniform_within_the_authors_bounds():
    """Per layer, over 20 seeds: |v| <= b, v/b fills [-1, 1] (Kolmogorov–Smirnov at the 0.1% level)."""
    model = model_for()
    starts = [initial_weights(model, "reference", 1e-3, s) for s in SEEDS]
    for i, (name, space, m) in enumerate(zip(model.space.names, model.space, model.maps)):
        scaled = []
        for a0 in starts:
            values, sizes = orbit_values(space, a0[i])
            bounds = authors_bounds(name, m.channels[1], sizes)
            assert values.abs().max() <= bounds.max() * (1 + 1e-12), name
            scaled.append((values / bounds).flatten())
        u = torch.sort((torch.cat(scaled) + 1) / 2).values  # U(0, 1) under the law
        n = u.numel()
        ranks = torch.arange(1, n + 1, dtype=torch.float64)
        ks = torch.maximum(ranks / n - u, u - (ranks - 1) / n).max().item()
        assert ks < 1.95 / math.sqrt(n), (name, ks, n)
        assert u.min() < 5 / n and u.max() > 1 - 5 / n, name  # the bound is reached, not a smaller one


def test_norm_of_the_equivariant_part_per_layer_matches_the_formula():
    """E‖Π_E A₀‖² = Σ |o|·b_o²/3 over (out, in, orbit); the mean over 20 seeds lies within 4 standard errors.

    For the paper CNN: 48 (conv1: 16·9·1/3), 48 (conv2: 16·16·9·(1/16)/3), 50/3 (head) — norms
    ≈ 6.9, 6.9, 4.1, against ≈ 2.3, 2.3, 1.8 under perturbed_equivariant.
    """
    model = model_for()
    expected = {"conv1": 48.0, "conv2": 48.0, "head": 50.0 / 3}
    for i, (name, space, m) in enumerate(zip(model.space.names, model.space, model.maps)):
        out_dim, in_dim = m.channels
        _, sizes = orbit_values(space, torch.zeros(1, 1, space.size, dtype=torch.float64))
        b = authors_bounds(name, in_dim, sizes)
        mean = out_dim * in_dim * (sizes * b**2).sum().item() / 3
        var = out_dim * in_dim * (sizes**2 * b**4).sum().item() * 4 / 45  # Var(u²) = 4/45 for u ~ U(-1, 1)
        assert mean == pytest.approx(expected[name], rel=1e-12)
        squares = [
            (a0[i] @ space.p_e.double()).pow(2).sum().item()
            for a0 in (initial_weights(model, "reference", 0.0, s) for s in SEEDS)
        ]
        assert abs(sum(squares) / len(squares) - mean) < 4 * math.sqrt(var / len(squares)), name


def test_perturbation_is_orthogonal_to_e_and_that_of_perturbed_equivariant():
    """Π_{E⊥}A₀ is the same draw as perturbed_equivariant's for the seed (so the same law), and ⟂ E."""
    model = model_for()
    sigma = 1e-3
    perp_sq, codim = 0.0, 0
    for seed in (0, 1):
        ref = initial_weights(model, "reference", sigma, seed)
        pe = initial_weights(model, "perturbed_equivariant", sigma, seed)
        for space, m, a, b in zip(model.space, model.maps, ref, pe):
            space = space.double()
            perp = space.project_perp(a)
            assert (perp - space.project_perp(b)).abs().max() < 1e-15  # round-off of the larger Π_E A₀
            assert (a - perp - space.project_e(a)).abs().max() < 1e-15  # A₀ = Π_E A₀ + (a part ⟂ E)
            assert space.project_e(perp).abs().max() < 1e-15  # round-off: 1e-12 of the perturbation
            perp_sq += perp.pow(2).sum().item()
            codim += m.channels[0] * m.channels[1] * (space.size - space.orbits_in_e)
    assert abs(math.sqrt(perp_sq / (sigma**2 * codim)) - 1) < 0.02  # a chi of ~2·17 000 degrees of freedom


def test_sigma_zero_starts_on_e():
    model = model_for()
    for space, a in zip(model.space, initial_weights(model, "reference", 0.0, seed=3)):
        assert space.double().project_perp(a).abs().max() < 1e-15


def test_same_seed_same_start_for_every_mode():
    starts = {}
    for mode in MODES:
        model = model_for(mode)
        model.set_weights(initial_weights(model, "reference", 1e-3, seed=7))
        starts[mode] = [a[0].detach().double() for a in model.weights()]
    reference = starts["nominal"]
    for mode in ("augmented", "augreg", "nomreg"):
        assert all(torch.equal(a, b) for a, b in zip(starts[mode], reference)), mode
    model = model_for("equivariant")  # the equivariant mode starts at Π_E(A₀)
    for space, a_eq, a0 in zip(model.space, starts["equivariant"], reference):
        assert torch.allclose(a_eq, space.project_e(a0.float()).double(), atol=1e-6)


def test_other_odd_shapes_follow_the_same_tensors():
    """5×5 kernels and a 5×5 head map (20×20 images): conv orbits 1/√C_in, head 1/√(C·6) and 1/√C."""
    from eqtrain.nets.reference import orbit_bounds

    model = model_for("nominal", "model.kernel_size=5", "model.channels=[8,12]", image=20)
    conv1, conv2, head = orbit_bounds(model)
    assert len(conv1) == 7 and torch.all(conv1 == 1.0) and len(conv2) == 7
    assert conv2.tolist() == pytest.approx([1 / math.sqrt(8)] * 7, rel=1e-15)
    assert sorted(head.tolist()) == pytest.approx([1 / math.sqrt(12 * 6)] * 6 + [1 / math.sqrt(12)], rel=1e-15)


@pytest.mark.parametrize(
    ("overrides", "group", "image", "why"),
    [
        ((), "d4", 28, "group=d4"),
        ((), "c2", 28, "group=c2"),
        (("model.support=cross",), "c4", 28, "conv1's support is not full"),
        ((), "c4", 32, "the head reads a 8x8 map"),
        (("model=gcnn",), "c4", 28, "conv1 has regular fields (model.fibers=regular)"),
    ],
)
def test_refused_outside_the_authors_domain_in_one_line(overrides, group, image, why):
    model = model_for("nominal", *overrides, group=group, image=image)
    with pytest.raises(ValueError) as err:
        initial_weights(model, "reference", 1e-3, 0)
    message = str(err.value)
    assert "\n" not in message and message.startswith("init.scheme='reference' is not valid")
    assert why in message and "group=c4" in message and "init.scheme=perturbed_equivariant" in message


def test_the_paper_preset_uses_it_and_the_default_does_not():
    assert make_config("experiment=paper").init.scheme == "reference"
    assert make_config().init.scheme == "standard"


def test_the_command_line_refuses_it_in_one_line_before_writing(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    code, err = cli(tmp_path, monkeypatch, capsys, "init.scheme=reference", "group=d4", "dataset.train_limit=20",
                    f"hydra.run.dir={run_dir}")  # fmt: skip
    (line,) = err.strip().splitlines()
    assert code == 2 and line.startswith("eqtrain: error: init.scheme='reference' is not valid for this run (group=d4)")
    assert not list(run_dir.glob("events.out.tfevents.*")) and not (run_dir / "metrics.json").exists()
