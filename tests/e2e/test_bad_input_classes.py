"""Every bad input one line, by class: each refusal is one line naming the key or file, the bad value and what is
valid, exit status 2 from the command line and ``eqtrain.ConfigError`` from Python, with nothing written lost."""

import resource
import subprocess

import pytest

import eqtrain

from ..helpers import EQTRAIN, cli, fast_first

QUICK = ("experiment=smoke", "max_steps=2", "device=cpu")  # the memory checks and limits below are the CPU's


def one_line(tmp_path, monkeypatch, capsys, *overrides: str, same_until: str | None = None) -> str:
    """The command line's refusal (exit 2, one line), and the same line from Python (up to ``same_until``
    where the rest is measured anew, such as the memory available)."""
    code, err = cli(tmp_path, monkeypatch, capsys, *QUICK, *overrides)
    assert code == 2 and err.count("\n") == 1 and err.startswith("eqtrain: error: "), err
    line = err.removeprefix("eqtrain: error: ").strip()
    with pytest.raises(eqtrain.ConfigError) as python:
        eqtrain.train([*QUICK, *overrides], run_dir=tmp_path / "python")
    cut = (lambda text: text.split(same_until)[0]) if same_until else (lambda text: text)
    assert cut(str(python.value)) == cut(line)
    return line


# -- unknown keys, however they are written --------------------------------------------------------------
UNKNOWN = [
    ("+gamm=0.1", "unknown key 'gamm' (did you mean gamma?)"),
    ("++gamm=0.1", "unknown key 'gamm' (did you mean gamma?)"),
    ("~gamm", "unknown key 'gamm' (did you mean gamma?)"),
    ("+model.kernal_size=3", "unknown key 'model.kernal_size' (did you mean model.kernel_size?)"),
    ("+experimnt=paper", "unknown key 'experimnt' (did you mean experiment?)"),
    ("~gamma", "~gamma is not valid: eqtrain's keys all have defaults, set it instead (gamma=...)"),
    ("+recipe=cohen_welling", "+recipe=cohen_welling is not valid: recipe is chosen with recipe=<option> (no +)"),
]


def test_a_forced_group_choice_is_still_hydras():
    """++group=option (Hydra's force-add, which replaces the defaults' choice) is no typo: left to Hydra."""
    from eqtrain.cli.train import precheck

    assert precheck(["++mode=nominal"]) is None
    assert precheck(["+mode=nominal"]).startswith("+mode=nominal is not valid: mode is chosen with mode=<option>")


@pytest.mark.parametrize("override,message", fast_first(UNKNOWN, fast=2, ids=[o for o, _ in UNKNOWN]))
def test_a_typo_is_a_typo_however_the_key_is_written(tmp_path, monkeypatch, capsys, override, message):
    assert message in one_line(tmp_path, monkeypatch, capsys, override)


# -- values past what their type holds ----------------------------------------------------------------------
BIG = 2**64
OVERFLOWS = [
    (f"seed={BIG}", f"seed={BIG} is not valid: outside a 64-bit int"),
    (f"model.basis_seed={-BIG}", f"model.basis_seed={-BIG} is not valid: outside a 64-bit int"),
    (f"dataset.rotate_seed={BIG}", f"dataset.rotate_seed={BIG} is not valid: outside a 64-bit int"),
    (f"max_steps={BIG}", f"max_steps={BIG} is not valid: outside a 64-bit int"),
    (f"model.channels=[{BIG},4]", f"model.channels.0={BIG} is not valid: outside a 64-bit int"),
    ("seed=9223372036854775000", "seed=9223372036854775000 is not valid: use an int in [-9223344366821, 9223344366821]"),
    ("threads=100000", "threads=100000 is not valid: use an int in [1, 65536] or null"),
]  # fmt: skip


# -- a single value where the key holds a list, a list where it holds one ----------------------------------
SCALARS = [
    ("model.channels=8", "model.channels=8 is not valid: use a list, e.g. model.channels=[8]"),
    ("gamma_f_layers=logits", "gamma_f_layers=logits is not valid: use a list, e.g. gamma_f_layers=[logits]"),
    ("optimizer.betas=0.9", "optimizer.betas=0.9 is not valid: use a list, e.g. optimizer.betas=[0.9]"),
    ("model.channels=[8],16", "model.channels=16 is not valid: use a list"),  # one job of a sweep
    ("mode.name=[augreg]", "mode.name=[augreg] is not valid: use one value, not a list"),  # and the other way
]


