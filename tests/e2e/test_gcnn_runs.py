"""Everything that works for the scalar CNN works for the G-CNN (SPEC §9): every mode with the same
per-step metric names, seeds=N, twin, phases, resume, eqtrain-analyze, eqtrain-plot, eqtrain-bench."""

import json

import pytest
import torch

from eqtrain.cli.analyze import main as analyze
from eqtrain.cli.bench import main as bench
from eqtrain.cli.plot import main as plot

from ..helpers import TINY, Run, make_config, rel, scalars, train_config

pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("one_thread"),
]  # a real sweep or many steps of a wider network per test

SMALL = (*TINY, "model=gcnn", "dataset.image_size=12")  # 12 -> 6 -> 3: cheap, and exactly equivariant


@pytest.mark.parametrize("mode", ["nominal", "augmented", "equivariant", "augreg", "nomreg"])
def test_every_mode_trains_a_gcnn_and_logs_the_scalar_cnns_tags(run_train, mode):
    gcnn = run_train(*SMALL, f"mode={mode}", "max_steps=3")
    scalar = run_train(*TINY, "dataset.image_size=12", f"mode={mode}", "max_steps=3")
    assert gcnn.metrics()["status"] == "completed"
    assert set(gcnn.metrics()) == set(scalar.metrics())
    assert scalars(gcnn.dir).keys() == scalars(scalar.dir).keys()
    assert gcnn.scalars("loss/total")[0] == [0, 1, 2]
    metrics = gcnn.metrics()
    assert metrics["dim_E"] == 4 * 9 + 4 * 4 * 36 + 10 * 4 * 9  # lifting, group conv, head on 3x3 (SPEC §9)
    if mode == "equivariant":  # trained in E's orbit coordinates: on E and exactly invariant
        assert metrics["n_params"] == metrics["dim_E"]
        assert metrics["dist_to_E/total"] < 1e-6 and metrics["equiv/test_error"] < 1e-5


def test_ensemble_of_gcnns_matches_its_single_runs(tmp_path):
    """seeds=2 in E's orbit coordinates (θ of shape (N, dim E)) and in L: each seed as its own run."""
    for mode in ("equivariant", "augreg"):
        common = (*SMALL, f"mode={mode}", "max_steps=4")
        ensemble = train_config(make_config(*common, "seeds=2"), tmp_path / f"{mode}-ens")
        single = train_config(make_config(*common, "seed=1"), tmp_path / f"{mode}-one")
        assert ensemble["runs"][1]["dim_E"] == single["dim_E"]
        a = torch.load(tmp_path / f"{mode}-ens" / "seed=1" / "weights.pt", weights_only=True)["weights"]
        b = torch.load(tmp_path / f"{mode}-one" / "weights.pt", weights_only=True)["weights"]
        assert rel(a, b) <= 1e-5


def test_twin_and_phases_on_a_gcnn(run_train):
    """An equivariant twin (twin/dist), and a run of phases: equivariant (orbit coordinates) then
    orbit-augmented (in L) from the same weights, which stay on E (SPEC §5.1)."""
    twin = run_train(*SMALL, "mode=augreg", "twin=true", "max_steps=3")
    assert len(twin.scalars("twin/dist")[1]) == 3
    phases = run_train(
        *SMALL, "epochs=2", "+phases=[{mode: equivariant, epochs: 1}, {mode: augmented, epochs: 1, augment: orbit}]",
        "init.sigma=0", "lr=0.01",
    )  # fmt: skip
    assert phases.metrics()["status"] == "completed"
    assert max(phases.scalars("dist_to_E_rel/total")[1]) < 2e-5


def test_resumed_gcnn_run_is_bitwise_identical(run_train):
    """Stopped after its first epoch (10 steps) and resumed: the same weights as an uninterrupted run."""
    reference = run_train(*SMALL, "epochs=2", "mode=augreg")
    stopped = run_train(*SMALL, "epochs=2", "mode=augreg", "max_steps=10")
    run_train(
        *SMALL, "epochs=2", "mode=augreg", f"resume={stopped.dir}", "force_resume=true"
    )  # writes into stopped.dir
    assert Run(stopped.dir).metrics()["steps"] == reference.metrics()["steps"] == 20
    assert all(torch.equal(a, b) for a, b in zip(Run(stopped.dir).weights(), reference.weights()))


def test_gcnn_checkpoint_restores_the_orbit_coordinates(run_train):
    """What resume loads: the checkpoint's θ — one number per joint orbit for each of 2 seeds —
    rebuilds exactly the weights the run ended with."""
    from eqtrain.geometry.group import Group
    from eqtrain.nets.cnn import build_model

    run = run_train(*SMALL, "mode=equivariant", "max_steps=3", "seeds=2")
    state = torch.load(run.dir / "checkpoint.pt", weights_only=True)["model"]
    cfg = make_config(*SMALL)
    model = build_model(cfg.model, Group.from_name("c4"), (1, 12, 12), 10, True, n_seeds=2)
    model.load_state_dict(state)
    assert model.maps[1].theta.shape == (2, 4 * 4 * 36)
    final = Run(run.dir / "seed=1").weights()
    assert all(torch.equal(a[1], b) for a, b in zip(model.weights(), final))


