"""The whole-network flat paths of the step: Π_{E⊥} and the distances on the flat vector of all
entries (``NetworkSpace``), the parameters as views of one (N, P) tensor (``EqCNN.flat``), and the
per-step log measured in batches of steps (``StepLog``)."""

import pytest
import torch

from eqtrain.geometry.group import GROUP_NAMES, Group
from eqtrain.geometry.network_space import ROW_PIECE
from eqtrain.nets.cnn import build_model
from eqtrain.run.tblog import RunLogger
from eqtrain.training.metrics import step_tags
from eqtrain.training.steplog import StepLog

from ..helpers import fast_first, make_config

TOL64 = 1e-13  # float64 round-off (SPEC §5.1's bound for float64 statements)


def model_of(*overrides, group="c4", dtype=torch.float64, seeds=3, constrain=False):
    cfg = make_config(*overrides).model
    return build_model(cfg, Group.from_name(group), (1, 28, 28), 10, constrain, dtype, seeds)


def random_weights(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(a.shape, generator=gen, dtype=a.dtype) for a in model.weights()]


MODELS = [("model=paper_cnn",), ("model=paper_cnn", "model.support=cross"), ("model=gcnn",), ("model=deep_cnn",)]


@pytest.mark.parametrize(
    ("overrides", "group"),
    fast_first(
        [(m, g) for m in MODELS for g in GROUP_NAMES], fast=2, ids=[f"{m[-1]}-{g}" for m in MODELS for g in GROUP_NAMES]
    ),
)
def test_network_perp_is_each_layers_perp(overrides, group):
    """SPEC §2, §9: the whole-network Π_{E⊥} on the flat vector equals every LayerSpace's own, to ≤1e-13."""
    model = model_of(*overrides, group=group)
    weights = random_weights(model)
    together = model.space.project_perp(weights)
    for space, a, b in zip(model.space, weights, together, strict=True):
        assert (space.project_perp(a) - b).abs().max() <= TOL64


@pytest.mark.parametrize(
    "overrides", fast_first([(m,) for m in MODELS], fast=2, ids=["paper", "cross", "gcnn", "deep"])
)
def test_network_distances_are_the_norms_of_the_layer_perps(overrides):
    """SPEC §7: d per layer, in total and relative, from the flat path, equal the norms taken layer by layer."""
    model = model_of(*overrides)
    weights = random_weights(model)
    values = model.space.distances(weights).values
    perps = [space.project_perp(a) for space, a in zip(model.space, weights)]
    layers = torch.stack([p.flatten(1).norm(dim=1) for p in perps], dim=1)
    total = layers.norm(dim=1)
    norm_a = torch.cat([a.flatten(1) for a in weights], dim=1).norm(dim=1)
    expected = torch.cat([layers, total[:, None], (total / norm_a)[:, None]], dim=1)
    assert torch.allclose(values, expected, rtol=TOL64, atol=0)


def test_a_long_row_is_summed_in_pieces_and_alone():
    """A wide G-CNN layer has more entries than torch reduces in one thread: its distances are the
    same bit for bit for one row alone as inside a batch of rows (the step log batches steps)."""
    model = model_of("model=gcnn", "model.channels=[16,16]", dtype=torch.float32, seeds=1)
    assert max(model.space.sizes) > 2 * ROW_PIECE  # the case the pieces exist for
    rows = torch.cat([model.space.flatten(random_weights(model, seed)) for seed in range(5)])
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # torch splits a long row between threads, whatever the test worker has
    try:
        batch = model.space.distances_flat(rows).values
        for k in range(len(rows)):
            alone = model.space.distances_flat(rows[k : k + 1]).values
            assert torch.equal(alone[0], batch[k])
    finally:
        torch.set_num_threads(threads)