@pytest.mark.parametrize("override,message", fast_first(SCALARS, fast=2, ids=[o for o, _ in SCALARS]))
def test_a_value_of_the_wrong_shape_is_one_line(tmp_path, monkeypatch, capsys, override, message):
    """Before: Hydra's "Error merging override" in five lines, exit 1."""
    assert one_line(tmp_path, monkeypatch, capsys, override).startswith(message)


@pytest.mark.parametrize("override,message", fast_first(OVERFLOWS, fast=2, ids=[o for o, _ in OVERFLOWS]))
def test_a_value_its_type_cannot_hold_names_the_key(tmp_path, monkeypatch, capsys, override, message):
    """Before: torch's "Overflow when unpacking long long", naming nothing."""
    assert one_line(tmp_path, monkeypatch, capsys, override).startswith(message)


# -- sizes no machine runs ------------------------------------------------------------------------------------
def _limited_memory():
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))  # a regression dies of MemoryError, not the machine


def test_a_billion_seeds_are_refused_before_anything_is_sized_by_them(tmp_path):
    """Before: a MemoryError traceback (or the kernel's OOM kill) while building the seeds' tuple. Now the
    validation refuses it, under a 2 GiB address-space limit, before torch is even imported."""
    proc = subprocess.run(
        [EQTRAIN, *QUICK, "seeds=1000000000", f"hydra.run.dir={tmp_path}/run"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, preexec_fn=_limited_memory,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("eqtrain: error: seeds=1000000000 is not valid: each seed needs at least 8 KiB")
    assert proc.stderr.count("\n") == 1


@pytest.fixture
def machine_of_16_gib(monkeypatch):
    """A machine with 16 GiB, all of it free (less than a real one: a refusal never depends on what else runs,
    and a check that failed to refuse would fail an allocation rather than exhaust the machine)."""
    from eqtrain.run import machine
    from eqtrain.training import footprint

    for module, name in ((machine, "memory_limit"), (machine, "available_bytes"), (footprint, "available_bytes")):
        monkeypatch.setattr(module, name, lambda: 16 << 30)


def test_a_million_seeds_are_refused_by_the_memory_model_naming_what_fits(
    tmp_path, monkeypatch, capsys, machine_of_16_gib
):
    """Before: 32 s and 1 GB checking a million seed directories first; the memory model's line is the answer."""
    line = one_line(tmp_path, monkeypatch, capsys, "seeds=1000000")
    assert line.startswith("seeds=1000000 needs about") and "but 16.0 GiB is available: seeds<=" in line


def test_a_model_one_seed_of_which_cannot_be_built_is_refused_before_building_it(
    tmp_path, monkeypatch, capsys, machine_of_16_gib
):
    """Before: the kernel's OOM kill (exit 137) building a hundred million channels, or torch's "Storage size
    calculation overflowed" traceback near 2⁶³."""
    for channels, entries in (("[100000000,4]", "4.5e+09"), ("[9223372036854775807,4]", "4.15e+20")):
        line = one_line(tmp_path, monkeypatch, capsys, f"model.channels={channels}")
        assert line.startswith(f"model.channels={channels.replace(',', ', ')} makes {entries} weights per seed")
        assert line.endswith("but 16.0 GiB is available; use fewer channels")


@pytest.mark.parametrize(
    "override,message,same_until",
    [
        ("dataset.image_size=100000", "dataset.image_size=[100000, 100000] makes 1797 images of 1x100000x100000", None),
        ("model.kernel_size=10001", "model.kernel_size=10001 is larger than the 28x28 images: use an odd size up to 27", None),
    ],
)  # fmt: skip
def test_sizes_that_would_be_allocated_first_are_refused_naming_the_key(
    tmp_path, monkeypatch, capsys, override, message, same_until
):
    """Before: "DefaultCPUAllocator: can't allocate memory" tracebacks (67 000 GiB of images; k²×k² projections)."""
    assert one_line(tmp_path, monkeypatch, capsys, override, same_until=same_until).startswith(message)


def test_an_allocation_no_check_foresaw_is_one_line(tmp_path):
    """The safety net: under a 4 GiB address-space limit a model of 3000 channels per layer fails to allocate;
    the user reads one line with what to lower, not torch's allocator traceback."""
    proc = subprocess.run(
        [EQTRAIN, *QUICK, "model.channels=[3000,3000]", f"hydra.run.dir={tmp_path}/run"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30)),
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert (
        proc.stderr.startswith("eqtrain: error: not enough memory: an allocation of") and proc.stderr.count("\n") == 1
    )
    assert "lower seeds, batch_size, model.channels or dataset.image_size" in proc.stderr


# -- the run directory, from Python as from the command line ----------------------------------------------------
def test_an_unusable_run_directory_is_the_same_line_from_python(tmp_path, monkeypatch, capsys):
    """A file where the directory should be, or a directory below a file: the command line's refusal of
    hydra.run.dir, for Python's run_dir argument (before: FileExistsError / NotADirectoryError tracebacks)."""
    (tmp_path / "afile").write_text("mine")
    for where, reason in (("afile", "File exists"), ("afile/below", "Not a directory")):
        code, err = cli(tmp_path, monkeypatch, capsys, *QUICK, f"hydra.run.dir={tmp_path / where}")
        assert code == 2 and f"hydra.run.dir='{tmp_path / where}' is not writable ({reason})" in err
        with pytest.raises(eqtrain.ConfigError, match=rf"run_dir='{tmp_path / where}' is not writable \({reason}\)"):
            eqtrain.train(list(QUICK), run_dir=tmp_path / where)
    assert (tmp_path / "afile").read_text() == "mine"
    eqtrain.train(list(QUICK), run_dir=tmp_path / "run")
    with pytest.raises(eqtrain.ConfigError, match="already holds a run; refusing to overwrite it"):
        eqtrain.train(list(QUICK), run_dir=tmp_path / "run")


# -- force_resume across runs whose state cannot be carried over ----------------------------------------------
ACROSS = [
    ("mode=equivariant", "the checkpoint's run had mode.name=augreg (here equivariant)"),
    ("twin=true", "the checkpoint's run had twin=False (here True)"),
    ("model.channels=[8,8]", "the checkpoint's run had model.channels=[16, 16] (here [8, 8])"),
    ("optimizer=momentum", "the checkpoint's run had optimizer.momentum=0.0 (here 0.9)"),
]


@pytest.mark.parametrize("change,message", fast_first(ACROSS, ids=[c for c, _ in ACROSS]))
def test_force_resume_names_what_differs_and_what_it_can_carry_over(tmp_path, monkeypatch, capsys, change, message):
    """Before: "RuntimeError: Error(s) in loading state_dict"; now the keys that differ from the run that wrote
    the checkpoint, what force_resume carries over and what did not fit, and the run directory untouched."""
    run = tmp_path / "run"
    assert cli(tmp_path, monkeypatch, capsys, *QUICK, f"hydra.run.dir={run}")[0] == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    line = one_line(tmp_path, monkeypatch, capsys, change, f"resume={run}", "force_resume=true")
    assert line.startswith("resume: ") and message in line
    assert "force_resume carries the state over to other training keys" in line
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


# -- the grid sweeper's options ------------------------------------------------------------------------------------
@pytest.mark.slow  # two sweeps in subprocesses (~6 s)
@pytest.mark.parametrize(
    "exclude,message",
    [
        ("[z2cnn]", "hydra.sweeper.exclude: 'z2cnn' is not valid: each entry maps keys to a value or a list"),
        ("[{modee: nominal}]", "hydra.sweeper.exclude: modee is not set by any job of this sweep"),
    ],
)
def test_a_bad_exclude_entry_stops_the_sweep_in_one_line(tmp_path, exclude, message):
    """Before: Hydra's four-line instantiation error (exit 1), or an entry that silently excluded nothing."""
    proc = subprocess.run(
        [EQTRAIN, "-m", *QUICK, "mode=nominal,augreg", "hydra/sweeper=grid", f"hydra.sweeper.exclude={exclude}",
         f"hydra.sweep.dir={tmp_path}/sweep"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr[-2000:]
    assert proc.stderr.startswith(f"eqtrain: error: {message}")
    assert not list(tmp_path.rglob("metrics.json"))  # no job ran
