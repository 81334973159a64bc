"""The ``eqtrain`` command: Hydra composes the config, it is validated once, ``train`` runs it.

Errors a user can fix (a bad value, missing data files, an unusable output directory) end a
single run with one line on stderr, ``eqtrain: error: ...``, and exit status 2. In a sweep
the job fails but the launcher goes on with the others; Hydra reports the failure at the end.

Nothing heavy is imported before Hydra has parsed the command line and the overrides passed the
precheck: a typo or ``--help`` is answered without importing torch.
"""

from __future__ import annotations

import difflib
import logging
import re
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType, ValueType
from hydra.core.plugins import Plugins
from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import BooleanNode, DictConfig, FloatNode, IntegerNode, ListConfig, OmegaConf, StringNode, open_dict
from omegaconf.errors import ValidationError

from ..run.files import output_dir_problem
from ..run.machine import cpus_allowed
from ..schema import Config
from .errors import USER_ERRORS, fail, settings_of
from .summary import run_summary

log = logging.getLogger("eqtrain")


def register_configs() -> None:
    """The schema as Hydra's ``eqtrain_schema`` (configs/config.yaml builds on it), and the ``inv`` resolver."""
    ConfigStore.instance().store(name="eqtrain_schema", node=Config)
    # ${inv:${batch_size}}: the paper preset's data_scale = 1 / batch_size
    OmegaConf.register_new_resolver("inv", lambda x: 1.0 / float(x), replace=True)


def register_sweeper() -> None:
    """eqtrain's grid sweeper, registered by hand: an editable install hides it from Hydra's plugin scan.

    Imported only after that scan (``Plugins.instance()``), which reloads Hydra's own sweeper module.
    """
    plugins = Plugins.instance()
    from hydra_plugins.eqtrain_sweeper.grid_sweeper import GridSweeper

    plugins.register(GridSweeper)


register_configs()


class JobFailed(CompactHydraException):
    """A sweep's job stopped on a user error. Hydra prints a compact exception as its message alone, so
    the end of the sweep names the job's overrides and this one line, without a traceback."""


def out_of_memory(err: BaseException) -> str | None:
    """One line for an allocation that failed (a size the checks could not foresee), or None for other errors."""
    text = str(err)
    if not isinstance(err, (MemoryError, RuntimeError)) or (
        isinstance(err, RuntimeError) and "can't allocate memory" not in text and "out of memory" not in text
    ):  # (the CPU allocator's words; CUDA's torch.OutOfMemoryError is a RuntimeError saying "out of memory")
        return None
    tried = re.search(r"allocate (\d+) bytes", text)
    cuda = re.search(r"Tried to allocate ([\d.]+ [KMGT]iB)", text)
    size = f" of {int(tried.group(1)) / 2**30:.1f} GiB" if tried else f" of {cuda.group(1)}" if cuda else ""
    return (
        f"not enough memory: an allocation{size} failed; lower seeds, batch_size, model.channels or "
        "dataset.image_size (docs/design.md, 'Memory model')"
    )


def message_of(err: Exception) -> str:
    """One line: an OSError names its file and the system's reason."""
    if isinstance(err, OSError) and err.strerror and not isinstance(err, FileNotFoundError):
        return f"cannot write {err.filename or 'a file'}: {err.strerror}" if err.filename else f"{err.strerror}"
    return " ".join(str(err).split())


class SweepSummary(Callback):
    """At the end of a sweep: one line per run, and the commands that show it."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from .summary import sweep_summary

        print(sweep_summary(Path(config.hydra.sweep.dir)))


class OutputDirCheck(Callback):
    """Refuse an output directory that cannot be written, before Hydra tries to create it."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check("hydra.run.dir", config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check("hydra.sweep.dir", config.hydra.sweep.dir)

    @staticmethod
    def _check(key: str, directory: str) -> None:
        problem = output_dir_problem(directory)
        if problem:
            fail(unwritable_output(key, directory, problem))