def test_analyze_and_plot_a_gcnn_sweep(tmp_path, run_train):
    """eqtrain-analyze gives γ_crit on the G-CNN's E⊥ (dim E from the joint orbits); eqtrain-plot
    makes its figure and table."""
    sweep = tmp_path / "sweep"
    for i, (mode, gamma) in enumerate([("augreg", 1.0), ("nomreg", 1.0), ("equivariant", 0.0)]):
        run_dir = sweep / str(i)
        run_dir.mkdir(parents=True)
        train_config(make_config(*SMALL, f"mode={mode}", f"gamma={gamma}", "max_steps=3"), run_dir)
    assert analyze([str(sweep / "0"), "--samples", "8", "--iterations", "4"]) == 0
    stability = json.loads((sweep / "0" / "stability.json").read_text())
    metrics = json.loads((sweep / "0" / "metrics.json").read_text())
    assert stability["dim_E"] == metrics["dim_E"]
    assert stability["dim_E"] + stability["dim_perp"] == 16 * 9 + 16 * 16 * 9 + 10 * 16 * 9
    plot([str(sweep)])
    assert (sweep / "summary.md").exists()


def test_bench_times_the_gcnn_against_its_own_floor(capsys):
    bench(["--model", "gcnn", "--batch", "10", "--steps", "2", "--rounds", "1", "--warmup", "1", "--seeds", "0"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["model"] == "gcnn"
    assert set(report["results"]["10"]["ratio_to_floor"]) >= {"nominal", "augmented", "equivariant", "augreg"}
    fractions = report["results"]["10"]["fraction_of_peak"]
    assert set(fractions) == set(report["results"]["10"]["ratio_to_floor"]) and all(f > 0 for f in fractions.values())
    with pytest.raises(SystemExit, match="--model resnet is not a model preset; valid: .*gcnn"):
        bench(["--model", "resnet"])


def test_bench_parts_say_where_a_step_goes(capsys):
    """--parts: each part of the step timed alone (every one run: a time above 0), and the whole step."""
    bench(["--model", "gcnn", "--batch", "4", "--steps", "3", "--rounds", "1", "--warmup", "1", "--seeds", "2",
           "--no-optimizers", "--parts"])  # fmt: skip
    out = capsys.readouterr().out
    report = json.loads(out.strip().splitlines()[-1])
    assert set(report["parts_ms"]) == {"batch4_seeds1", "batch10_seeds2"}
    for parts in report["parts_ms"].values():
        named = [parts[p] for p in ("convolutions", "activations", "normalization", "head and loss", "projection",
                                    "optimizer", "step log")]  # fmt: skip
        assert all(v > 0 for v in named) and parts["step"] > 0 and "other" in parts
    assert "convolutions" in out and "ms/step; each part timed alone" in out


def test_gcnn_trains_in_a_random_basis_of_l(run_train):
    """parametrization=basis (a seeded non-orthogonal basis of L) on a G-CNN with a cross support."""
    run = run_train(*SMALL, "mode=augreg", "model.parametrization=basis", "model.support=cross", "max_steps=3")
    assert run.metrics()["status"] == "completed"
    assert all(w[..., [0, 2, 6, 8]].abs().max() == 0 for w in run.weights()[:-1])  # in L: off the cross is 0


def paper_cnn():
    from eqtrain.geometry.group import Group
    from eqtrain.nets.cnn import build_model
    from eqtrain.schema import ModelConfig

    return build_model(ModelConfig(), Group.from_name("c4"), (1, 28, 28), 10, False)


def executed_over_plain() -> float:
    """The paper CNN's FLOPs as eqtrain executes them over those of a plain CNN (checked in the next test)."""
    from eqtrain.cli.bench import forward_flops

    model = paper_cnn()
    return forward_flops(model, executed=True) / forward_flops(model)


def test_bench_reports_the_ensemble_its_fraction_of_peak_and_the_evaluation(capsys):
    """What eqtrain-bench reports besides the ratios: model-steps/s, FLOP/s against a matmul, evaluation per image."""
    bench(["--batch", "10", "--steps", "2", "--rounds", "1", "--warmup", "1", "--seeds", "2"])
    ensemble = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["ensemble"]
    assert ensemble["seeds"] == 2 and ensemble["model_steps_per_s"]["ensemble"] > 0
    assert 0 < ensemble["fraction_of_peak"] < 1.5  # a step's FLOP/s over a 2048^3 matmul's
    assert ensemble["step_gflops"] == pytest.approx(ensemble["fraction_of_peak"] * ensemble["matmul_gflops"], rel=0.05)
    # what eqtrain executes: conv1 with its pooling in the filter, 4x4 at 14x14 (next test); to the
    # report's 6 decimals
    assert ensemble["fraction_of_peak_executed"] == pytest.approx(
        ensemble["fraction_of_peak"] * executed_over_plain(), rel=1e-3
    )
    assert ensemble["eval_us_per_image_seed"] > 0


def test_the_paper_cnn_costs_its_known_flops():
    """conv1 1→16 and conv2 16→16 (3x3) on 28x28 and 14x14, head 784→10: 1.14 MFLOP per image (SPEC §8);
    0.52 as executed."""
    from eqtrain.cli.bench import forward_flops

    model = paper_cnn()
    assert forward_flops(model) == 2 * (16 * 1 * 9 * 28 * 28 + 16 * 16 * 9 * 14 * 14 + 10 * 784)
    # as executed: each conv and its 2x2 average pooling are one 4x4 conv at the pooled pixels (14x14, 7x7)
    assert forward_flops(model, executed=True) == 2 * (16 * 1 * 16 * 14 * 14 + 16 * 16 * 16 * 7 * 7 + 10 * 784)