def test_parameters_are_views_of_the_flat_tensor_through_casts_and_loads():
    model = model_of("model=paper_cnn", "model.bias=true", dtype=torch.float32)
    model.flat.normal_()
    assert all(torch.equal(p.flatten(1), part) for p, part in zip(model.parameter_list(), split(model)))
    model.double()  # a cast replaces the parameters' storage: they are linked to the new flat again
    model.flat.mul_(2)
    assert model.flat.dtype == torch.float64
    assert all(torch.equal(p.flatten(1), part) for p, part in zip(model.parameter_list(), split(model)))
    other = model_of("model=paper_cnn", "model.bias=true")
    other.load_state_dict(model.state_dict())
    assert torch.equal(other.flat, model.flat)


def split(model):
    sizes = [p[0].numel() for p in model.parameter_list()]
    return model.flat.split(sizes, dim=1)


def test_the_step_log_writes_the_same_rows_however_it_batches(tmp_path):
    """Rows measured one step at a time, in one batch, or at once from the Π_{E⊥}A_t that a regularized
    step hands over (``StepResult.perp``) are identical; they are the SPEC §7 scalars of each step's A_t
    (d as ``model.distances`` gives it) and skip a seed once it stopped."""
    model = model_of("model=paper_cnn", dtype=torch.float32, seeds=2)
    steps = [(model.space.flatten(random_weights(model, s)), torch.rand(2), 0.1 * s) for s in range(4)]
    stopped = [(False, False), (False, False), (False, True), (False, True)]
    logs = {}
    for name, flush_each, perp_given in (("alone", True, ()), ("batch", False, ()), ("perp", False, (1, 3))):
        loggers = [RecordingLogger(tmp_path / f"{name}{k}") for k in range(2)]
        log = StepLog(model.space, loggers, step_tags(model.layer_names), 1.0)
        for i, ((a, loss, gamma), dead) in enumerate(zip(steps, stopped)):
            log.add(i, loss, a, gamma, dead, perp=model.space.perp_flat(a) if i in perp_given else None, lr=0.01 * i)
            if flush_each:
                log.flush()
        log.flush()
        logs[name] = loggers
    for alone, batch, perp in zip(logs["alone"], logs["batch"], logs["perp"]):
        assert alone.steps == batch.steps == perp.steps
        assert torch.equal(torch.cat(alone.rows), torch.cat(batch.rows))
        assert torch.equal(torch.cat(alone.rows), torch.cat(perp.rows))
    assert logs["batch"][0].steps == [0, 1, 2, 3] and logs["batch"][1].steps == [0, 1]
    tags = step_tags(model.layer_names)
    row = torch.cat(logs["batch"][0].rows)[3]
    model.set_weights(model.space.unflatten(steps[3][0], model.weights()))
    d = model.distances().of_seed(0)
    assert row[tags.index("dist_to_E/total")].item() == pytest.approx(d["dist_to_E/total"], rel=1e-6)
    loss, gamma = steps[3][1][0].item(), 0.3
    reg = 0.5 * gamma * d["dist_to_E/total"] ** 2
    assert row[: tags.index("dist_to_E/conv1")].tolist() == pytest.approx(
        [loss, reg, loss + reg, gamma, 0.03], rel=1e-6
    )


class RecordingLogger(RunLogger):
    """A RunLogger that also keeps what it was given."""

    def __init__(self, run_dir):
        super().__init__(run_dir)
        self.steps, self.rows = [], []

    def log_rows(self, steps, times, tags, rows):
        self.steps += steps
        self.rows.append(rows.clone())
        super().log_rows(steps, times, tags, rows)


def test_a_parameter_outside_the_flat_tensor_is_refused():
    """train_step updates only EqCNN.flat: a learnable parameter that parameter_list() misses would never train,
    so the model refuses it when it links the flat tensor (at construction, and after every move or cast)."""
    from torch import nn

    from eqtrain.schema import ModelConfig

    model = build_model(ModelConfig(), Group.from_name("c4"), (1, 28, 28), 10, False)
    model.scale = nn.Parameter(torch.ones(1))
    with pytest.raises(TypeError, match=r"parameters \['scale'\] are not in parameter_list\(\)"):
        model.double()