def unwritable_output(key: str, directory: str | Path, problem: str) -> str:
    """The one line for an output directory that cannot be written (the command line's and Python's)."""
    return f"{key}={str(directory)!r} is not writable ({problem}); pass a writable {key}=..."


def with_grid_sweeper(args: list[str]) -> list[str]:
    """``-m`` sweeps with eqtrain's grid sweeper (configs/hydra/sweeper/grid.yaml) unless the command line picks
    a sweeper, a search (``hparams_search``: Optuna's) or config directories of its own.

    The grid is Hydra's, less the jobs that would repeat another exactly, each job named by what differs
    between the jobs. (Said on the command line, not in the primary config's defaults, where it would also
    override the sweeper an ``hparams_search`` option chooses.)
    """
    if not {"-m", "--multirun"} & set(args):
        return args
    keys = {a.split("=", 1)[0].lstrip("+~") for a in args}
    if keys & {"hydra/sweeper", "hparams_search", *OWN_CONFIGS}:
        return args
    return [*args, "hydra/sweeper=grid"]


def resolved_note(args: list[str]) -> str:
    """A comment after ``eqtrain --cfg job ...``: the values the run resolves that the YAML shows unset (γ, the
    equivariant coordinates, the step-size decay), what a sweep sets per job, or why the run would be refused."""
    from hydra import compose, initialize_config_module

    given = [a for a in args if "=" in a and not a.startswith(("-", "hydra.", "hydra/"))]
    try:
        parsed = OverridesParser.create().parse_overrides(given)
    except Exception as err:  # noqa: BLE001
        return f"# this run would be refused: {message_of(err)}"
    swept = [o.key_or_group for o in parsed if o.is_sweep_override()]
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    try:
        with initialize_config_module(config_module="eqtrain.configs", version_base="1.3"):
            cfg = compose(config_name="config", overrides=fixed, return_hydra_config=True)
        swept += [str(k) for k in (cfg.hydra.sweeper.get("params") or {})]
        with open_dict(cfg):
            del cfg["hydra"]
        settings = settings_of(cfg)
    except Exception as err:  # noqa: BLE001  (any refusal: the note says it, Hydra's output stays as it is)
        return f"# this run would be refused: {message_of(err)}"
    cfg = settings.config
    if not any(p.dyn.regularize for p in settings.phases):
        why = f" (mode={settings.mode} has no regularizer)"
    else:
        why = " (unset: the default of the regularized modes)" if cfg.gamma is None else ""
    used = [f"gamma={settings.gamma:g}{why}"]
    if any(p.dyn.penalize_function for p in settings.phases):
        unset = " (unset: the default of the function-penalized modes)" if cfg.gamma_f is None else ""
        used.append(f"gamma_f={settings.gamma_f:g}{unset} on {', '.join(cfg.gamma_f_layers)}")
    used.append(f"optimizer: {settings.update_rule.describe()}")
    if cfg.lr_schedule in ("step", "exp") and cfg.lr_decay is None:
        used.append(f"lr_decay={settings.lr_decay:g}")
    if any(p.dyn.constrain for p in settings.phases) or cfg.twin:
        used.append(f"equivariant coordinates: {settings.coordinates}")
    if swept:
        used.append(f"a sweep's jobs each set their own {', '.join(dict.fromkeys(swept))}")
    return "# the run uses: " + "; ".join(used)


def compared_overrides() -> list[str]:
    """The overrides TensorBoard's HParams table marks as compared: a sweep job's that its directory is named
    by (what differs between the jobs, where the grid sweeper says so), a single run's every override."""
    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return overrides
    excluded = set(hydra_cfg.job.config.override_dirname.exclude_keys)
    return [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in excluded]


