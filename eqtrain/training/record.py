"""What a run writes for each of its seeds: config.yaml, TensorBoard curves and hparams, metrics.json, weights.pt.

An ensemble of N seeds writes N run directories (``seed=<s>/``), each exactly what that seed's
own run would write, so every tool reads them the same way; a single run writes into its own
directory. A seed that diverged is evaluated and recorded where it diverged.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import OmegaConf

from ..data.datasets import Data
from ..geometry.group import Group
from ..run.files import CONFIG_FILE, METRICS_FILE, WEIGHTS_FILE, save_weights, seed_dir, write_json
from ..run.tblog import RunLogger
from .metrics import HPARAM_METRICS, evaluate, step_tags
from .settings import Settings, compared_keys
from .state import RunState
from .steplog import StepLog


class Recorder:
    def __init__(
        self, settings: Settings, run_dir: Path, state: RunState, resumed: bool, overrides: Sequence[str] = ()
    ) -> None:
        self.settings, self.seed_ids = settings, state.seed_ids
        self.dirs = [seed_dir(run_dir, s, len(self.seed_ids)) for s in self.seed_ids]
        self.loggers = []
        compared = compared_keys(overrides, list(settings.hparams(self.seed_ids[0])))  # the same keys for all
        for seed, d in zip(self.seed_ids, self.dirs):
            d.mkdir(parents=True, exist_ok=True)
            (d / CONFIG_FILE).write_text(OmegaConf.to_yaml(OmegaConf.structured(settings.of_seed(seed))))
            logger = RunLogger(d, purge_step=state.step if resumed else None)
            if not resumed:
                logger.hparams(settings.hparams(seed), list(HPARAM_METRICS), compared)
            self.loggers.append(logger)
        function = any(p.dyn.penalize_function for p in settings.phases)
        tags = step_tags(state.model.layer_names, function) + (("twin/dist",) if state.twin is not None else ())
        self.steps = StepLog(state.model.space, self.loggers, tags, settings.config.data_scale)
        self.metrics: list[dict[str, float]] = [{} for _ in self.seed_ids]
        self.evaluated_at = -1

    def evaluate(self, state: RunState, data: Data, group: Group) -> list[dict[str, float]]:
        """Evaluate every seed's model now; log the seeds still running at the current step."""
        self.steps.flush()  # the steps before it first: TensorBoard drops events that go back in steps
        cfg = self.settings.config
        self.metrics = evaluate(state.model, data, group, cfg.eval_train_images, batch_norm_chunk=cfg.batch_size)
        self.evaluated_at = state.step
        for logger, metrics, done in zip(self.loggers, self.metrics, state.diverged):
            if not done:
                logger.log(state.step, metrics)
        return self.metrics

    def flush(self) -> None:
        self.steps.flush()
        for logger in self.loggers:
            logger.flush()

    def interrupted(self, state: RunState) -> None:
        for seed, d, logger in zip(self.seed_ids, self.dirs, self.loggers):
            logger.close()
            write_json(
                d / METRICS_FILE, {"status": "interrupted", "steps": state.step, "hparams": self.settings.hparams(seed)}
            )

    def finish(self, state: RunState, data: Data, group: Group, steps_per_epoch: int) -> list[dict[str, object]]:
        """Final evaluation, distances, metrics.json and weights.pt of every seed; returns their results."""
        self.steps.flush()
        if self.evaluated_at != state.step:
            self.evaluate(state, data, group)
        finals = state.model.distances()
        died_at = state.diverged_at.tolist()
        weights = [a.detach() for a in state.model.weights()]
        results = []
        for k, (seed, d, logger) in enumerate(zip(self.seed_ids, self.dirs, self.loggers)):
            end = died_at[k] if state.diverged[k] else state.step
            if state.diverged[k]:  # its curves end where it diverged; so does its last evaluation
                logger.log(end, self.metrics[k])
            final = finals.of_seed(k)
            start = dict(zip(("dist_to_E/start", "dist_to_E_rel/start"), state.start_distances[k, -2:].tolist()))
            logger.log(end, final)
            logger.close()
            finite = all(torch.isfinite(a[k]).all() for a in weights)
            if finite:
                save_weights(d / WEIGHTS_FILE, weights_payload(state, k, end))
            results.append(
                {
                    **self.metrics[k],
                    **final,
                    **start,
                    "status": "diverged" if state.diverged[k] or not finite else "completed",
                    "steps": end,
                    "epochs_done": state.epoch if not state.diverged[k] else end // steps_per_epoch,
                    "dim_E": state.model.dim_e(),
                    "n_params": state.model.n_params(),
                    "hparams": self.settings.hparams(seed),
                }
            )
            write_json(d / METRICS_FILE, results[-1])
        return results


def weights_payload(state: RunState, k: int, step: int) -> dict:
    """weights.pt of seed k: A (a list of (out, in, s) tensors), the layer names, and θ of a 1-seed model."""
    model = state.model
    with torch.no_grad():
        return {
            "step": step,
            "constrain": model.constrain,  # which parametrization θ (state_dict) belongs to
            "coordinates": model.coordinates,  # and in E, which coordinates (SPEC §12.3; None in L)
            "layer_names": list(model.layer_names),
            "weights": [a[k].detach().cpu().clone() for a in model.weights()],
            "state_dict": {name: v[k : k + 1].detach().cpu().clone() for name, v in model.state_dict().items()},
        }


def summary_of(results: list[dict[str, object]]) -> dict[str, object]:
    """A single run's result as it is; an ensemble's as the mean of its seeds, with every seed's result."""
    if len(results) == 1:
        return results[0]
    numeric = [key for key, v in results[0].items() if isinstance(v, float)]
    summary = {key: sum(r[key] for r in results) / len(results) for key in numeric}
    status = "completed" if all(r["status"] == "completed" for r in results) else "diverged"
    return {**summary, "status": status, "runs": results}
