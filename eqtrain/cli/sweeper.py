"""eqtrain's default sweeper: Hydra's grid, without the jobs that would repeat another job exactly.

γ (and its schedule) means nothing to a mode without a regularizer (SPEC §4: nominal, augmented,
equivariant), so ``-m mode=nomreg,augreg,equivariant gamma=0.01,0.1,1,10`` would train the
equivariant model four times, identically. This sweeper drops the γ overrides of such jobs and
keeps one job per distinct command line: 9 jobs there, not 12. Everything else is Hydra's
BasicSweeper. ``hydra/sweeper=grid`` selects it (configs/hydra/sweeper/grid.yaml); the named
sweeps and the accuracy studies do. ``exclude`` (a list of ``{key: value or [values]}``) drops the jobs
that match every key of one entry: the rotated-MNIST study sweeps ``model=p4cnn,z2cnn`` but trains
the plain Z2CNN only as the nominal and augmented baselines. Before the first job of a sweep on this machine
(Hydra's basic launcher) starts, every job is checked against the memory model (``memory_problem``): a study
whose ninth job cannot fit is refused in one line, not stopped after eight. Hydra loads sweepers only from its
``hydra_plugins`` namespace, so the class itself lives in hydra_plugins/eqtrain_sweeper/ and calls the
functions here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from omegaconf import DictConfig, open_dict

from ..training.modes import MODES

GAMMA_KEYS = ("gamma", "gamma_schedule", "gamma_start", "gamma_ramp_epochs", "gamma_ramp_steps")
GAMMA_F_KEYS = ("gamma_f", "gamma_f_layers")  # read by the function-penalized modes only


def _values(job: list[str]) -> dict[str, str]:
    return {k.lstrip("+~"): v for k, v in (o.split("=", 1) for o in job if "=" in o)}


def matches(values: Mapping[str, str], entry: Mapping[str, object]) -> bool:
    """Whether a job (its ``key=value`` as a mapping) sets every key of ``entry`` to its value (or to one
    of its values, given a list)."""
    for key, wanted in entry.items():
        allowed = wanted if isinstance(wanted, Sequence) and not isinstance(wanted, str) else [wanted]
        if key not in values or not any(_same(values[key], a) for a in allowed):
            return False
    return True


def _same(text: str, value: object) -> bool:
    """Whether a job's ``key=text`` sets ``value`` (a YAML value: null, true, 1 and 1.0 as Hydra writes them)."""
    if value is None or isinstance(value, bool):
        return text == {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, (int, float)):
        try:
            return float(text) == float(value)
        except ValueError:
            return False
    return text == str(value)


def constant_keys(jobs: list[list[str]]) -> list[str]:
    """The keys every job sets to the same value (a budget such as ``epochs=2``): they name no job apart."""
    if len(jobs) < 2:
        return []
    values = [_values(job) for job in jobs]
    keys = set().union(*values)
    return sorted(k for k in keys if all(k in v for v in values) and len({v[k] for v in values}) == 1)


def named_by_what_differs(jobs: list[list[str]], excluded: Sequence[str]) -> list[list[str]]:
    """Each job with one more override: its directory name (``hydra.job.override_dirname``) and TensorBoard's
    compared hparams leave out what every job shares, so ``0_gamma=0.1,mode=augreg`` tells jobs apart where
    ``0_dataset.test_limit=100,dataset.train_l…`` did not. A key the config leaves out of every run's name (a
    preset: ``recipe``, ``experiment``) names the jobs where it is what differs (``recipe=adam_b32,...``)."""
    constant = constant_keys(jobs)
    varying = {key for job in jobs for key in _values(job)} - set(constant) if len(jobs) > 1 else set()
    leave_out = sorted({*(k for k in excluded if k not in varying), *constant})
    setting = f"hydra.job.config.override_dirname.exclude_keys=[{','.join(leave_out)}]"
    return [[*job, setting] for job in jobs]


def unknown_exclude_keys(jobs: list[list[str]], exclude: Sequence[Mapping[str, object]]) -> str | None:
    """The one line for an ``exclude`` entry naming a key that no job sets (a typo such as ``modee``, or a key
    the jobs take from a preset's defaults), which would silently exclude nothing; None if every key is set."""
    keys = sorted({key for job in jobs for key in _values(job)})
    for entry in exclude:
        unknown = [key for key in entry if key not in keys]
        if unknown:
            return (
                f"hydra.sweeper.exclude: {unknown[0]} is not set by any job of this sweep, so the entry "
                f"{dict(entry)} would exclude nothing; use keys the jobs set: {', '.join(keys)}"
            )
    return None


def without_repeats(
    jobs: list[list[str]], default_mode: str | None = None, exclude: Sequence[Mapping[str, object]] = ()
) -> list[list[str]]:
    """The jobs (lists of ``key=value``) that match no ``exclude`` entry, γ keys dropped where the job's
    mode has no regularizer (γ_f keys where it has no function-space penalty), deduplicated."""
    kept, seen = [], set()
    for job in jobs:
        values = _values(job)
        if any(matches(values, entry) for entry in exclude):
            continue
        mode = values.get("mode", default_mode)
        if "phases" not in values and mode in MODES:
            unread = (() if MODES[mode].regularize else GAMMA_KEYS) + (
                () if MODES[mode].penalize_function else GAMMA_F_KEYS
            )
            job = [o for o in job if o.split("=", 1)[0].lstrip("+~") not in unread]
        if tuple(job) not in seen:
            seen.add(tuple(job))
            kept.append(job)
    return kept


def memory_problem(cfg: DictConfig) -> str | None:
    """Why the job of ``cfg`` (a sweep's composed config) cannot fit in the memory left on this machine: the run's
    own one line (``footprint.check_run_fits``), or None. A config the run itself would refuse is left to the
    job, which reports it as it always does; so is a run on a GPU, which the memory model does not cover."""
    from ..data.datasets import N_CLASSES, image_shape_of
    from ..geometry.group import Group
    from ..training.footprint import check_run_fits
    from ..training.settings import ConfigError
    from .errors import USER_ERRORS, settings_of

    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.pop("hydra", None)  # as the launcher hands it to the job
    try:
        settings = settings_of(cfg)  # as the job validates it
        shape = image_shape_of(settings.config.dataset)
        group = Group.from_name(settings.config.group.name)
    except USER_ERRORS:  # what the job reports itself
        return None
    if settings.device.type != "cpu":
        return None
    try:
        check_run_fits(settings, group, shape, N_CLASSES)
    except ConfigError as err:
        return str(err)
    return None