def adapt_to_launcher(cfg: DictConfig) -> None:
    """Launcher-dependent defaults, said out loud in configs/hydra/launcher/*.yaml.

    - joblib (``hydra/launcher=parallel``): n_jobs jobs share the cores, so each job gets
      (CPUs this process may use) // n_jobs torch threads unless ``threads`` is set.
    - submitit (SLURM or local): a preempted job is requeued into the same directory, so
      ``resume`` defaults to ``auto`` (continue from the checkpoint if there is one).
    """
    launcher = HydraConfig.get().launcher
    target = str(launcher.get("_target_", ""))
    with open_dict(cfg):
        if "joblib" in target and cfg.threads is None:
            n_jobs = int(launcher.get("n_jobs", -1))
            cores = cpus_allowed()  # the affinity mask (taskset, SLURM's cgroups), not the machine's count
            cfg.threads = max(1, cores // n_jobs) if n_jobs > 0 else 1
        if "submitit" in target and cfg.resume is None:
            cfg.resume = "auto"


def objective(result: dict, cfg: DictConfig) -> float:
    """The value a sweeper optimises: ``search.metric``, minus 1 above the distance bound."""
    value = float(result.get(cfg.search.metric, float("nan")))
    bound = cfg.search.max_dist_rel
    if bound is not None and not float(result.get("dist_to_E_rel/total", float("inf"))) <= bound:
        value -= 1.0
    return value


GROUPS = ("dataset", "model", "mode", "group", "optimizer", "experiment", "recipe", "sweep", "hparams_search")


VALUE_FLAGS = ("-sc", "--shell-completion", "-cn", "--config-name", "-cp", "--config-path", "-cd", "--config-dir",
               "-p", "--package", "-i", "--info", "--cfg", "-c", "--experimental-rerun")  # fmt: skip
OWN_CONFIGS = ("-cp", "--config-path", "-cd", "--config-dir", "hydra.searchpath")  # options beyond ours


def precheck(args: list[str]) -> str | None:
    """One clear line for the commonest typos — an unknown key or group option, a value that is not an
    int, a number or a bool where the key needs one — or None.

    Overrides are read with Hydra's own parser; only plain changes of a key or of a group's option
    are checked (sweeps included), everything else — additions, deletions, packages, ``hydra.*``,
    glob/range sweeps, config directories of the user's own — is left to Hydra.
    """
    parser = OverridesParser.create()
    schema = OmegaConf.structured(Config)
    configs = resources.files("eqtrain.configs")
    check_groups = not any(a.split("=")[0] in OWN_CONFIGS for a in args)
    after_flag = False
    for arg in args:
        if after_flag or arg.startswith("-"):
            after_flag = arg in VALUE_FLAGS
            continue
        try:
            override = parser.parse_override(arg)
        except Exception:  # noqa: BLE001  (Hydra reports its own syntax errors)
            continue
        key = override.key_or_group
        # ``+key=`` and ``++key=`` (Hydra's append and force-append) name a key as ``key=`` does: a typo
        # there would otherwise add a key nothing reads, and the run would go on with the default
        if override.package or key.startswith("hydra") or "/" in key:
            continue
        if override.type == OverrideType.DEL and key not in GROUPS:  # every key has a default: nothing to remove
            unknown = _schema_path_problem(schema, key)
            return unknown or f"~{key} is not valid: eqtrain's keys all have defaults, set it instead ({key}=...)"
        if override.type == OverrideType.DEL:
            continue
        if key in GROUPS and override.type == OverrideType.ADD:  # every group is in the defaults list already
            return f"{arg} is not valid: {key} is chosen with {key}=<option> (no +)"
        if key in GROUPS:
            chosen = _plain_values(override)
            if chosen is None:
                continue
            options = sorted(
                p.name.removesuffix(".yaml") for p in configs.joinpath(key).iterdir() if p.name.endswith(".yaml")
            )
            for option in chosen:
                if check_groups and option is not None and str(option) not in options:
                    return f"{key}={option} is not an option of {key}; valid: {', '.join(options)}"
            continue
        problem = _schema_path_problem(schema, key)
        if problem:
            return problem
        node = _schema_node(schema, key)
        if node is not None:
            problem = _type_problem(key, node, override)
            if problem:
                return problem
    return None


def _schema_node(schema: DictConfig, key: str):
    """The schema's node of a dotted key, or None past a list index or a free-form value."""
    node = schema
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part.isdigit():
            return None  # list indices and free-form values: Hydra checks them
        node = node._get_node(part)
    return node


def _schema_path_problem(schema: DictConfig, key: str) -> str | None:
    """ "unknown key ..." with the nearest known one (a key or a config group), or None if ``key`` exists."""
    node, path = schema, key.split(".")
    for i, part in enumerate(path):
        if not isinstance(node, DictConfig) or part.isdigit():
            return None
        if part not in node:
            known = [str(k) for k in node.keys()] + (list(GROUPS) if i == 0 else [])
            near = difflib.get_close_matches(part, known, n=1)
            hint = f" (did you mean {'.'.join([*path[:i], near[0]])}?)" if near else ""
            return f"unknown key {key!r}{hint}; `eqtrain --help` lists every key"
        node = node._get_node(part)
    return None


KINDS = {IntegerNode: "an int", FloatNode: "a number", BooleanNode: "true or false"}


def _plain_values(override) -> list | None:
    """The value of ``key=value``, or each value of a choice sweep ``key=a,b``; None for ranges, globs and
    intervals (Hydra checks those)."""
    if override.value_type == ValueType.ELEMENT:
        return [override.value()]
    if override.value_type in (ValueType.CHOICE_SWEEP, ValueType.SIMPLE_CHOICE_SWEEP):
        return list(override.value().list)
    return None


def _type_problem(key: str, node: object, override) -> str | None:
    """One line if a plain value (or one of a sweep's) does not fit the key's type (int, number, bool, or a
    list: ``model.channels=8`` was Hydra's five lines and exit 1)."""
    if isinstance(node, ListConfig):
        for value in _plain_values(override) or ():
            if value is not None and not isinstance(value, list) and not (isinstance(value, str) and "${" in value):
                return f"{key}={value} is not valid: use a list, e.g. {key}=[{value}]"
        return None
    if isinstance(node, StringNode):  # ``mode.name=[augreg]``: a list or a mapping is no string
        for value in _plain_values(override) or ():
            if isinstance(value, (list, dict)):
                return f"{key}={override.get_value_element_as_str()} is not valid: use one value, not a list"
        return None
    values = _plain_values(override) if type(node) in KINDS else None
    for value in values or ():
        if isinstance(value, str) and "${" in value:
            continue  # an interpolation: resolved later
        try:
            node.validate_and_convert(value)
        except ValidationError:
            shown = "null" if value is None else value
            return f"{key}={shown} is not valid: use {KINDS[type(node)]}"
    return None


def run() -> None:
    """The console script: a one-line check of the overrides, then Hydra."""
    problem = precheck(sys.argv[1:])
    if problem:
        fail(problem)
    register_sweeper()
    sys.argv = [sys.argv[0], *with_grid_sweeper(sys.argv[1:])]
    main()
    args = sys.argv[1:]
    asked = any(a in ("--cfg", "-c") or a.startswith("--cfg=") for a in args)
    if asked and not any(a.split("=")[0] in OWN_CONFIGS for a in args):  # Hydra printed eqtrain's config
        print(resolved_note(args))


@hydra.main(version_base="1.3", config_path="pkg://eqtrain.configs", config_name="config")
def main(cfg: DictConfig) -> float | None:
    adapt_to_launcher(cfg)
    try:
        settings = settings_of(cfg)  # every value checked before torch is imported
        from ..training.loop import train

        run_dir = HydraConfig.get().runtime.output_dir
        result = train(settings, run_dir, compared_overrides())
    except (*USER_ERRORS, MemoryError, RuntimeError) as err:
        oom = out_of_memory(err)
        if oom is None and not isinstance(err, USER_ERRORS):
            raise
        message = oom or message_of(err)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            log.error("%s", message)  # the job fails, the sweep goes on; Hydra reports it at the end
            raise JobFailed(f"eqtrain: error: {message}") from None
        fail(message)
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        print(
            run_summary(
                result, Path(cfg.resume) if isinstance(cfg.resume, str) and cfg.resume != "auto" else Path(run_dir)
            )
        )
    return objective(result, cfg)


if __name__ == "__main__":
    run()
